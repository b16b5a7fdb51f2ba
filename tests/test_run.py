"""End-to-end runs of python -m probe.run and probe.report on real MNIST digits."""

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import probe
from probe import report
from probe import run as probe_run

from . import reference

REPO = Path(__file__).resolve().parent.parent


def run_cli(*argv):
    return probe_run.main([str(arg) for arg in argv])


@pytest.fixture(scope="module")
def finished_run(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "probe.h5"
    code = run_cli(
        "--layers", "conv1,fc,latent", "--checkpoint", checkpoint, "--dataset", "mnist-sample",
        "--limit", "1500", "--batch-size", "256", "--calibration", "700", "--out", out,
    )
    assert code == 0
    return out


def test_run_writes_complete_file(finished_run):
    with h5py.File(finished_run, "r") as handle:
        attrs = dict(handle.attrs)
        assert attrs["complete"]
        assert attrs["format"] == "probe-hdf5/1"
        assert attrs["n_samples"] == 1500
        assert attrs["dataset"] == "mnist-sample"
        assert len(attrs["checkpoint_sha256"]) == 64
        assert list(handle["layers"]) == ["conv1", "fc", "latent"]
        assert handle["labels"].dtype == np.int64
        latent = handle["layers/latent"]
        assert latent["codes"].shape == (1500, 3)
        assert latent["codes"].dtype == np.uint8
        assert latent.attrs["quantizer"] == "argmax"
        assert latent.attrs["alphabet_size"] == 26
        assert handle["layers/conv1/codes"].shape == (1500, 8)
        assert handle["layers/conv1"].attrs["quantizer"] == "quantile:2"
        assert handle["layers/conv1/edges"].shape == (8, 1)
        for name in ("conv1", "fc", "latent"):
            codes = handle[f"layers/{name}/codes"]
            chunk_bytes = np.prod(codes.chunks) * codes.dtype.itemsize
            assert 64 * 1024 <= chunk_bytes <= 1024 * 1024
            assert codes.compression == "gzip"
            assert codes.maxshape[0] is None
    assert not Path(str(finished_run) + ".partial").exists()


@pytest.mark.parametrize("layer", ["conv1", "fc", "latent"])
def test_stored_results_match_reference(finished_run, layer):
    with probe.load(finished_run) as run:
        stored = run.layers[layer]
        codes = stored.codes[()]
        labels = run.labels
        result = stored.result

        expected = reference.whole_npmi(codes, labels)
        label_index = {int(v): i for i, v in enumerate(result.label_values)}
        assert len(result.whole.codes) == len({code for code, _ in expected})
        for row, values in zip(result.whole.codes, result.whole.npmi):
            for label, column in label_index.items():
                assert values[column] == pytest.approx(expected[(tuple(int(v) for v in row), label)], abs=1e-9)
        for (position, symbol, label), value in reference.positional_npmi(codes, labels).items():
            assert result.positional.npmi[position, symbol, label_index[label]] == pytest.approx(value, abs=1e-9)
        assert result.stats["entropy_bits"] == pytest.approx(reference.entropy_bits(map(tuple, codes.tolist())), abs=1e-9)
        assert result.stats["mutual_information_bits"] == pytest.approx(reference.mutual_information_bits(codes, labels), abs=1e-9)


def test_stored_codes_match_direct_analysis(finished_run):
    with probe.load(finished_run) as run:
        stored = run.layers["latent"]
        fresh = probe.analyze(stored.codes[()], run.labels, alphabet_size=26)

        assert np.array_equal(fresh.whole.counts, stored.result.whole.counts)
        assert fresh.stats["shuffled_mutual_information_bits"] == pytest.approx(stored.result.stats["shuffled_mutual_information_bits"])


def test_report_json_summary(finished_run, capsys):
    assert report.main([str(finished_run), "--json"]) == 0

    summary = json.loads(capsys.readouterr().out)

    assert [row["layer"] for row in summary["layers"]] == ["conv1", "fc", "latent"]
    latent = summary["layers"][2]
    assert latent["positions"] == 3
    assert latent["alphabet_size"] == 26
    assert latent["shuffled_mutual_information_bits"] < latent["mutual_information_bits"]


def test_report_tables(finished_run, capsys):
    assert report.main([str(finished_run), "--top", "3"]) == 0

    out = capsys.readouterr().out

    assert "latent: top whole-code hits" in out
    assert "shuffled MI" in out


def test_report_rejects_foreign_hdf5(tmp_path, capsys):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle["x"] = np.arange(3)

    assert report.main([str(path)]) == 2
    assert "not a probe result" in capsys.readouterr().err


def test_report_rejects_truncated_file(finished_run, tmp_path, capsys):
    path = tmp_path / "truncated.h5"
    path.write_bytes(finished_run.read_bytes()[:5000])

    assert report.main([str(path)]) == 2
    assert "corrupt, truncated or not HDF5" in capsys.readouterr().err


def test_unknown_layer_exit_code(checkpoint, tmp_path, capsys):
    code = run_cli("--layers", "conv1,conv7", "--checkpoint", checkpoint, "--dataset", "mnist-sample", "--limit", "50", "--out", tmp_path / "x.h5")

    err = capsys.readouterr().err
    assert code == 2
    assert "unknown layer 'conv7'" in err
    assert "conv2" in err
    assert not (tmp_path / "x.h5").exists()


def test_existing_output_needs_overwrite(finished_run, checkpoint, capsys):
    before = finished_run.read_bytes()

    code = run_cli("--layers", "latent", "--checkpoint", checkpoint, "--dataset", "mnist-sample", "--limit", "50", "--out", finished_run)

    assert code == 2
    assert "--overwrite" in capsys.readouterr().err
    assert finished_run.read_bytes() == before


def test_missing_explicit_checkpoint(tmp_path, capsys):
    code = run_cli("--layers", "latent", "--checkpoint", tmp_path / "none.pt", "--dataset", "mnist-sample", "--out", tmp_path / "x.h5")

    assert code == 2
    assert "not found" in capsys.readouterr().err


def test_list_layers(checkpoint, capsys):
    assert run_cli("--list-layers", "--checkpoint", checkpoint, "--dataset", "mnist-sample") == 0

    out = capsys.readouterr().out
    assert "encoder.conv1" in out
    assert "[2, 8, 14, 14]" in out
    assert "[2, 3, 26]" in out


def test_quantize_and_pool_options(checkpoint, tmp_path):
    out = tmp_path / "q.h5"

    code = run_cli(
        "--layers", "conv1,conv2", "--quantize", "conv1=uniform:3", "--quantize", "conv2=sign", "--pool", "none",
        "--checkpoint", checkpoint, "--dataset", "mnist-sample", "--limit", "300", "--out", out,
    )

    assert code == 0
    with probe.load(out) as run:
        conv1, conv2 = run.layers["conv1"], run.layers["conv2"]
        assert conv1.codes.shape == (300, 8 * 14 * 14)
        assert conv1.alphabet_size == 3
        assert conv1.codes[()].max() <= 2
        assert conv1.attrs["pooling"] == "none"
        assert conv2.codes.shape == (300, 16 * 7 * 7)
        assert conv2.attrs["quantizer"] == "sign"


def test_custom_model_with_dotted_layers(tmp_path, monkeypatch):
    (tmp_path / "tiny_models.py").write_text(
        "import torch\n"
        "from torch import nn\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))

    code = run_cli("--model", "tiny_models:build", "--layers", "1,3", "--dataset", "mnist-sample", "--limit", "200", "--out", "m.h5")

    assert code == 0
    with probe.load(tmp_path / "m.h5") as run:
        assert list(run.layers) == ["1", "3"]
        assert run.layers["1"].codes.shape == (200, 16)
        assert run.metadata["checkpoint"] == ""


def test_nan_layer_is_runtime_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "nan_models.py").write_text(
        "import torch\n"
        "from torch import nn\n"
        "class Broken(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x.flatten(1) / 0 * 0\n"
        "def build():\n"
        "    return nn.Sequential(Broken())\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))

    code = run_cli("--model", "nan_models:build", "--layers", "0", "--quantize", "0=sign", "--dataset", "mnist-sample", "--limit", "50", "--out", "n.h5")

    assert code == 1
    assert "NaN or inf" in capsys.readouterr().err
    assert not (tmp_path / "n.h5").exists()


def test_default_checkpoint_trained_when_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(probe_run, "TrainConfig", functools.partial(probe_run.TrainConfig, steps=20))

    code = run_cli("--layers", "latent", "--dataset", "mnist-sample", "--limit", "100", "--out", "d.h5")

    assert code == 0
    assert (tmp_path / "runs/default/model.pt").is_file()
    with probe.load(tmp_path / "d.h5") as run:
        assert run.metadata["checkpoint"] == "runs/default/model.pt"


def test_killed_run_leaves_no_complete_file(checkpoint, tmp_path):
    out = tmp_path / "killed.h5"
    command = [
        sys.executable, "-m", "probe.run", "--layers", "conv1,latent", "--pool", "none", "--checkpoint", str(checkpoint),
        "--dataset", "mnist-sample", "--batch-size", "20", "--out", str(out),
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})
    partial = Path(str(out) + ".partial")
    deadline = time.monotonic() + 60
    while not partial.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()

    assert partial.exists(), "the run finished or failed before it could be killed"
    assert not out.exists()
    with pytest.raises(probe.StoreError):
        probe.load(partial)
