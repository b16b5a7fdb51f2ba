"""Crash safety, resume, locking and numbers at the limits, on real runs and files."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import probe
from probe import run as probe_run
from probe.counting import JointCounter
from probe.stats import npmi
from probe.store import OutputLock, ProbeWriter, StoreError

from . import reference

REPO = Path(__file__).resolve().parent.parent


def base_args(checkpoint, out, *extra):
    return [
        "--layers", "conv2,latent", "--checkpoint", str(checkpoint), "--dataset", "mnist-sample", "--limit", "600",
        "--batch-size", "50", "--calibration", "300", "--flush-every", "100", "--out", str(out), *extra,
    ]


def result_arrays(path):
    """Every dataset of a result file except timing attributes, as numpy arrays."""
    arrays = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
        for name in handle["layers"]:
            arrays[f"{name}/stats"] = dict(handle[f"layers/{name}/stats"].attrs)
    return arrays


def assert_same_results(first, second):
    left, right = result_arrays(first), result_arrays(second)
    assert left.keys() == right.keys()
    for key in left:
        if isinstance(left[key], dict):
            assert left[key] == right[key], key
        else:
            assert np.array_equal(left[key], right[key]), key


@pytest.fixture(scope="module")
def clean_run(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "clean.h5"
    assert probe_run.main(base_args(checkpoint, out)) == 0
    return out


def test_interrupted_run_resumes_to_same_result(checkpoint, clean_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "resumed.h5"
    original_flush = ProbeWriter.flush
    calls = {"count": 0}

    def flush_then_interrupt(self):
        original_flush(self)
        calls["count"] += 1
        if calls["count"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(ProbeWriter, "flush", flush_then_interrupt)
    assert probe_run.main(base_args(checkpoint, out)) == 130
    message = capsys.readouterr().err
    # Flushes come after the first batch (50 samples), then every 100: 50, 150, 250.
    assert "250 of 600 samples are saved" in message
    assert "--resume" in message
    assert not out.exists()

    monkeypatch.setattr(ProbeWriter, "flush", original_flush)
    assert probe_run.main(base_args(checkpoint, out, "--resume")) == 0

    assert "Resuming from" in capsys.readouterr().out
    assert_same_results(clean_run, out)


def test_resume_rejects_other_options(checkpoint, tmp_path, monkeypatch, capsys):
    out = tmp_path / "other.h5"
    monkeypatch.setattr(ProbeWriter, "commit", lambda self: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert probe_run.main(base_args(checkpoint, out)) == 130
    monkeypatch.undo()

    code = probe_run.main(base_args(checkpoint, out, "--resume", "--seed", "5"))

    assert code == 2
    assert "seed" in capsys.readouterr().err
    assert Path(str(out) + ".partial").exists()


def test_sigkill_then_resume_equals_clean_run(checkpoint, clean_run, tmp_path):
    for delay in (0.5, 1.5, 3.0):
        out = tmp_path / f"killed-{delay}.h5"
        args = base_args(checkpoint, out, "--batch-size", "10", "--flush-every", "40")
        process = subprocess.Popen([sys.executable, "-m", "probe.run", *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        partial = Path(str(out) + ".partial")
        deadline = time.monotonic() + 120
        while not partial.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if out.exists():
            continue  # finished before the kill; the file must then be complete
        assert probe_run.main([*args, "--resume"]) == 0, f"resume after a kill at {delay} s failed"
        # Batch size and flush interval differ from the clean run, so compare what they determine alike.
        with probe.load(out) as resumed, probe.load(clean_run) as clean:
            for name in ("conv2", "latent"):
                assert np.array_equal(resumed.layers[name].codes[()], clean.layers[name].codes[()])
                assert np.array_equal(resumed.layers[name].result.whole.counts, clean.layers[name].result.whole.counts)
    for path in tmp_path.glob("killed-*.h5"):
        with probe.load(path) as finished:
            assert finished.metadata["complete"]


def test_sigkill_keeps_previous_complete_file(checkpoint, clean_run, tmp_path):
    out = tmp_path / "previous.h5"
    out.write_bytes(clean_run.read_bytes())
    before = out.read_bytes()
    args = base_args(checkpoint, out, "--overwrite", "--batch-size", "10")
    process = subprocess.Popen([sys.executable, "-m", "probe.run", *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = Path(str(out) + ".partial")
    deadline = time.monotonic() + 120
    while not partial.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()

    assert partial.exists()
    assert out.read_bytes() == before
    with probe.load(out) as previous:
        assert previous.metadata["complete"]


def test_sigint_prints_one_line(checkpoint, tmp_path):
    out = tmp_path / "sigint.h5"
    args = base_args(checkpoint, out, "--batch-size", "10", "--flush-every", "20")
    process = subprocess.Popen([sys.executable, "-m", "probe.run", *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    partial = Path(str(out) + ".partial")
    deadline = time.monotonic() + 120
    while not partial.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)

    assert process.returncode == 130
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("Interrupted:")
    assert "--resume" in lines[0]
    assert not out.exists()


def test_second_writer_fails_while_first_holds_lock(tmp_path):
    out = tmp_path / "locked.h5"
    first = ProbeWriter(out)
    try:
        with pytest.raises(StoreError, match="another run is writing"):
            ProbeWriter(out)
    finally:
        first.close()
    second = ProbeWriter(out)
    second.close()
    assert not OutputLock(out).lock_path.exists()


def test_concurrent_runs_one_wins(checkpoint, tmp_path):
    out = tmp_path / "race.h5"
    args = [sys.executable, "-m", "probe.run", *base_args(checkpoint, out, "--batch-size", "20")]
    processes = [subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(process.wait(timeout=300), process.stderr.read()) for process in processes]

    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "another run is writing" in loser or "already exists" in loser
    with probe.load(out) as finished:
        assert finished.metadata["complete"]
        assert finished.layers["latent"].codes.shape == (600, 3)


def test_paths_with_spaces_and_non_ascii(checkpoint, tmp_path):
    folder = tmp_path / "résultats d'essai ü"
    copy = folder / "mödel copy.pt"
    folder.mkdir()
    copy.write_bytes(Path(checkpoint).read_bytes())
    out = folder / "sortie probe ø.h5"

    code = probe_run.main(["--layers", "latent", "--checkpoint", str(copy), "--dataset", "mnist-sample", "--limit", "100", "--out", str(out)])

    assert code == 0
    with probe.load(out) as finished:
        assert finished.metadata["checkpoint"] == str(copy)


def test_counts_past_int32_stay_exact():
    codes = torch.tensor([[0, 1], [0, 1], [1, 0], [1, 1]])
    labels = torch.tensor([0, 0, 1, 1])
    counter = JointCounter(2, 2, 2)
    counter.update(codes, labels)
    small = npmi(counter.whole()[1][0])

    for _ in range(33):
        counter.merge(counter)

    rows, joint = counter.whole()
    assert joint.dtype == torch.int64
    assert int(joint.sum()) == 4 * 2**33
    assert counter.n_samples == 4 * 2**33
    assert torch.allclose(npmi(joint[0]), small, atol=1e-12)


def test_npmi_with_huge_counts_in_range():
    joint = torch.tensor([[2**40, 1], [3, 2**31 + 7]], dtype=torch.int64)

    values = npmi(joint)

    n = float(joint.sum())
    p_x = joint.sum(dim=1).double() / n
    p_y = joint.sum(dim=0).double() / n
    for x in range(2):
        for y in range(2):
            expected = reference.npmi_value(float(joint[x, y]) / n, float(p_x[x]), float(p_y[y]))
            assert values[x, y] == pytest.approx(expected, abs=1e-9)
    assert values.min() >= -1.0
    assert values.max() <= 1.0


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=4).flatmap(
        lambda positions: st.tuples(
            st.lists(st.lists(st.integers(0, 5), min_size=positions, max_size=positions), min_size=1, max_size=40),
            st.lists(st.sampled_from([-3, 0, 2, 9, 1000]), min_size=40, max_size=40),
        )
    )
)
def test_analyze_matches_reference_on_random_input(data):
    rows, label_pool = data
    codes = np.array(rows, dtype=np.int64)
    labels = np.array(label_pool[: len(rows)], dtype=np.int64)

    result = probe.analyze(codes, labels)

    expected = reference.whole_npmi(codes, labels)
    columns = {int(v): i for i, v in enumerate(result.label_values)}
    for row, values in zip(result.whole.codes, result.whole.npmi):
        for label, column in columns.items():
            assert values[column] == pytest.approx(expected[(tuple(int(v) for v in row), label)], abs=1e-9)
    assert np.all((result.whole.npmi >= -1) & (result.whole.npmi <= 1))
    assert np.all((result.positional.npmi >= -1) & (result.positional.npmi <= 1))
    assert result.stats["mutual_information_bits"] == pytest.approx(reference.mutual_information_bits(codes, labels), abs=1e-9)
