"""A table of bad inputs: each gets its message and exit code, never a traceback."""

import importlib

import numpy as np
import pytest

import probe
from models import train as train_module
from probe import report
from probe import run as probe_run

npmi_cli = importlib.import_module("probe.npmi")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Small code and label files, good and bad, for probe.npmi."""
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    files = {
        "codes": rng.integers(0, 4, size=(60, 3)),
        "labels": rng.integers(0, 3, size=60),
        "short_labels": rng.integers(0, 3, size=59),
        "negative_labels": np.where(rng.random(60) < 0.5, -1, 2),
        "float_labels": rng.random(60) * 3,
        "constant_labels": np.zeros(60, dtype=np.int64),
        "nan_codes": np.where(rng.random((60, 3)) < 0.1, np.nan, 1.0),
        "negative_codes": -rng.integers(1, 4, size=(60, 3)),
        "no_columns": np.zeros((60, 0), dtype=np.int64),
        "sparse_codes": np.array([[0, 10**9]] * 30 + [[5, 3]] * 30),
        "huge_labels": np.array([0, 2**64 - 1] * 30, dtype=np.uint64),
        "cube": np.zeros((60, 3, 2), dtype=np.int64),
    }
    paths = {}
    for name, array in files.items():
        paths[name] = folder / f"{name}.npy"
        np.save(paths[name], array)
    paths["empty_npy"] = folder / "empty.npy"
    paths["empty_npy"].write_bytes(b"")
    paths["text_labels"] = folder / "text.csv"
    paths["text_labels"].write_text("label\n" + "\n".join(["cat", "dog"] * 30) + "\n")
    paths["folder"] = folder
    return paths


NPMI_CASES = [
    # (case, codes key, labels key, expected exit code, message fragment)
    ("labels shorter than codes", "codes", "short_labels", 2, "60 rows but --labels has 59"),
    ("non-integer float labels", "codes", "float_labels", 2, "must contain integers"),
    ("string labels in csv", "codes", "text_labels", 2, "cannot read"),
    ("codes with NaN", "nan_codes", "labels", 2, "must contain integers"),
    ("negative codes", "negative_codes", "labels", 2, "negative symbol"),
    ("codes without columns", "no_columns", "labels", 2, "is empty"),
    ("empty .npy file", "empty_npy", "labels", 2, "cannot read"),
    ("three-dimensional codes", "cube", "labels", 2, "must be (n, positions)"),
    ("sparse ids as codes", "sparse_codes", "labels", 2, "renumber them"),
    ("labels past int64", "codes", "huge_labels", 2, "does not fit in int64"),
    ("folder as codes", "folder", "labels", 2, "is a folder"),
]


@pytest.mark.parametrize(("case", "codes", "labels", "exit_code", "message"), NPMI_CASES, ids=[row[0] for row in NPMI_CASES])
def test_npmi_bad_input(inputs, capsys, case, codes, labels, exit_code, message):
    code = npmi_cli.main(["--codes", str(inputs[codes]), "--labels", str(inputs[labels]), "--permutations", "0"])

    err = capsys.readouterr().err
    assert code == exit_code
    assert message in err
    assert "Traceback" not in err


def test_npmi_negative_labels_work(inputs, capsys):
    code = npmi_cli.main(["--codes", str(inputs["codes"]), "--labels", str(inputs["negative_labels"]), "--permutations", "0", "--json"])

    assert code == 0
    assert '"layer": "codes"' in capsys.readouterr().out


def test_npmi_constant_labels_give_zero_mi(inputs):
    codes = np.load(inputs["codes"])

    result = probe.analyze(codes, np.zeros(len(codes), dtype=np.int64), permutations=0, holdout=0)

    assert result.stats["mutual_information_bits"] == 0.0
    assert np.all(np.isfinite(result.whole.npmi))


def run_args(checkpoint, tmp_path, *extra):
    return ["--checkpoint", str(checkpoint), "--dataset", "mnist-sample", "--limit", "60", "--permutations", "0", "--out", str(tmp_path / "r.h5"), *extra]


RUN_CASES = [
    # (case, extra arguments, expected exit code, message fragment)
    ("empty layer list", ["--layers", ""], 2, "invalid --layers"),
    ("comma only", ["--layers", ","], 2, "invalid --layers"),
    ("zero limit", ["--layers", "latent", "--limit", "0"], 2, "invalid --limit 0"),
    ("zero batch size", ["--layers", "latent", "--batch-size", "0"], 2, "invalid --batch-size 0"),
    ("argmax on a conv map", ["--layers", "conv1", "--quantize", "conv1=argmax"], 2, "--quantize conv1=argmax"),
    ("layer quantised twice", ["--layers", "conv1", "--quantize", "conv1=sign", "--quantize", "conv1=quantile:3"], 2, "names layer 'conv1' twice"),
    ("threshold above one", ["--layers", "latent", "--threshold", "2"], 2, "invalid --threshold"),
    ("negative permutations", ["--layers", "latent", "--permutations", "-1"], 2, "--permutations"),
    ("holdout of one", ["--layers", "latent", "--holdout", "1.5"], 2, "--holdout"),
    ("cuda without a GPU", ["--layers", "latent", "--device", "cuda"], 2, "no CUDA GPU"),
    ("unknown device", ["--layers", "latent", "--device", "tpu"], 2, "invalid device 'tpu'"),
    ("unknown feature", ["--layers", "latent", "--features", "loopz"], 2, "loopz"),
]


@pytest.mark.parametrize(("case", "extra", "exit_code", "message"), RUN_CASES, ids=[row[0] for row in RUN_CASES])
def test_run_bad_input(checkpoint, tmp_path, capsys, case, extra, exit_code, message):
    code = probe_run.main(run_args(checkpoint, tmp_path, *extra))

    err = capsys.readouterr().err
    assert code == exit_code
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "r.h5").exists()


def test_run_single_sample(checkpoint, tmp_path):
    code = probe_run.main(run_args(checkpoint, tmp_path, "--layers", "conv1,latent", "--limit", "1", "--holdout", "0"))

    assert code == 0
    with probe.load(tmp_path / "r.h5") as run:
        latent = run.layers["latent"].result
        assert latent.whole.npmi.max() == 1.0
        assert run.layers["conv1"].codes.shape == (1, 8)


def test_run_text_file_as_checkpoint(tmp_path, capsys):
    fake = tmp_path / "fake.pt"
    fake.write_text("just text\n")

    code = probe_run.main(["--checkpoint", str(fake), "--dataset", "mnist-sample", "--layers", "latent", "--out", str(tmp_path / "r.h5")])

    err = capsys.readouterr().err
    assert code == 2
    assert "not a valid checkpoint" in err


def test_run_truncated_checkpoint(checkpoint, tmp_path, capsys):
    truncated = tmp_path / "half.pt"
    data = checkpoint.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])

    code = probe_run.main(["--checkpoint", str(truncated), "--dataset", "mnist-sample", "--layers", "latent", "--out", str(tmp_path / "r.h5")])

    assert code == 2
    assert "not a valid checkpoint" in capsys.readouterr().err


def test_run_output_is_a_folder(checkpoint, tmp_path, capsys):
    code = probe_run.main(run_args(checkpoint, tmp_path, "--layers", "latent", "--out", str(tmp_path)))

    assert code == 2
    assert "is a folder" in capsys.readouterr().err


def test_run_output_under_proc(checkpoint, tmp_path, capsys):
    code = probe_run.main(run_args(checkpoint, tmp_path, "--layers", "latent", "--out", "/proc/probe-test/r.h5"))

    err = capsys.readouterr().err
    assert code == 2
    assert "/proc/probe-test" in err


def test_observation_named_label_rejected(checkpoint, tmp_path, capsys):
    table = tmp_path / "obs.csv"
    table.write_text("label\n" + "\n".join(str(i % 2) for i in range(60)) + "\n")

    code = probe_run.main(run_args(checkpoint, tmp_path, "--layers", "latent", "--observations", str(table)))

    assert code == 2
    assert "reserved for the class labels" in capsys.readouterr().err


def test_observation_duplicate_columns_rejected(checkpoint, tmp_path, capsys):
    table = tmp_path / "obs.csv"
    table.write_text("a,a\n" + "\n".join(f"{i % 2},{i % 3}" for i in range(60)) + "\n")

    code = probe_run.main(run_args(checkpoint, tmp_path, "--layers", "latent", "--observations", str(table)))

    assert code == 2
    assert "appears more than once" in capsys.readouterr().err


def test_report_rejects_negative_top(tmp_path, capsys):
    assert report.main([str(tmp_path / "missing.h5"), "--top", "-3"]) == 2
    assert "invalid --top -3" in capsys.readouterr().err


def test_train_rejects_file_as_out(tmp_path, capsys):
    target = tmp_path / "afile"
    target.write_text("x")

    code = train_module.main(["--dataset", "mnist-sample", "--steps", "2", "--out", str(target)])

    assert code == 2
    assert "is a file" in capsys.readouterr().err


def test_train_rejects_huge_latent(capsys):
    code = train_module.main(["--dataset", "mnist-sample", "--steps", "2", "--categories", "100000000"])

    assert code == 2
    assert "choose fewer latents or categories" in capsys.readouterr().err
