"""User attributes, python -m probe.npmi, and probe.run with image features and attributes."""

import importlib
import json

import h5py
import numpy as np
import pytest

import probe
from probe import run as probe_run
from probe.observations import ObservationError, make_attributes, read_observations

N = 2_000
npmi_cli = importlib.import_module("probe.npmi")


def write_csv(path, header, rows):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_csv_strings_mapped_and_kept(tmp_path):
    path = write_csv(tmp_path / "obs.csv", "colour,size", ["red,1", "blue,3", "red,3"])

    colour, size = read_observations(path, n_samples=3)

    assert colour.value_names == ["blue", "red"]
    assert colour.encoded.tolist() == [1, 0, 1]
    assert size.values.tolist() == [1, 3]
    assert size.raw.tolist() == [1, 3, 3]


def test_csv_multi_label_column_splits(tmp_path):
    path = write_csv(tmp_path / "obs.csv", "tags", ["round;tall", "", "tall"])

    attributes = {attribute.name: attribute for attribute in read_observations(path)}

    assert sorted(attributes) == ["tags=round", "tags=tall"]
    assert attributes["tags=round"].raw.tolist() == [1, 0, 0]
    assert attributes["tags=tall"].raw.tolist() == [1, 0, 1]


def test_row_count_mismatch_rejected(tmp_path):
    path = write_csv(tmp_path / "obs.csv", "a", ["1", "2"])

    with pytest.raises(ObservationError, match="2 rows but the dataset has 3 samples"):
        read_observations(path, n_samples=3)


def test_npy_columns_named(tmp_path):
    np.save(tmp_path / "obs.npy", np.array([[0, 5], [1, 5], [1, 6]]))

    attributes = read_observations(tmp_path / "obs.npy", n_samples=3)

    assert [attribute.name for attribute in attributes] == ["column_0", "column_1"]


def test_non_integer_floats_rejected():
    with pytest.raises(ObservationError, match="non-integer value 0.5"):
        make_attributes({"x": np.array([0.0, 0.5])})


@pytest.fixture(scope="module")
def planted_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 4, size=N)
    attribute = rng.integers(0, 2, size=N)
    codes = rng.integers(0, 8, size=(N, 4))
    codes[:, 1] = np.where(attribute == 1, 5, rng.choice([0, 1, 2, 3, 4, 6, 7], size=N))
    np.save(folder / "codes.npy", codes)
    with h5py.File(folder / "labels.h5", "w") as handle:
        handle.create_dataset("game/labels", data=labels)
    write_csv(folder / "obs.csv", "flag,shade", [f"{a},{'dark' if a else 'light'}" for a in attribute])
    return folder, codes, labels, attribute


def test_npmi_cli_writes_run_layout(planted_files):
    folder, codes, labels, attribute = planted_files
    out = folder / "result.h5"

    code = npmi_cli.main(
        ["--codes", str(folder / "codes.npy"), "--labels", f"{folder / 'labels.h5'}:game/labels", "--observations", str(folder / "obs.csv"),
         "--ngrams", "2", "--permutations", "0", "--holdout", "0", "--out", str(out)]
    )

    assert code == 0
    with h5py.File(out, "r") as handle:
        assert handle.attrs["complete"]
        assert list(handle["layers"]) == ["codes"]
        assert np.array_equal(handle["layers/codes/codes"][()], codes)
        assert set(handle["layers/codes/npmi/ngram"]) == {"1", "2"}
        assert set(handle["layers/codes/npmi/positional_ngram/2"]) == {"starts", "codes", "counts", "npmi"}
        flag = handle["layers/codes/observations/flag"]
        assert flag["npmi/positional/npmi"][1, 5, 1] == 1.0
        assert [name.decode() for name in handle["observations/shade/value_names"][()]] == ["dark", "light"]
    with probe.load(out) as run:
        result = run.layers["codes"].result
        assert result.observations["shade"].value_names == ["dark", "light"]
        assert sorted(result.ngrams) == [1, 2]
        assert np.array_equal(run.observations["flag"].raw, attribute)


def test_npmi_cli_json_names_hits(planted_files, capsys):
    folder, *_ = planted_files

    code = npmi_cli.main(
        ["--codes", str(folder / "codes.npy"), "--labels", f"{folder / 'labels.h5'}:game/labels", "--observations", str(folder / "obs.csv"),
         "--permutations", "0", "--holdout", "0", "--json"]
    )

    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    shade = [row for row in summary["value_hits"] if row["observation"] == "shade"]
    assert shade[0]["value_name"] == "dark"
    assert shade[0]["description"] == "symbol 5 at position 1"
    assert shade[0]["npmi"] == 1.0


def test_npmi_cli_row_mismatch_exits_2(planted_files, tmp_path, capsys):
    folder, *_ = planted_files
    np.save(tmp_path / "short.npy", np.zeros(10, dtype=np.int64))

    code = npmi_cli.main(["--codes", str(folder / "codes.npy"), "--labels", str(tmp_path / "short.npy")])

    assert code == 2
    assert "10" in capsys.readouterr().err


def test_npmi_cli_missing_dataset_exits_2(planted_files, capsys):
    folder, *_ = planted_files

    code = npmi_cli.main(["--codes", str(folder / "codes.npy"), "--labels", f"{folder / 'labels.h5'}:nope"])

    assert code == 2
    assert "no dataset 'nope'" in capsys.readouterr().err


def test_npmi_cli_bad_ngrams_exits_2(planted_files, capsys):
    folder, *_ = planted_files

    code = npmi_cli.main(["--codes", str(folder / "codes.npy"), "--labels", f"{folder / 'labels.h5'}:game/labels", "--ngrams", "1,x"])

    assert code == 2
    assert "--ngrams" in capsys.readouterr().err


def test_run_with_features_and_attributes(checkpoint, tmp_path, capsys):
    limit = 600
    rows = [f"{'even' if index % 2 == 0 else 'odd'}" for index in range(limit)]
    observations = write_csv(tmp_path / "obs.csv", "parity", rows)
    out = tmp_path / "probe.h5"

    code = probe_run.main(
        ["--layers", "latent", "--checkpoint", str(checkpoint), "--dataset", "mnist-sample", "--limit", str(limit),
         "--features", "loops,stroke_vertical", "--observations", str(observations), "--ngrams", "2",
         "--permutations", "0", "--holdout", "0", "--out", str(out)]
    )

    assert code == 0
    printed = capsys.readouterr().out
    assert "latent: observations" in printed
    with probe.load(out) as run:
        result = run.layers["latent"].result
        assert set(result.observations) == {"loops", "stroke_vertical", "parity"}
        assert result.observations["loops"].positional.counts.sum() == limit * 3
        assert sorted(result.ngrams) == [1, 2]
        assert run.observations["parity"].value_names == ["even", "odd"]
        assert run.metadata["ngram_lengths"] == [1, 2]


def test_run_observation_row_mismatch_exits_2(checkpoint, tmp_path, capsys):
    observations = write_csv(tmp_path / "obs.csv", "parity", ["0"] * 10)

    code = probe_run.main(
        ["--layers", "latent", "--checkpoint", str(checkpoint), "--dataset", "mnist-sample", "--limit", "50",
         "--observations", str(observations), "--out", str(tmp_path / "probe.h5")]
    )

    assert code == 2
    assert "10 rows but the dataset has 50 samples" in capsys.readouterr().err
