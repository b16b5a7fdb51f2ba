"""Permutation null, empirical p-values and false discovery rate control for NPMI hits.

Public names:
    PermutationNull      null distributions of plug-in MI and of the maximum NPMI, and
                         per-pair counts of permutations that reach the observed NPMI
    permutation_null     count many label permutations at once and build the null
    empirical_p_values   (1 + exceedances) / (1 + R) for every (code, label) pair
    testable_pairs       pairs whose smallest possible p-value can pass the FDR level
    benjamini_hochberg   Benjamini-Hochberg step-up rejections at a given FDR
    batched_mutual_information_bits   plug-in MI of a stack of joint tables [..., X, Y]
    DEFAULT_PERMUTATIONS, DEFAULT_FDR

Shuffling the labels keeps every code count and every label count, so the null of
a pair (u, l) is the distribution of its joint count given both marginals
(hypergeometric). NPMI rises with the joint count when the marginals are fixed, so
a permutation reaches the observed NPMI of a pair exactly when it reaches the
observed joint count, and the per-pair p-value estimates the one-sided Fisher
exact p-value. Pairs whose codes occur equally often and that share the label have
the same null, so each pair's p-value pools the null draws of all of them: a code
seen 3 times among 400 such codes gets 400 R draws, not R.

Example::

    null = permutation_null(ids, labels, n_codes=U, n_labels=L, permutations=200,
                            observed_counts=result.whole.counts)
    p_values = empirical_p_values(null.exceedances, null.draws)
    family = testable_pairs(result.whole.counts, fdr=0.05, min_count=5, permutations=200)
    significant = benjamini_hochberg(p_values, 0.05, family)
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange

from .counting import JointCounter

__all__ = [
    "PermutationNull",
    "permutation_null",
    "empirical_p_values",
    "testable_pairs",
    "benjamini_hochberg",
    "batched_mutual_information_bits",
    "DEFAULT_PERMUTATIONS",
    "DEFAULT_FDR",
]

logger = logging.getLogger(__name__)

DEFAULT_PERMUTATIONS = 200
DEFAULT_FDR = 0.05
# Cells of one group's joint table [G, U, L]: 16 MiB of int64. The counter copies
# the table a few times, so a group peaks near 100 MiB (an estimate, not measured).
GROUP_CELLS = 1 << 21
# Permuted labels of one group [G, n]: 32 MiB of int64.
GROUP_LABELS = 1 << 22
# A null MI within this tolerance of the observed MI counts as reaching it, so rounding cannot hide a tie.
MI_TOLERANCE = 1e-12


@dataclass
class PermutationNull:
    """Null distributions from R label permutations of one set of codes."""

    permutations: int
    seed: int
    mutual_information_bits: np.ndarray  # (R,) plug-in I(code; permuted labels)
    max_npmi: np.ndarray  # (R,) largest NPMI over pairs with joint count >= min_count; NaN when no pair has it
    min_count: int
    # (U, L) int64: null draws of the pair's NPMI that reach the observed NPMI, pooled
    # over pairs of the same label whose codes have the same count; None without observed counts.
    exceedances: np.ndarray | None = None
    # (U,) int64: null draws behind each code's exceedances, R times the codes of its count.
    draws: np.ndarray | None = None

    def mutual_information_p_value(self, observed_bits: float) -> float:
        """Return the empirical p-value of an observed plug-in MI against this null."""
        reached = int(np.sum(self.mutual_information_bits >= observed_bits - MI_TOLERANCE))
        return (1 + reached) / (1 + self.permutations)


def batched_mutual_information_bits(joint: torch.Tensor) -> torch.Tensor:
    """Return the plug-in MI in bits of each joint count table of a stack [..., X, Y]."""
    counts = joint.to(torch.float64)
    total = counts.sum(dim=(-2, -1), keepdim=True)
    count_x = counts.sum(dim=-1, keepdim=True)
    count_y = counts.sum(dim=-2, keepdim=True)
    ratio = counts * total / (count_x * count_y)
    # Empty cells give 0 * log(0) = NaN here; their term is 0.
    terms = torch.where(counts > 0, counts / total * torch.log2(ratio), torch.zeros_like(counts))
    return terms.sum(dim=(-2, -1)).clamp_(min=0.0)


def _group_size(permutations: int, n_samples: int, n_codes: int, n_labels: int, group_cells: int) -> int:
    by_table = group_cells // max(1, n_codes * n_labels)
    by_labels = GROUP_LABELS // max(1, n_samples)
    return max(1, min(permutations, by_table, by_labels))


def permutation_null(
    ids,
    labels,
    n_codes: int,
    n_labels: int,
    permutations: int,
    seed: int = 0,
    observed_counts=None,
    min_count: int = 1,
    device: str | torch.device = "cpu",
    group_cells: int = GROUP_CELLS,
) -> PermutationNull:
    """Count the codes against R seeded permutations of the labels and return the null.

    ``ids`` [n] is each sample's index among the U distinct code rows and
    ``labels`` [n] the encoded labels in 0..L-1. Permutations are counted in groups
    of G label columns of one ``JointCounter``, so one tensor operation counts G
    permutations and memory stays near G x U x L cells (``group_cells``). With
    ``observed_counts`` (U, L), the real joint counts, the null also counts per pair
    how many null draws reach the observed NPMI, pooling the draws of pairs that
    share the label and the code count. The same seed, R and labels give the same
    permutations.
    """
    if permutations < 1:
        raise ValueError(f"permutations must be at least 1, got {permutations}")
    ids = torch.as_tensor(np.asarray(ids) if not isinstance(ids, torch.Tensor) else ids).to(device, torch.int64)
    labels_array = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    labels_array = labels_array.astype(np.int64)
    if ids.dim() != 1 or labels_array.ndim != 1 or ids.shape[0] != labels_array.shape[0]:
        raise ValueError(f"ids {list(ids.shape)} and labels {list(labels_array.shape)} must be one-dimensional and of equal length")
    n = ids.shape[0]
    observed = None
    if observed_counts is not None:
        observed = torch.as_tensor(np.asarray(observed_counts, dtype=np.int64)).to(device)
        if tuple(observed.shape) != (n_codes, n_labels):
            raise ValueError(f"observed_counts must have shape ({n_codes}, {n_labels}), got {tuple(observed.shape)}")

    # Shuffling keeps both marginals, so their logs are computed once.
    log_total = math.log(n)
    code_counts = torch.bincount(ids, minlength=n_codes)
    log_code_counts = torch.log(code_counts.to(torch.float64))
    if observed is not None:
        pooled = _PooledNull(code_counts, n_labels)
    log_label_counts = torch.log(torch.bincount(torch.from_numpy(labels_array), minlength=n_labels).to(device, torch.float64))

    rng = np.random.default_rng(seed)
    group = _group_size(permutations, n, n_codes, n_labels, group_cells)
    codes = rearrange(ids, "n -> n 1")
    null_bits, null_max = [], []
    began = time.perf_counter()
    for first in range(0, permutations, group):
        size = min(group, permutations - first)
        permuted = rng.permuted(np.broadcast_to(labels_array, (size, n)), axis=1)
        counter = JointCounter(1, n_codes, n_labels, columns=size, device=device, positional=False)
        counter.update(codes, torch.from_numpy(rearrange(permuted, "r n -> n r")))
        rows, joint = counter.whole()
        if rows.shape[0] != n_codes:
            raise ValueError(f"ids cover {rows.shape[0]} of n_codes={n_codes} codes; every code must occur at least once")

        # Only occupied cells carry MI or NPMI above -1, and there are at most n per permutation.
        column, code, label = torch.nonzero(joint, as_tuple=True)
        count = joint[column, code, label].to(torch.float64)
        log_count = torch.log(count)
        pmi = log_count + log_total - log_code_counts[code] - log_label_counts[label]
        bits = torch.zeros(size, dtype=torch.float64, device=device)
        bits.index_add_(0, column, count / n * pmi / math.log(2.0))
        null_bits.append(bits.clamp_(min=0.0))

        values = torch.where(count == n, torch.ones_like(pmi), pmi / (log_total - log_count)).clamp_(-1.0, 1.0)
        values = torch.where(count >= min_count, values, torch.full_like(values, -math.inf))
        largest = torch.full((size,), -math.inf, dtype=torch.float64, device=device)
        largest.scatter_reduce_(0, column, values, reduce="amax")
        null_max.append(torch.where(torch.isinf(largest), torch.full_like(largest, math.nan), largest))

        if observed is not None:
            pooled.add(code, label, joint[column, code, label])
    logger.info("permutation null: %d permutations in groups of %d over %d codes x %d labels, %.2f s", permutations, group, n_codes, n_labels, time.perf_counter() - began)

    null = PermutationNull(
        permutations=permutations,
        seed=seed,
        mutual_information_bits=torch.cat(null_bits).cpu().numpy(),
        max_npmi=torch.cat(null_max).cpu().numpy(),
        min_count=min_count,
    )
    if observed is not None:
        exceedances, draws = pooled.exceedances(observed, permutations)
        null.exceedances, null.draws = exceedances.cpu().numpy(), draws.cpu().numpy()
    return null


class _PooledNull:
    """Histograms of null joint counts per (code count, label), for pooled per-pair p-values.

    The histogram of codes with count c has c + 1 rows (joint count 0..c), so all
    histograms together have at most n + (distinct code counts) rows of L cells.
    """

    def __init__(self, code_counts: torch.Tensor, n_labels: int):
        self.n_labels = n_labels
        self.sizes, self.stratum = torch.unique(code_counts, return_inverse=True)
        self.codes_per_stratum = torch.bincount(self.stratum, minlength=self.sizes.shape[0])
        self.offsets = torch.cumsum(self.sizes + 1, dim=0) - (self.sizes + 1)
        rows = int((self.sizes + 1).sum())
        self.histogram = torch.zeros(rows * n_labels, dtype=torch.int64, device=code_counts.device)

    def add(self, code: torch.Tensor, label: torch.Tensor, count: torch.Tensor) -> None:
        """Add the nonzero null joint counts of one group: cells (code, label) and their counts.

        Zero counts are not added; ``exceedances`` derives them from the number of draws.
        """
        rows = self.offsets[self.stratum[code]] + count
        self.histogram += torch.bincount(rows * self.n_labels + label, minlength=self.histogram.numel())

    def exceedances(self, observed: torch.Tensor, permutations: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return pooled draws >= the observed joint count (U, L) and draws per code (U,)."""
        histogram = rearrange(self.histogram, "(r l) -> r l", l=self.n_labels).clone()
        stratum_of_row = torch.repeat_interleave(torch.arange(self.offsets.shape[0], device=histogram.device), self.sizes + 1)
        nonzero_draws = torch.zeros((self.offsets.shape[0], self.n_labels), dtype=torch.int64, device=histogram.device)
        nonzero_draws.index_add_(0, stratum_of_row, histogram)
        histogram[self.offsets] = rearrange(self.codes_per_stratum * permutations, "s -> s 1") - nonzero_draws
        # Survival counts within each stratum: a reversed cumulative sum over all rows,
        # minus what the strata after it contribute.
        from_end = torch.flip(torch.cumsum(torch.flip(histogram, dims=[0]), dim=0), dims=[0])
        ends = torch.cat([self.offsets[1:], torch.tensor([histogram.shape[0]], device=histogram.device)])
        after = torch.cat([from_end, torch.zeros_like(from_end[:1])])[ends]
        rows = self.offsets[self.stratum].unsqueeze(-1) + observed
        reached = torch.gather(from_end, 0, rows) - after[self.stratum]
        draws = self.codes_per_stratum[self.stratum] * permutations
        return reached, draws


def empirical_p_values(exceedances: np.ndarray, draws) -> np.ndarray:
    """Return (1 + exceedances) / (1 + draws), float64; never 0, so never overstating significance.

    ``draws`` is R for plain permutation counts, or the (U,) pooled draws of
    ``PermutationNull.draws`` for its pooled exceedances (U, L).
    """
    draws = np.asarray(draws, dtype=np.float64)
    if np.any(draws < 1):
        raise ValueError(f"draws must be at least 1, got {draws.min()}")
    if draws.ndim == 1:
        draws = draws[:, None]
    return (1.0 + np.asarray(exceedances, dtype=np.float64)) / (1.0 + draws)


def _log_choose(total: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    return torch.lgamma(total + 1) - torch.lgamma(chosen + 1) - torch.lgamma(total - chosen + 1)


def testable_pairs(joint_counts, fdr: float = DEFAULT_FDR, min_count: int = 1, permutations: int | None = None) -> np.ndarray:
    """Return the test family: the (U, L) pairs that can be declared significant at ``fdr``.

    A pair enters when its code occurs at least ``min_count`` times and when the
    probability, under shuffling, of its largest possible joint count is at most
    ``fdr``: the exact hypergeometric P(joint = min(code count, label count)). A code
    seen once, for example, matches a label of frequency 0.1 by chance 1 time in 10
    and can never pass 0.05. The choice uses only the marginals, which shuffling
    keeps, so leaving such pairs out keeps the Benjamini-Hochberg guarantee and
    spares its power. With ``permutations`` R, no pair is testable when 1 / (R + 1)
    exceeds ``fdr``.
    """
    _check_fdr(fdr)
    counts = torch.as_tensor(np.asarray(joint_counts)).to(torch.float64)
    if counts.dim() != 2:
        raise ValueError(f"joint counts must be a (codes, labels) table, got shape {list(counts.shape)}")
    code_counts = counts.sum(dim=1, keepdim=True)
    label_counts = counts.sum(dim=0, keepdim=True)
    total = counts.sum()
    largest = torch.minimum(code_counts, label_counts)
    log_p = _log_choose(label_counts, largest) + _log_choose(total - label_counts, code_counts - largest) - _log_choose(total, code_counts)
    testable = (log_p <= math.log(fdr) + 1e-9) & (code_counts >= min_count)
    if permutations is not None and 1.0 / (1 + permutations) > fdr:
        testable = torch.zeros_like(testable)
    return testable.numpy()


def _check_fdr(fdr: float) -> None:
    if not 0.0 < fdr <= 1.0:
        raise ValueError(f"invalid FDR level {fdr}; it must lie in (0, 1], for example 0.05")


def benjamini_hochberg(p_values, fdr: float = DEFAULT_FDR, family=None) -> np.ndarray:
    """Return a bool array: which p-values the Benjamini-Hochberg step-up procedure rejects.

    Only entries where ``family`` is True are tested (all by default); the others
    are never rejected and do not count towards the number of tests m. The k
    smallest p-values are rejected for the largest k with p_(k) <= k * fdr / m.
    """
    _check_fdr(fdr)
    p_values = np.asarray(p_values, dtype=np.float64)
    family = np.ones(p_values.shape, dtype=bool) if family is None else np.asarray(family, dtype=bool)
    if family.shape != p_values.shape:
        raise ValueError(f"family has shape {family.shape} but p_values have shape {p_values.shape}")
    tested = np.sort(p_values[family])
    m = tested.size
    if m == 0:
        return np.zeros(p_values.shape, dtype=bool)
    passing = np.nonzero(tested <= fdr * np.arange(1, m + 1) / m)[0]
    if passing.size == 0:
        return np.zeros(p_values.shape, dtype=bool)
    cutoff = tested[passing[-1]]
    return family & (p_values <= cutoff)
