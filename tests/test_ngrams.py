"""N-gram counting and NPMI against the slow reference, and planted associations."""

import numpy as np
import pytest
import torch

import probe
from probe import ngrams
from probe.ngrams import NgramCounter, parse_orders
from probe.stats import npmi, npmi_from_marginals

from . import reference


def count(codes, labels, alphabet, orders=(1, 2, 3), batch=7):
    counter = NgramCounter(codes.shape[1], alphabet, [int(labels.max()) + 1], orders=orders)
    for start in range(0, len(codes), batch):
        counter.update(torch.from_numpy(codes[start : start + batch]), torch.from_numpy(labels[start : start + batch]))
    anywhere, at_start = counter.results()
    return anywhere[0], at_start[0]


def assert_ngrams_match(anywhere, at_start, codes, labels, orders):
    for order in orders:
        expected = reference.ngram_npmi(codes, labels, order)
        table = anywhere[order]
        got = {
            (tuple(int(v) for v in gram), label): table.npmi[row, label]
            for row, gram in enumerate(table.codes)
            for label in range(table.npmi.shape[1])
        }
        assert set(got) == set(expected), order
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-9), (order, key)

        expected = reference.positional_ngram_npmi(codes, labels, order)
        table = at_start[order]
        got = {
            (int(start), tuple(int(v) for v in gram), label): table.npmi[row, label]
            for row, (start, gram) in enumerate(zip(table.starts, table.codes))
            for label in range(table.npmi.shape[1])
        }
        assert set(got) == set(expected), order
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-9), (order, key)


def small_codes(seed, n=60, positions=5, alphabet=3):
    rng = np.random.default_rng(seed)
    return rng.integers(0, alphabet, size=(n, positions)), rng.integers(0, 3, size=n)


def test_dense_matches_reference():
    codes, labels = small_codes(0)

    anywhere, at_start = count(codes, labels, alphabet=3)

    assert_ngrams_match(anywhere, at_start, codes, labels, (1, 2, 3))


def test_sparse_keys_match_reference(monkeypatch):
    monkeypatch.setattr(ngrams, "DENSE_MAX_CELLS", 0)
    codes, labels = small_codes(1)

    anywhere, at_start = count(codes, labels, alphabet=3)

    assert_ngrams_match(anywhere, at_start, codes, labels, (1, 2, 3))


def test_multiword_ngrams_match_reference():
    # 2**40 symbols: a bigram needs two int64 words, so the counter keys rows.
    codes, labels = small_codes(2, alphabet=4)

    anywhere, at_start = count(codes, labels, alphabet=2**40, orders=(1, 2))

    assert_ngrams_match(anywhere, at_start, codes, labels, (1, 2))


def test_repeated_ngram_counts_once():
    codes = np.array([[1, 1, 1, 1], [1, 2, 1, 2], [2, 2, 2, 1]])
    labels = np.array([0, 0, 1])

    anywhere, _ = count(codes, labels, alphabet=3, orders=(1, 2))

    unigrams = {tuple(gram): row for row, gram in enumerate(anywhere[1].codes.tolist())}
    assert anywhere[1].message_counts[unigrams[(1,)]] == 3
    assert anywhere[1].counts[unigrams[(1,)]].tolist() == [2, 1]
    bigrams = {tuple(gram): row for row, gram in enumerate(anywhere[2].codes.tolist())}
    assert anywhere[2].message_counts[bigrams[(1, 2)]] == 1
    assert anywhere[2].message_counts[bigrams[(2, 2)]] == 1
    assert anywhere[2].message_counts[bigrams[(1, 1)]] == 1


def test_merge_equals_single_pass():
    codes, labels = small_codes(3, n=80)
    whole = NgramCounter(5, 3, [3], orders=(2,))
    whole.update(torch.from_numpy(codes), torch.from_numpy(labels))
    first, second = NgramCounter(5, 3, [3], orders=(2,)), NgramCounter(5, 3, [3], orders=(2,))
    first.update(torch.from_numpy(codes[:30]), torch.from_numpy(labels[:30]))
    second.update(torch.from_numpy(codes[30:]), torch.from_numpy(labels[30:]))

    merged = first.merge(second)

    expected, got = whole.results(), merged.results()
    assert np.array_equal(expected[0][0][2].counts, got[0][0][2].counts)
    assert np.array_equal(expected[1][0][2].counts, got[1][0][2].counts)


def test_several_columns_share_ngrams():
    codes, labels = small_codes(4)
    other = (labels + codes[:, 0]) % 2
    counter = NgramCounter(5, 3, [3, 2], orders=(1, 2))
    counter.update(torch.from_numpy(codes), torch.from_numpy(np.stack([labels, other], axis=1)))

    anywhere, at_start = counter.results()

    assert_ngrams_match(anywhere[1], at_start[1], codes, other, (1, 2))
    assert_ngrams_match(anywhere[0], at_start[0], codes, labels, (1, 2))


def test_orders_longer_than_message_skipped():
    counter = NgramCounter(2, 4, [2], orders=(1, 2, 3))

    assert counter.orders == (1, 2)


def test_parse_orders():
    assert parse_orders("3") == (1, 2, 3)
    assert parse_orders("1,3") == (1, 3)
    assert parse_orders("2-4") == (2, 3, 4)
    assert parse_orders("0") == ()
    with pytest.raises(ValueError, match="'x'"):
        parse_orders("1,x")


def test_npmi_from_marginals_matches_npmi():
    joint = torch.tensor([[5, 1], [2, 7], [0, 3]])

    values = npmi_from_marginals(joint, joint.sum(1), joint.sum(0), joint.sum())

    assert torch.allclose(values, npmi(joint))


def test_npmi_from_marginals_limits():
    values = npmi_from_marginals(torch.tensor([[4, 0]]), torch.tensor([4]), torch.tensor([4, 3]), 4)

    assert values[0, 0] == 1.0
    assert values[0, 1] == -1.0
    assert not torch.isnan(values).any()


N_PLANTED = 12_000


@pytest.fixture(scope="module")
def planted():
    """Codes of 6 positions over 20 symbols with two planted associations.

    Symbol 5 sits at position 1 exactly when the attribute is set; the bigram
    (17, 18) appears, at a random start, exactly in the messages of label 3, and
    the random symbols never form it elsewhere.
    """
    rng = np.random.default_rng(7)
    n = N_PLANTED
    labels = rng.integers(0, 10, size=n)
    attribute = rng.integers(0, 2, size=n)
    codes = rng.integers(0, 17, size=(n, 6))
    codes[:, 1] = np.where(attribute == 1, 5, rng.choice(np.setdiff1d(np.arange(17), [5]), size=n))
    marked = np.flatnonzero(labels == 3)
    starts = rng.choice([2, 3, 4], size=len(marked))
    codes[marked, starts] = 17
    codes[marked, starts + 1] = 18
    return codes, labels, attribute


def test_planted_positional_symbol_recovered(planted):
    codes, labels, attribute = planted

    result = probe.analyze(codes, labels, observations={"flag": attribute}, ngrams=(1, 2), permutations=0, holdout=0)

    flag = result.observations["flag"]
    column = list(flag.label_values).index(1)
    assert flag.positional.npmi[1, 5, column] == 1.0
    others = np.delete(flag.positional.npmi[:, :, column], 1, axis=0)
    assert others.max() < 0.4
    independent = flag.positional.npmi[[0, 2, 3, 4, 5]]
    assert independent.max() < 0.4


def test_planted_bigram_recovered(planted):
    codes, labels, _ = planted

    result = probe.analyze(codes, labels, ngrams=(1, 2), permutations=0, holdout=0)

    table = result.ngrams[2]
    rows = {tuple(gram): row for row, gram in enumerate(table.codes.tolist())}
    column = list(result.label_values).index(3)
    assert table.npmi[rows[(17, 18)], column] == 1.0
    spurious = [
        (gram, float(table.npmi[row].max()))
        for gram, row in rows.items()
        if 17 not in gram and 18 not in gram and table.npmi[row].max() >= 0.4
    ]
    assert spurious == []
    unigrams = result.ngrams[1]
    independent = [row for row, gram in enumerate(unigrams.codes.tolist()) if gram[0] not in (5, 17, 18)]
    assert unigrams.npmi[independent].max() < 0.4


def test_planted_associations_in_value_hits(planted):
    codes, labels, attribute = planted

    result = probe.analyze(codes, labels, observations={"flag": attribute}, ngrams=(1, 2), permutations=0, holdout=0)

    flag_hits = [hit for hit in probe.value_hits(result, threshold=0.4) if hit.observation == "flag"]
    assert flag_hits[0].kind == "symbol"
    assert (flag_hits[0].value, flag_hits[0].position, flag_hits[0].code, flag_hits[0].npmi) == (1, 1, (5,), 1.0)
    label_hits = [hit for hit in probe.value_hits(result, threshold=0.4) if hit.observation == "label" and hit.kind == "ngram"]
    assert (3, (17, 18), 1.0) in {(hit.value, hit.code, hit.npmi) for hit in label_hits}
    assert {hit.value for hit in label_hits} == {3}
