"""NPMI analysis of integer codes against labels, independent of where the codes came from.

Public names:
    analyze          count codes against labels (and attributes, n-grams) and compute NPMI, entropy and MI
    summarize        turn a filled ``JointCounter`` into an ``AnalysisResult``
    ObservationCounter  streams one set of codes against labels and attributes, with n-grams
    encode_labels    map arbitrary integer labels to 0..L-1, keeping the original values
    shuffled_labels  one seeded permutation of encoded labels
    AnalysisResult, WholeCodeNPMI, PositionalNPMI, Hit   the result types

Example::

    result = analyze(codes, labels)            # codes (n, P) ints, labels (n,)
    result.whole.npmi                          # (U, L) NPMI of each distinct code row
    result.stats["mutual_information_bits"]
    result.hits(threshold=0.4)                 # strongest (code, label) pairs first

    result = analyze(codes, labels, observations={"loops": loops}, ngrams=(1, 2, 3))
    result.ngrams[2].npmi                      # (G, L) NPMI of each bigram found anywhere
    result.observations["loops"].positional.npmi
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .assessment import DEFAULT_MIN_COUNT, assess, code_chunks
from .counting import JointCounter
from .ngrams import NgramCounter, NgramNPMI, PositionalNgramNPMI, parse_orders
from .observations import Attribute, make_attributes
from .significance import DEFAULT_FDR, DEFAULT_PERMUTATIONS, PermutationNull
from .stats import entropy_bits, miller_madow_mutual_information_bits, mutual_information_bits, npmi

__all__ = [
    "AnalysisResult",
    "WholeCodeNPMI",
    "PositionalNPMI",
    "Hit",
    "analyze",
    "summarize",
    "ObservationCounter",
    "attribute_label_columns",
    "encode_labels",
    "shuffled_labels",
]


@dataclass
class WholeCodeNPMI:
    """Whole-code statistics: each distinct code row is one symbol."""

    codes: np.ndarray  # (U, P) distinct code rows, sorted lexicographically
    counts: np.ndarray  # (U, L) joint counts, int64
    npmi: np.ndarray  # (U, L) float64 in [-1, 1]
    # Filled by the permutation test (probe.assessment.assess); None without it.
    p_values: np.ndarray | None = None  # (U, L) float64 empirical p-values
    tested: np.ndarray | None = None  # (U, L) bool, the pairs in the Benjamini-Hochberg family
    significant: np.ndarray | None = None  # (U, L) bool, rejected at the FDR level


@dataclass
class PositionalNPMI:
    """(position, symbol) against label statistics."""

    counts: np.ndarray  # (P, S, L) joint counts, int64
    npmi: np.ndarray  # (P, S, L) float64 in [-1, 1]


@dataclass(frozen=True)
class Hit:
    """One (code, label) pair at or above the NPMI threshold."""

    code: tuple[int, ...]
    label: int
    npmi: float
    joint_count: int
    code_count: int
    p_value: float = float("nan")  # NaN without the permutation test
    significant: bool | None = None  # None without the permutation test


@dataclass
class AnalysisResult:
    """NPMI tables and summary statistics of one layer (or one set of codes)."""

    whole: WholeCodeNPMI
    positional: PositionalNPMI
    stats: dict = field(default_factory=dict)
    label_values: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # N-gram length -> table; empty unless n-grams were counted.
    ngrams: dict[int, NgramNPMI] = field(default_factory=dict)
    positional_ngrams: dict[int, PositionalNgramNPMI] = field(default_factory=dict)
    # Attribute name -> the same analysis against that attribute's values.
    observations: dict[str, "AnalysisResult"] = field(default_factory=dict)
    # Names of label_values when they stand for strings (user attributes); empty otherwise.
    value_names: list[str] = field(default_factory=list)
    # Null distributions of the permutation test; None without it.
    null: PermutationNull | None = None

    def hits(self, threshold: float = 0.4, min_count: int = 1, significant_only: bool = False) -> list[Hit]:
        """Return whole-code hits with NPMI >= threshold and joint count >= min_count, strongest first.

        With ``significant_only`` and a permutation test, only hits flagged at the
        FDR level are returned; without a test the flag has no effect.
        """
        counts, values = self.whole.counts, self.whole.npmi
        selected = (values >= threshold) & (counts >= min_count)
        if significant_only and self.whole.significant is not None:
            selected &= self.whole.significant
        rows, columns = np.nonzero(selected)
        order = np.lexsort((-counts[rows, columns], -values[rows, columns]))
        code_counts = counts.sum(axis=1)
        p_values, significant = self.whole.p_values, self.whole.significant
        return [
            Hit(
                code=tuple(int(v) for v in self.whole.codes[r]),
                label=int(self.label_values[c]),
                npmi=float(values[r, c]),
                joint_count=int(counts[r, c]),
                code_count=int(code_counts[r]),
                p_value=float("nan") if p_values is None else float(p_values[r, c]),
                significant=None if significant is None else bool(significant[r, c]),
            )
            for r, c in zip(rows[order], columns[order])
        ]

    def positional_hits(self, threshold: float = 0.4, min_count: int = 1) -> list[tuple[int, int, int, float, int]]:
        """Return (position, symbol, label, npmi, joint count) with NPMI >= threshold, strongest first."""
        counts, values = self.positional.counts, self.positional.npmi
        positions, symbols, labels = np.nonzero((values >= threshold) & (counts >= min_count))
        order = np.argsort(-values[positions, symbols, labels], kind="stable")
        return [
            (int(p), int(s), int(self.label_values[y]), float(values[p, s, y]), int(counts[p, s, y]))
            for p, s, y in zip(positions[order], symbols[order], labels[order])
        ]


# The positional table has positions x symbols x labels int64 cells; past this many
# (1 GiB) the alphabet is almost surely sparse ids rather than symbols.
MAX_POSITIONAL_CELLS = 1 << 27


def check_table_size(positions: int, alphabet_size: int, n_labels: int) -> None:
    """Raise ValueError when the positional count table would be too large to allocate."""
    cells = positions * alphabet_size * n_labels
    if cells > MAX_POSITIONAL_CELLS:
        raise ValueError(
            f"the positional table would need {cells:,} cells ({cells * 8 / 2**30:.1f} GiB) for {positions} positions x "
            f"{alphabet_size:,} symbols x {n_labels} labels; the codes look like sparse ids, so renumber them to "
            "0..k-1 first, for example with np.unique(codes, return_inverse=True)"
        )


def encode_labels(labels) -> tuple[np.ndarray, np.ndarray]:
    """Map integer labels to 0..L-1; return (label_values, encoded) with label_values sorted."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if labels.dtype.kind not in "iub":
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.dtype.kind == "u" and labels.size and int(labels.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"label {int(labels.max())} does not fit in int64; renumber the labels, for example with np.unique")
    values, encoded = np.unique(labels, return_inverse=True)
    return values.astype(np.int64), encoded.astype(np.int64)


def shuffled_labels(encoded: np.ndarray, seed: int) -> np.ndarray:
    """Return one permutation of ``encoded``, fixed by ``seed``."""
    return np.asarray(encoded)[np.random.default_rng(seed).permutation(len(encoded))]


def summarize(counter: JointCounter, label_values: np.ndarray) -> AnalysisResult:
    """Compute NPMI tables and statistics from a filled counter.

    Label column 0 of the counter contains the real labels. Column 1, when present,
    contains shuffled labels and gives ``shuffled_mutual_information_bits``.
    """
    rows, joint = counter.whole()
    positional_counts = counter.positional()
    real = joint[0]
    stats = {
        "n_samples": int(counter.n_samples),
        "distinct_codes": int(rows.shape[0]),
        "entropy_bits": entropy_bits(real.sum(dim=1)),
        "mutual_information_bits": mutual_information_bits(real),
        "miller_madow_mutual_information_bits": miller_madow_mutual_information_bits(real),
    }
    if counter.columns > 1:
        stats["shuffled_mutual_information_bits"] = mutual_information_bits(joint[1])
    return AnalysisResult(
        whole=WholeCodeNPMI(
            codes=rows.cpu().numpy(),
            counts=real.cpu().numpy(),
            npmi=npmi(real).cpu().numpy(),
        ),
        positional=PositionalNPMI(
            counts=positional_counts.cpu().numpy(),
            npmi=npmi(positional_counts).cpu().numpy(),
        ),
        stats=stats,
        label_values=np.asarray(label_values, dtype=np.int64),
    )


class ObservationCounter:
    """Counts of one set of codes against the labels and every attribute, with n-grams.

    Labels and each attribute get a ``JointCounter`` (whole codes and positions); one
    ``NgramCounter`` counts n-grams against all of them at once. ``update`` takes
    encoded values: ``label_columns`` [B, columns] as for ``JointCounter`` and
    ``attribute_columns`` [B, A, columns], column 0 real and column 1 (when present)
    shuffled. Mergeable like the counters it holds.
    """

    def __init__(
        self,
        positions: int,
        alphabet_size: int,
        n_labels: int,
        attribute_sizes: tuple[int, ...] | list[int] = (),
        orders: tuple[int, ...] = (),
        columns: int = 2,
        device: str | torch.device = "cpu",
    ):
        self.labels = JointCounter(positions, alphabet_size, n_labels, columns=columns, device=device)
        self.attributes = [JointCounter(positions, alphabet_size, int(size), columns=columns, device=device) for size in attribute_sizes]
        self.ngrams = None
        if any(order <= positions for order in orders):
            self.ngrams = NgramCounter(positions, alphabet_size, [n_labels, *attribute_sizes], orders, device=device)

    def update(self, codes, label_columns, attribute_columns=None) -> None:
        """Count one batch: ``codes`` [B, P], ``label_columns`` [B, columns], ``attribute_columns`` [B, A, columns]."""
        codes = torch.as_tensor(codes).to(self.labels.device, torch.int64)
        label_columns = torch.as_tensor(label_columns).to(self.labels.device, torch.int64)
        if label_columns.dim() == 1:
            label_columns = label_columns[:, None]
        self.labels.update(codes, label_columns)
        if self.attributes:
            if attribute_columns is None:
                raise ValueError(f"this counter has {len(self.attributes)} attributes; pass attribute_columns [batch, {len(self.attributes)}, columns]")
            attribute_columns = torch.as_tensor(attribute_columns).to(self.labels.device, torch.int64)
            if attribute_columns.shape[:2] != (codes.shape[0], len(self.attributes)):
                raise ValueError(f"attribute_columns must have shape [{codes.shape[0]}, {len(self.attributes)}, columns], got {list(attribute_columns.shape)}")
            for index, counter in enumerate(self.attributes):
                counter.update(codes, attribute_columns[:, index])
        if self.ngrams is not None:
            real = [label_columns[:, :1]]
            if self.attributes:
                real.append(attribute_columns[:, :, 0])
            self.ngrams.update(codes, torch.cat(real, dim=1))

    def merge(self, other: "ObservationCounter") -> "ObservationCounter":
        """Add the counts of ``other`` (same shape parameters) into this counter."""
        if len(self.attributes) != len(other.attributes) or (self.ngrams is None) != (other.ngrams is None):
            raise ValueError("cannot merge observation counters with different attributes or n-gram lengths")
        self.labels.merge(other.labels)
        for mine, theirs in zip(self.attributes, other.attributes):
            mine.merge(theirs)
        if self.ngrams is not None:
            self.ngrams.merge(other.ngrams)
        return self

    def result(self, label_values, attributes: list[Attribute] = ()) -> AnalysisResult:
        """Return the labels' AnalysisResult with n-gram tables and one sub-result per attribute."""
        attributes = list(attributes)
        if len(attributes) != len(self.attributes):
            raise ValueError(f"this counter has {len(self.attributes)} attributes but {len(attributes)} were described")
        result = summarize(self.labels, label_values)
        for attribute, counter in zip(attributes, self.attributes):
            result.observations[attribute.name] = summarize(counter, attribute.values)
            result.observations[attribute.name].value_names = list(attribute.value_names)
        if self.ngrams is not None:
            anywhere, at_start = self.ngrams.results()
            targets = [result, *(result.observations[attribute.name] for attribute in attributes)]
            for target, tables, positional in zip(targets, anywhere, at_start):
                target.ngrams, target.positional_ngrams = tables, positional
        return result


def analyze(
    codes,
    labels,
    device: str | torch.device = "cpu",
    alphabet_size: int | None = None,
    seed: int = 0,
    batch_size: int = 1 << 20,
    ngrams: tuple[int, ...] | str | None = None,
    observations=None,
    permutations: int = DEFAULT_PERMUTATIONS,
    holdout: float = 0.2,
    fdr: float = DEFAULT_FDR,
    min_count: int = DEFAULT_MIN_COUNT,
) -> AnalysisResult:
    """Count (n, P) integer codes against (n,) labels and compute NPMI and statistics.

    ``alphabet_size`` defaults to the largest code plus one. Labels may be any
    integers (3, 7, 1000 ...); ``result.label_values`` gives the label behind each
    column. The shuffled MI uses one permutation of the labels fixed by ``seed``.

    ``ngrams`` lists n-gram lengths to count (a tuple, or text for ``parse_orders``
    such as "3" for 1..3); None counts none. ``observations`` maps attribute names to
    per-sample values (integers or strings, see ``probe.observations``) or lists
    ``Attribute`` objects; each gets its analysis in ``result.observations[name]``.

    ``permutations`` R shuffles the labels R times (seeded) for p-values of the
    whole-code pairs, Benjamini-Hochberg flags at ``fdr`` and the corrected MI; 0
    turns the test off. ``holdout`` is the fraction of samples held out for the
    decoding accuracies; 0 turns decoding off. ``min_count`` is the joint count a
    hit needs; the test family leaves out codes seen fewer times. The linear probe
    needs raw activations, so ``stats["linear_probe_accuracy"]`` is NaN here (see
    docs/statistics.md). The label analysis gets these figures, attributes do not.
    """
    codes_array = codes.cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    labels_array = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if codes_array.ndim == 1:
        codes_array = codes_array[:, None]
    if codes_array.ndim != 2:
        raise ValueError(f"codes must have shape (n, positions), got {codes_array.shape}")
    if codes_array.dtype.kind not in "iub":
        raise TypeError(f"codes must be integers, got dtype {codes_array.dtype}")
    if len(codes_array) != len(labels_array):
        raise ValueError(f"codes have {len(codes_array)} rows but labels have {len(labels_array)}; pass one label per code row")
    if len(codes_array) == 0:
        raise ValueError("codes are empty; pass at least one sample")
    if codes_array.shape[1] == 0:
        raise ValueError(f"codes have shape {codes_array.shape}, with no positions; pass at least one code column")
    if codes_array.min() < 0:
        raise ValueError(f"codes must be non-negative, found {codes_array.min()}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    largest = int(codes_array.max())
    if alphabet_size is None:
        alphabet_size = largest + 1
    elif largest >= alphabet_size:
        raise ValueError(f"code {largest} does not fit alphabet_size={alphabet_size}; pass a larger alphabet_size")
    check_table_size(codes_array.shape[1], alphabet_size, len(np.unique(labels_array)))

    if isinstance(ngrams, (str, int)):
        ngrams = parse_orders(str(ngrams))
    orders = tuple(ngrams or ())
    attributes = make_attributes(observations, n_samples=len(codes_array))

    label_values, encoded = encode_labels(labels_array)
    columns = np.stack([encoded, shuffled_labels(encoded, seed)], axis=1)
    attribute_columns = attribute_label_columns(attributes, seed)
    counter = ObservationCounter(codes_array.shape[1], alphabet_size, len(label_values), [len(a.values) for a in attributes], orders, columns=2, device=device)
    for start in range(0, len(codes_array), batch_size):
        stop = start + batch_size
        counter.update(
            torch.from_numpy(codes_array[start:stop].astype(np.int64)),
            torch.from_numpy(columns[start:stop]),
            None if attribute_columns is None else torch.from_numpy(attribute_columns[start:stop]),
        )
    result = counter.result(label_values, attributes)
    return assess(result, code_chunks(codes_array, batch_size), encoded, permutations, fdr=fdr, holdout=holdout, min_count=min_count, seed=seed, device=device)


def attribute_label_columns(attributes: list[Attribute], seed: int) -> np.ndarray | None:
    """Return encoded attribute values with one seeded shuffle each, [n, A, 2], or None without attributes."""
    if not attributes:
        return None
    real = np.stack([attribute.encoded for attribute in attributes], axis=1)
    return np.stack([real, shuffled_labels(real, seed)], axis=2)
