"""Tests for training, the temperature schedule, checkpoints and the training command line."""

import math

import pytest
import torch

from models import CategoricalVAE, TrainConfig
from models.checkpoint import CheckpointError, load_checkpoint, load_state_into, save_checkpoint
from models.train import DeviceError, TrainConfigError, main, resolve_device, temperature_at, train


def tiny_config(**overrides) -> TrainConfig:
    settings = {"dataset": "mnist-sample", "steps": 12, "batch_size": 50, "out": None, "device": "cpu"}
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained for a few steps, with its summary and saved checkpoint."""
    out = tmp_path_factory.mktemp("run")
    model, summary = train(tiny_config(out=str(out)), progress=False)
    return model, summary, out / "model.pt"


def test_temperature_monotone_to_floor():
    total = 1000
    values = [temperature_at(step, total, 1.0, 0.5) for step in range(total + 1)]

    assert values[0] == 1.0
    assert all(later <= earlier for earlier, later in zip(values, values[1:]))
    assert values[total // 2] == pytest.approx(0.5)
    assert values[-1] == 0.5
    assert min(values) == 0.5


def test_temperature_constant_when_start_is_floor():
    assert {temperature_at(step, 10, 0.7, 0.7) for step in range(11)} == {0.7}


def test_resolve_device_auto_and_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"

    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_resolve_device_cuda_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    with pytest.raises(DeviceError, match="--device cuda requested but no CUDA GPU is available; use --device auto or cpu"):
        resolve_device("cuda")


def test_resolve_device_invalid_name():
    with pytest.raises(DeviceError, match="'tpu'.*auto, cpu, cuda, cuda:N"):
        resolve_device("tpu")
    assert issubclass(DeviceError, ValueError)


def test_train_summary_and_eval_mode(trained):
    model, summary, path = trained

    assert not model.training
    assert summary["steps"] == 12
    assert summary["dataset"] == "mnist-sample"
    assert summary["train_images"] == 9_000
    assert summary["heldout_images"] == 1_000
    assert math.isfinite(summary["heldout_bce"])
    assert summary["temperature_final"] < 1.0
    assert summary["checkpoint"] == str(path)
    assert path.is_file()


def test_train_same_seed_identical_weights():
    first, _ = train(tiny_config(steps=6), progress=False)
    second, _ = train(tiny_config(steps=6), progress=False)
    other_seed, _ = train(tiny_config(steps=6, seed=1), progress=False)

    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state.keys() == second_state.keys()
    for name in first_state:
        assert torch.equal(first_state[name], second_state[name]), name
    assert not torch.equal(first_state["encoder.logits.weight"], other_seed.state_dict()["encoder.logits.weight"])


def test_train_reduces_loss():
    _, short = train(tiny_config(steps=2), progress=False)
    _, longer = train(tiny_config(steps=60), progress=False)

    assert longer["heldout_bce"] < short["heldout_bce"] - 50


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"steps": 0}, "steps must be a positive integer"),
        ({"batch_size": -1}, "batch_size must be a positive integer"),
        ({"latents": 0}, "latents must be a positive integer"),
        ({"categories": 1}, "categories must be an integer >= 2"),
        ({"lr": 0.0}, "lr must be"),
        ({"temperature_floor": 2.0}, "temperature_floor <= temperature_start"),
        ({"batch_size": 20_000}, "batch size 20000 exceeds the 9000 training images"),
    ],
)
def test_train_rejects_bad_config(overrides, pattern):
    with pytest.raises(TrainConfigError, match=pattern):
        train(tiny_config(**overrides), progress=False)


def test_checkpoint_round_trip(trained):
    model, summary, path = trained
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))

    loaded, config = load_checkpoint(path)

    assert not loaded.training
    assert (config["latents"], config["categories"], config["architecture"]) == (3, 26, "conv3-fc128")
    assert config["steps"] == 12
    assert config["seed"] == 0
    assert config["dataset"] == "mnist-sample"
    assert config["heldout_bce"] == summary["heldout_bce"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert torch.equal(loaded(x).reconstruction_logits, model(x).reconstruction_logits)


def test_load_state_into_shape_mismatch(trained):
    _, _, path = trained
    other = CategoricalVAE(latents=4, categories=10)

    with pytest.raises(CheckpointError) as error:
        load_state_into(other, path)

    message = str(error.value)
    assert "checkpoint has 3 x 26 latents (logits weight [78, 128])" in message
    assert "the model has 4 x 10 (logits weight [40, 128])" in message


def test_load_state_into_same_shape(trained):
    model, _, path = trained
    fresh = CategoricalVAE()

    config = load_state_into(fresh, path)

    assert config["latents"] == 3
    assert torch.equal(fresh.encoder.conv1.weight, model.encoder.conv1.weight)


def test_load_checkpoint_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "absent.pt")


def test_load_checkpoint_truncated(trained, tmp_path):
    _, _, path = trained
    truncated = tmp_path / "truncated.pt"
    content = path.read_bytes()
    truncated.write_bytes(content[: len(content) // 2])

    with pytest.raises(CheckpointError, match="not a valid checkpoint.*Retrain or pass the right file"):
        load_checkpoint(truncated)


def test_load_checkpoint_not_a_checkpoint(tmp_path):
    text_file = tmp_path / "notes.pt"
    text_file.write_text("not a checkpoint\n")
    tensor_file = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor_file)

    with pytest.raises(CheckpointError, match="not a valid checkpoint"):
        load_checkpoint(text_file)
    with pytest.raises(CheckpointError, match="not a valid checkpoint: no state_dict"):
        load_checkpoint(tensor_file)


def test_load_checkpoint_other_architecture(tmp_path):
    path = save_checkpoint(CategoricalVAE(), tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"]["architecture"] = "resnet18"
    torch.save(payload, path)

    with pytest.raises(CheckpointError, match="architecture 'resnet18'.*'conv3-fc128'"):
        load_checkpoint(path)


def test_save_checkpoint_creates_parents(tmp_path):
    path = save_checkpoint(CategoricalVAE(latents=2, categories=5), tmp_path / "a" / "b" / "model.pt", seed=3)

    model, config = load_checkpoint(path)

    assert (model.latents, model.categories, config["seed"]) == (2, 5, 3)
    assert [entry.name for entry in path.parent.iterdir()] == ["model.pt"]


def test_save_checkpoint_rejects_non_plain_info(tmp_path):
    with pytest.raises(TypeError, match="'out' has type PosixPath"):
        save_checkpoint(CategoricalVAE(), tmp_path / "model.pt", out=tmp_path)


def test_save_checkpoint_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    save_checkpoint(CategoricalVAE(latents=2, categories=5), path)
    original = path.read_bytes()

    def failing_save(obj, file, *args, **kwargs):
        file.write(b"partial checkpoint bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(CategoricalVAE(), path)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(CategoricalVAE(), tmp_path / "new.pt")

    assert path.read_bytes() == original
    assert not (tmp_path / "new.pt").exists()
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["model.pt"]


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["--steps", "0"], "--steps: expected a positive integer, got 0"),
        (["--steps", "ten"], "--steps: expected a positive integer, got 'ten'"),
        (["--batch-size", "-5"], "--batch-size: expected a positive integer"),
        (["--latents", "0"], "--latents: expected a positive integer"),
        (["--categories", "1"], "--categories: expected an integer >= 2, got 1"),
        (["--lr", "nan"], "--lr: expected a positive number"),
        (["--split", "dev"], "--split: invalid choice"),
        (["--unknown"], "unrecognized arguments: --unknown"),
        (["--dataset", "cifar10"], "invalid dataset 'cifar10'"),
        (["--dataset", "idx:/nonexistent/folder"], "folder not found"),
        (["--dataset", "mnist-sample", "--device", "tpu"], "invalid device 'tpu'"),
    ],
)
def test_cli_usage_errors_exit_2(argv, pattern, tmp_path, capsys):
    code = main([*argv, "--out", str(tmp_path)])

    captured = capsys.readouterr()
    assert code == 2
    assert pattern in captured.err
    assert "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert not (tmp_path / "model.pt").exists()


def test_cli_cuda_without_gpu_exit_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    code = main(["--dataset", "mnist-sample", "--device", "cuda", "--out", str(tmp_path)])

    assert code == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err


def test_cli_trains_and_saves(tmp_path, capsys):
    code = main(["--dataset", "mnist-sample", "--steps", "5", "--batch-size", "20", "--device", "cpu", "--out", str(tmp_path)])

    output = capsys.readouterr().out
    assert code == 0
    assert "held-out bce" in output
    _, config = load_checkpoint(tmp_path / "model.pt")
    assert (config["steps"], config["batch_size"]) == (5, 20)


def test_cli_fallback_notice(tmp_path, capsys):
    code = main(["--data-root", str(tmp_path / "nothing"), "--steps", "2", "--device", "cpu", "--out", str(tmp_path)])

    captured = capsys.readouterr()
    assert code == 0
    assert "WARNING: MNIST files not found under" in captured.err
    assert "using the bundled sample" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
