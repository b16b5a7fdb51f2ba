"""NPMI, entropy, MI and the tensor counter against the slow reference implementation."""

import numpy as np
import pytest
import torch

import probe
from probe import counting
from probe.counting import JointCounter, pack_rows, unpack_rows
from probe.stats import entropy_bits, mutual_information_bits, npmi

from . import reference


def random_codes(seed, n, positions, alphabet, labels=(0, 1, 2)):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, alphabet, size=(n, positions))
    # A few repeated rows so whole-code counts exceed one.
    codes[: n // 4] = codes[0]
    return codes, rng.choice(np.asarray(labels), size=n)


def assert_matches_reference(result, codes, labels):
    expected = reference.whole_npmi(codes, labels)
    label_index = {int(v): i for i, v in enumerate(result.label_values)}
    got = {}
    for row, values in zip(result.whole.codes, result.whole.npmi):
        for label, column in label_index.items():
            got[(tuple(int(v) for v in row), label)] = values[column]
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key

    positional = reference.positional_npmi(codes, labels)
    for (position, symbol, label), value in positional.items():
        assert result.positional.npmi[position, symbol, label_index[label]] == pytest.approx(value, abs=1e-9)
    assert result.stats["entropy_bits"] == pytest.approx(reference.entropy_bits(map(tuple, codes.tolist())), abs=1e-9)
    assert result.stats["mutual_information_bits"] == pytest.approx(reference.mutual_information_bits(codes, labels), abs=1e-9)


def test_npmi_never_together_is_minus_one():
    joint = torch.tensor([[5, 0], [0, 5]])

    values = npmi(joint)

    assert values[0, 1] == -1.0
    assert values[1, 0] == -1.0


def test_npmi_always_together_is_one():
    joint = torch.tensor([[5, 0], [0, 5]])

    values = npmi(joint)

    assert values[0, 0] == 1.0
    assert values[1, 1] == 1.0


def test_npmi_single_code_single_label_is_one():
    values = npmi(torch.tensor([[7]]))

    assert values.item() == 1.0


def test_npmi_independent_is_zero():
    values = npmi(torch.tensor([[10, 30], [20, 60]]))

    assert torch.allclose(values, torch.zeros(2, 2, dtype=torch.float64), atol=1e-12)


def test_npmi_rejects_float_counts():
    with pytest.raises(TypeError, match="integers"):
        npmi(torch.tensor([[1.0, 2.0]]))


def test_npmi_stays_in_range_for_rare_pairs():
    rng = np.random.default_rng(3)
    joint = rng.integers(0, 3, size=(200, 7))

    values = npmi(joint)

    assert torch.isfinite(values).all()
    assert values.min() >= -1.0
    assert values.max() <= 1.0


def test_entropy_and_mi_match_reference():
    codes, labels = random_codes(1, 500, 2, 4)
    rows = [tuple(r) for r in codes.tolist()]
    table = {}
    for row, label in zip(rows, labels.tolist()):
        table.setdefault(row, {}).setdefault(label, 0)
        table[row][label] += 1
    keys = sorted(table)
    joint = np.array([[table[k].get(label, 0) for label in (0, 1, 2)] for k in keys])

    assert entropy_bits(joint.sum(axis=1)) == pytest.approx(reference.entropy_bits(rows), abs=1e-12)
    assert mutual_information_bits(joint) == pytest.approx(reference.mutual_information_bits(codes, labels), abs=1e-12)


@pytest.mark.parametrize(
    ("positions", "alphabet", "strategy"),
    [(3, 26, "dense"), (5, 200, "keys"), (20, 26, "rows")],
)
def test_analyze_matches_reference(positions, alphabet, strategy):
    codes, labels = random_codes(positions, 1200, positions, alphabet, labels=(3, 7, 1000))

    result = probe.analyze(codes, labels, alphabet_size=alphabet, batch_size=250)

    assert JointCounter(positions, alphabet, 3, columns=2).strategy == strategy
    assert list(result.label_values) == [3, 7, 1000]
    assert_matches_reference(result, codes, labels)


def test_twenty_positions_exceed_one_word():
    assert 26**20 > 2**63
    codes = np.random.default_rng(0).integers(0, 26, size=(50, 20))

    words = pack_rows(torch.from_numpy(codes), 26)

    assert words.shape[1] == 2
    assert torch.equal(unpack_rows(words, 20, 26), torch.from_numpy(codes))


def test_sparse_flush_keeps_counts(monkeypatch):
    monkeypatch.setattr(counting, "SPARSE_FLUSH_KEYS", 16)
    codes, labels = random_codes(5, 900, 5, 200)

    result = probe.analyze(codes, labels, alphabet_size=200, batch_size=37)

    assert_matches_reference(result, codes, labels)


@pytest.mark.parametrize(("positions", "alphabet"), [(3, 26), (5, 200), (20, 26)])
def test_merged_counters_equal_one_counter(positions, alphabet):
    codes, labels = random_codes(9, 600, positions, alphabet)
    codes_t, labels_t = torch.from_numpy(codes), torch.from_numpy(labels)
    whole = JointCounter(positions, alphabet, 3)
    whole.update(codes_t, labels_t)
    first, second = JointCounter(positions, alphabet, 3), JointCounter(positions, alphabet, 3)
    first.update(codes_t[:250], labels_t[:250])
    second.update(codes_t[250:], labels_t[250:])

    first.merge(second)

    rows_a, counts_a = whole.whole()
    rows_b, counts_b = first.whole()
    assert torch.equal(rows_a, rows_b)
    assert torch.equal(counts_a, counts_b)
    assert torch.equal(whole.positional(), first.positional())
    assert first.n_samples == 600


def test_shuffled_column_counts_separately():
    codes = np.repeat(np.arange(4), 25)[:, None]
    labels = np.repeat(np.arange(4), 25)

    result = probe.analyze(codes, labels, seed=1)

    assert result.stats["mutual_information_bits"] == pytest.approx(2.0)
    assert result.stats["shuffled_mutual_information_bits"] < 0.5


def test_hits_sorted_and_thresholded():
    codes = np.array([[0]] * 50 + [[1]] * 50 + [[2]] * 10)
    labels = np.array([5] * 50 + [6] * 50 + [5] * 5 + [6] * 5)

    hits = probe.analyze(codes, labels).hits(threshold=0.4, min_count=1)

    assert [hit.code for hit in hits] == [(0,), (1,)]
    assert [hit.label for hit in hits] == [5, 6]
    assert all(hit.npmi >= 0.4 for hit in hits)
    assert hits[0].joint_count == 50
    assert hits[0].code_count == 50


def test_analyze_rejects_length_mismatch():
    with pytest.raises(ValueError, match="3 rows but labels have 2"):
        probe.analyze(np.zeros((3, 2), dtype=int), np.zeros(2, dtype=int))


def test_counts_are_int64():
    codes, labels = random_codes(2, 100, 3, 26)

    result = probe.analyze(codes, labels)

    assert result.whole.counts.dtype == np.int64
    assert result.positional.counts.dtype == np.int64
    assert result.whole.npmi.dtype == np.float64
