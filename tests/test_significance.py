"""Permutation null, FDR flags, bias-corrected MI and held-out decoding."""

import math

import h5py
import numpy as np
import pytest
import torch

import probe
from probe import run as probe_run
from probe.counting import distinct_row_index
from probe.decoding import ActivationSample, decode_codes, holdout_mask, linear_probe_accuracy
from probe import significance
from probe.significance import batched_mutual_information_bits, benjamini_hochberg, permutation_null
from probe.stats import miller_madow_mutual_information_bits, mutual_information_bits, npmi


def copy_model_mi(q: float, alphabet: int, labels: int) -> float:
    """True I(code; label) in bits when the code copies a uniform label with probability q, else is uniform noise.

    p(x | y) = q [x = y] + (1 - q) / K, and p(x) = q / L + (1 - q) / K for x < L, else (1 - q) / K.
    """
    noise = (1 - q) / alphabet
    matched = q / labels + noise
    entropy_code = -labels * matched * math.log2(matched) - (alphabet - labels) * noise * math.log2(noise)
    hit = q + noise
    entropy_given_label = -hit * math.log2(hit) - (alphabet - 1) * noise * math.log2(noise)
    return entropy_code - entropy_given_label


def copy_model_sample(q: float, alphabet: int, labels: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, labels, n)
    code = np.where(rng.random(n) < q, label, rng.integers(0, alphabet, n))
    return code, label


def test_closed_form_mi_matches_exact_table():
    for q, alphabet in ((0.2, 10), (0.5, 37), (0.9, 1000)):
        joint = np.full((alphabet, 10), (1 - q) / alphabet / 10)
        joint[np.arange(10), np.arange(10)] += q / 10
        marginal_x, marginal_y = joint.sum(axis=1, keepdims=True), joint.sum(axis=0, keepdims=True)
        exact = float(np.sum(joint * np.log2(joint / (marginal_x * marginal_y))))
        assert copy_model_mi(q, alphabet, 10) == pytest.approx(exact, abs=1e-12)


@pytest.mark.parametrize("alphabet", [10, 100, 1000, 10_000])
def test_corrected_mi_recovers_truth(alphabet):
    truth = copy_model_mi(0.2, alphabet, 10)
    plug_in, corrected = [], []
    for seed in range(5):
        code, label = copy_model_sample(0.2, alphabet, 10, 10_000, seed)
        result = probe.analyze(code, label, permutations=20, holdout=0.0, seed=seed)
        plug_in.append(result.stats["mutual_information_bits"])
        corrected.append(result.stats["corrected_mutual_information_bits"])
    assert abs(np.mean(corrected) - truth) < 0.05
    if alphabet >= 1000:
        assert np.mean(plug_in) - truth > 0.5
    if alphabet == 10_000:
        assert np.mean(plug_in) - truth > 2.0


def test_miller_madow_formula():
    joint = np.array([[30, 5, 0], [2, 40, 1], [0, 0, 7]])
    n = joint.sum()
    cells, rows, columns = 6, 3, 3
    expected = mutual_information_bits(joint) - (cells - rows - columns + 1) / (2 * n * math.log(2))
    assert miller_madow_mutual_information_bits(joint) == pytest.approx(expected, abs=1e-12)
    code, label = copy_model_sample(0.5, 10, 10, 10_000, 0)
    result = probe.analyze(code, label, permutations=0, holdout=0.0)
    assert result.stats["miller_madow_mutual_information_bits"] == pytest.approx(copy_model_mi(0.5, 10, 10), abs=0.02)


def test_null_matches_direct_count():
    rng = np.random.default_rng(4)
    n, codes_total, labels_total, permutations = 400, 40, 4, 30
    ids = np.concatenate([np.arange(codes_total), rng.integers(0, codes_total, n - codes_total)])
    labels = rng.choice(labels_total, size=n, p=[0.4, 0.3, 0.2, 0.1])
    observed = np.zeros((codes_total, labels_total), dtype=np.int64)
    np.add.at(observed, (ids, labels), 1)

    null = permutation_null(ids, labels, codes_total, labels_total, permutations, seed=9, observed_counts=observed, min_count=2, group_cells=7 * codes_total * labels_total)

    # The same permutations, one at a time: groups of 7 draw them in the same order.
    generator = np.random.default_rng(9)
    tables = []
    for first in range(0, permutations, 7):
        size = min(7, permutations - first)
        for permuted in generator.permuted(np.broadcast_to(labels, (size, n)), axis=1):
            table = np.zeros_like(observed)
            np.add.at(table, (ids, permuted), 1)
            tables.append(table)
    tables = np.stack(tables)
    assert null.mutual_information_bits == pytest.approx([mutual_information_bits(t) for t in tables], abs=1e-12)
    expected_max = [float(np.where(t >= 2, npmi(t).numpy(), -np.inf).max()) for t in tables]
    assert null.max_npmi == pytest.approx(expected_max, abs=1e-12)
    sparse = permutation_null(np.arange(50), np.arange(50) % 2, 50, 2, 5, min_count=2)
    assert np.isnan(sparse.max_npmi).all()

    code_counts = observed.sum(axis=1)
    for code in range(codes_total):
        same_count = code_counts == code_counts[code]
        assert null.draws[code] == permutations * same_count.sum()
        for label in range(labels_total):
            reached = int((tables[:, same_count, label] >= observed[code, label]).sum())
            assert null.exceedances[code, label] == reached


def test_batched_mi_matches_single_tables():
    tables = torch.randint(0, 5, (6, 9, 4))
    tables[0] = 0
    tables[0, 2, 1] = 3
    values = batched_mutual_information_bits(tables)
    assert values.tolist() == pytest.approx([mutual_information_bits(t) for t in tables], abs=1e-12)


def test_testable_pairs_use_hypergeometric_bound():
    joint = np.array([[1, 0, 0], [2, 0, 0], [0, 3, 0], [4, 4, 4], [1, 0, 1]])
    n = joint.sum()
    tested = significance.testable_pairs(joint, fdr=0.05, min_count=1)
    code_counts, label_counts = joint.sum(axis=1), joint.sum(axis=0)
    for code in range(joint.shape[0]):
        for label in range(joint.shape[1]):
            c, m = int(code_counts[code]), int(label_counts[label])
            largest = min(c, m)
            p_largest = math.comb(m, largest) * math.comb(n - m, c - largest) / math.comb(n, c)
            assert tested[code, label] == (p_largest <= 0.05)
    assert not significance.testable_pairs(joint, fdr=0.05, min_count=13).any()
    assert not significance.testable_pairs(joint, fdr=0.05, permutations=10).any()


def test_benjamini_hochberg_steps_up():
    p_values = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    # m = 10 at 0.05: k / m * 0.05 = 0.005, 0.010, 0.015, 0.020, 0.025 ... only the first two pass.
    assert benjamini_hochberg(p_values, 0.05).tolist() == [True, True] + [False] * 8
    family = np.array([True] * 5 + [False] * 5)
    # m = 5: 0.042 <= 5 / 5 * 0.05, so all five in the family are rejected.
    assert benjamini_hochberg(p_values, 0.05, family).tolist() == [True] * 5 + [False] * 5
    with pytest.raises(ValueError, match="FDR"):
        benjamini_hochberg(p_values, 0.0)


def skewed_codes(n: int, seed: int) -> np.ndarray:
    """Codes with counts from one to hundreds, as in a real layer."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, 301) ** 1.1
    return rng.choice(300, size=n, p=weights / weights.sum())


def test_fdr_holds_for_independent_codes():
    flagged = hits_total = 0
    per_seed = []
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        codes = skewed_codes(3000, seed)
        labels = rng.choice(5, size=3000, p=[0.35, 0.25, 0.2, 0.15, 0.05])
        result = probe.analyze(codes, labels, permutations=100, holdout=0.0, seed=seed, min_count=2)
        hits = result.hits(threshold=0.05, min_count=2)
        significant = sum(hit.significant for hit in hits)
        flagged += significant
        hits_total += len(hits)
        per_seed.append(significant / max(1, len(hits)))
    assert hits_total > 200
    assert flagged / hits_total <= 0.05
    assert np.mean(per_seed) <= 0.05


def test_flags_find_planted_association():
    rng = np.random.default_rng(3)
    codes = skewed_codes(3000, 3)
    labels = rng.choice(2, size=3000)
    planted = codes < 40
    labels[planted] = codes[planted] % 2
    result = probe.analyze(codes, labels, permutations=200, holdout=0.0, min_count=5)
    significant = {hit.code[0] for hit in result.hits(threshold=0.05, min_count=5, significant_only=True)}
    assert len(significant & set(range(40))) >= 35
    assert len(significant - set(range(40))) <= 2
    assert result.stats["mutual_information_p_value"] == pytest.approx(1 / 201)


def test_permutations_zero_turns_test_off():
    code, label = copy_model_sample(0.5, 20, 10, 2000, 0)
    result = probe.analyze(code, label, permutations=0, holdout=0.0)
    assert result.whole.p_values is None
    assert result.null is None
    assert all(hit.significant is None for hit in result.hits(0.1))
    expected = result.stats["mutual_information_bits"] - result.stats["shuffled_mutual_information_bits"]
    assert result.stats["corrected_mutual_information_bits"] == pytest.approx(expected)


def test_distinct_row_index_multiword():
    codes = torch.randint(0, 26, (300, 30))
    codes[100:] = codes[:200].clone()
    distinct = torch.unique(codes, dim=0)
    index = distinct_row_index(codes, distinct, 26)
    assert torch.equal(distinct[index], codes)
    with pytest.raises(ValueError, match="not among"):
        distinct_row_index(torch.full((1, 30), 25), distinct[:5], 26)


def test_holdout_mask_is_seeded():
    mask = holdout_mask(1000, 0.2, seed=1)
    assert mask.sum() == 200
    assert np.array_equal(mask, holdout_mask(1000, 0.2, seed=1))
    assert not np.array_equal(mask, holdout_mask(1000, 0.2, seed=2))
    with pytest.raises(ValueError, match="holdout"):
        holdout_mask(10, 1.0)


def reference_decoding(codes, labels, heldout, alphabet, n_labels):
    """Plain-Python whole-code majority with the naive Bayes fallback."""
    fit = [i for i in range(len(codes)) if not heldout[i]]
    votes, symbol, label_count = {}, {}, [0] * n_labels
    for i in fit:
        row, y = tuple(codes[i]), labels[i]
        votes.setdefault(row, [0] * n_labels)[y] += 1
        label_count[y] += 1
        for position, s in enumerate(row):
            symbol[(position, s, y)] = symbol.get((position, s, y), 0) + 1
    correct = 0
    for i in range(len(codes)):
        if not heldout[i]:
            continue
        row = tuple(codes[i])
        if row in votes:
            guess = max(range(n_labels), key=lambda y: (votes[row][y], -y))
        else:
            def score(y):
                total = math.log((label_count[y] + 1) / (len(fit) + n_labels))
                for position, s in enumerate(row):
                    total += math.log((symbol.get((position, s, y), 0) + 1) / (label_count[y] + alphabet))
                return total
            guess = max(range(n_labels), key=lambda y: (score(y), -y))
        correct += guess == labels[i]
    return correct / int(heldout.sum())


def test_decoding_matches_reference():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 600)
    codes = np.stack([np.where(rng.random(600) < 0.6, labels, rng.integers(0, 5, 600)), rng.integers(0, 5, 600), rng.integers(0, 5, 600)], axis=1)
    heldout = holdout_mask(600, 0.3, seed=0)
    distinct = torch.unique(torch.from_numpy(codes), dim=0)
    ids = distinct_row_index(torch.from_numpy(codes), distinct, 5)
    chunks = lambda: ((start, torch.from_numpy(codes[start : start + 128])) for start in range(0, 600, 128))
    decoding = decode_codes(chunks, ids, labels, heldout, 3, 5, distinct.shape[0], 4)
    assert decoding.heldout_accuracy == pytest.approx(reference_decoding(codes, labels, heldout, 5, 4))
    assert 0 < decoding.unseen_fraction < 1
    assert decoding.chance_accuracy == pytest.approx(np.bincount(labels[heldout]).max() / heldout.sum())
    assert decoding.heldout_accuracy > decoding.chance_accuracy + 0.2


def test_linear_probe_separates_and_guesses():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 900)
    centres = rng.normal(size=(3, 20)) * 3
    features = torch.from_numpy(centres[labels] + rng.normal(size=(900, 20))).float()
    heldout = holdout_mask(900, 0.25, seed=0)
    assert linear_probe_accuracy(features, labels, heldout, 3, seed=0) > 0.95
    noise = torch.from_numpy(rng.normal(size=(900, 20))).float()
    assert linear_probe_accuracy(noise, labels, heldout, 3, seed=0) < 0.5
    assert linear_probe_accuracy(features, labels, heldout, 3, seed=1) == linear_probe_accuracy(features, labels, heldout, 3, seed=1)


def test_activation_sample_caps_memory():
    sample = ActivationSample(1000, seed=0, max_values=30_000, max_units=100)
    activations = torch.arange(1000 * 300, dtype=torch.float32).reshape(1000, 3, 10, 10)
    for start in range(0, 1000, 64):
        sample.add(start, activations[start : start + 64])
    features, indices = sample.features()
    assert features.shape == (300, 100)
    assert indices.shape == (300,)
    assert len(set(indices.tolist())) == 300
    flat = activations.reshape(1000, 300)
    assert torch.equal(features, flat[indices][:, sample._unit_index])


def test_analyze_reports_heldout_accuracy():
    code, label = copy_model_sample(0.8, 10, 10, 3000, 1)
    result = probe.analyze(code, label, permutations=0, holdout=0.2)
    assert result.stats["heldout_accuracy"] == pytest.approx(0.8 + 0.2 / 10, abs=0.04)
    assert result.stats["chance_accuracy"] < 0.15
    assert math.isnan(result.stats["linear_probe_accuracy"])


@pytest.fixture(scope="module")
def assessed_run(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("assessed") / "probe.h5"
    code = probe_run.main([
        "--layers", "conv1,fc,latent", "--checkpoint", str(checkpoint), "--dataset", "mnist-sample",
        "--limit", "1500", "--batch-size", "256", "--calibration", "700", "--out", str(out),
        "--permutations", "60", "--holdout", "0.2", "--min-count", "3",
    ])
    assert code == 0
    return out


def test_run_stores_significance(assessed_run):
    with h5py.File(assessed_run, "r") as handle:
        assert handle.attrs["permutations"] == 60
        for name in ("conv1", "fc", "latent"):
            layer = handle[f"layers/{name}"]
            counts = layer["npmi/whole/counts"]
            assert layer["npmi/whole/p_values"].shape == counts.shape
            assert layer["npmi/whole/p_values"].dtype == np.float64
            assert layer["npmi/whole/significant"].dtype == bool
            assert layer["null/mutual_information_bits"].shape == (60,)
            stats = layer["stats"].attrs
            for key in ("corrected_mutual_information_bits", "miller_madow_mutual_information_bits", "heldout_accuracy", "linear_probe_accuracy", "chance_accuracy"):
                assert np.isfinite(stats[key]), (name, key)
            assert stats["corrected_mutual_information_bits"] < stats["mutual_information_bits"]
            assert stats["linear_probe_samples"] == 1500
    with probe.load(assessed_run) as run:
        latent = run.layers["latent"].result
        assert latent.null.permutations == 60
        assert latent.stats["heldout_accuracy"] > latent.stats["chance_accuracy"]
        assert all(hit.significant is not None for hit in latent.hits(0.3, 3))


def test_run_table_lists_significant_hits(assessed_run, capsys):
    from probe import report

    assert report.main([str(assessed_run)]) == 0
    out = capsys.readouterr().out
    assert "corrected" in out
    assert "held-out" in out
    assert "linear probe" in out
    assert "significant at FDR 0.05" in out


@pytest.mark.parametrize("option", [["--permutations", "-1"], ["--fdr", "0"], ["--holdout", "1"]])
def test_run_rejects_bad_options(option, capsys):
    assert probe_run.main(["--layers", "latent", *option]) == 2
    assert "invalid" in capsys.readouterr().err
