"""NPMI analysis of integer codes against labels, independent of where the codes came from.

Public names:
    analyze          count codes against labels and compute NPMI, entropy and MI
    summarize        turn a filled ``JointCounter`` into an ``AnalysisResult``
    encode_labels    map arbitrary integer labels to 0..L-1, keeping the original values
    shuffled_labels  one seeded permutation of encoded labels
    AnalysisResult, WholeCodeNPMI, PositionalNPMI, Hit   the result types

Example::

    result = analyze(codes, labels)            # codes (n, P) ints, labels (n,)
    result.whole.npmi                          # (U, L) NPMI of each distinct code row
    result.stats["mutual_information_bits"]
    result.hits(threshold=0.4)                 # strongest (code, label) pairs first
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .counting import JointCounter
from .stats import entropy_bits, mutual_information_bits, npmi

__all__ = [
    "AnalysisResult",
    "WholeCodeNPMI",
    "PositionalNPMI",
    "Hit",
    "analyze",
    "summarize",
    "encode_labels",
    "shuffled_labels",
]


@dataclass
class WholeCodeNPMI:
    """Whole-code statistics: each distinct code row is one symbol."""

    codes: np.ndarray  # (U, P) distinct code rows, sorted lexicographically
    counts: np.ndarray  # (U, L) joint counts, int64
    npmi: np.ndarray  # (U, L) float64 in [-1, 1]


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


@dataclass
class AnalysisResult:
    """NPMI tables and summary statistics of one layer (or one set of codes)."""

    whole: WholeCodeNPMI
    positional: PositionalNPMI
    stats: dict = field(default_factory=dict)
    label_values: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def hits(self, threshold: float = 0.4, min_count: int = 1) -> list[Hit]:
        """Return whole-code hits with NPMI >= threshold and joint count >= min_count, strongest first."""
        counts, values = self.whole.counts, self.whole.npmi
        rows, columns = np.nonzero((values >= threshold) & (counts >= min_count))
        order = np.lexsort((-counts[rows, columns], -values[rows, columns]))
        code_counts = counts.sum(axis=1)
        return [
            Hit(
                code=tuple(int(v) for v in self.whole.codes[r]),
                label=int(self.label_values[c]),
                npmi=float(values[r, c]),
                joint_count=int(counts[r, c]),
                code_count=int(code_counts[r]),
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


def encode_labels(labels) -> tuple[np.ndarray, np.ndarray]:
    """Map integer labels to 0..L-1; return (label_values, encoded) with label_values sorted."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if labels.dtype.kind not in "iub":
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    values, encoded = np.unique(labels, return_inverse=True)
    return values.astype(np.int64), encoded.astype(np.int64)


def shuffled_labels(encoded: np.ndarray, seed: int) -> np.ndarray:
    """Return one permutation of ``encoded``, fixed by ``seed``."""
    return np.asarray(encoded)[np.random.default_rng(seed).permutation(len(encoded))]


def summarize(counter: JointCounter, label_values: np.ndarray) -> AnalysisResult:
    """Compute NPMI tables and statistics from a filled counter.

    Label column 0 of the counter holds the real labels; column 1, when present,
    holds shuffled labels and gives ``shuffled_mutual_information_bits``.
    """
    rows, joint = counter.whole()
    positional_counts = counter.positional()
    real = joint[0]
    stats = {
        "n_samples": int(counter.n_samples),
        "distinct_codes": int(rows.shape[0]),
        "entropy_bits": entropy_bits(real.sum(dim=1)),
        "mutual_information_bits": mutual_information_bits(real),
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


def analyze(
    codes,
    labels,
    device: str | torch.device = "cpu",
    alphabet_size: int | None = None,
    seed: int = 0,
    batch_size: int = 1 << 20,
) -> AnalysisResult:
    """Count (n, P) integer codes against (n,) labels and compute NPMI and statistics.

    ``alphabet_size`` defaults to the largest code plus one. Labels may be any
    integers (3, 7, 1000 ...); ``result.label_values`` gives the label behind each
    column. The shuffled MI uses one permutation of the labels fixed by ``seed``.
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
    if codes_array.min() < 0:
        raise ValueError(f"codes must be non-negative, found {codes_array.min()}")
    largest = int(codes_array.max())
    if alphabet_size is None:
        alphabet_size = largest + 1
    elif largest >= alphabet_size:
        raise ValueError(f"code {largest} does not fit alphabet_size={alphabet_size}; pass a larger alphabet_size")

    label_values, encoded = encode_labels(labels_array)
    columns = np.stack([encoded, shuffled_labels(encoded, seed)], axis=1)
    counter = JointCounter(codes_array.shape[1], alphabet_size, len(label_values), columns=2, device=device)
    for start in range(0, len(codes_array), batch_size):
        stop = start + batch_size
        counter.update(torch.from_numpy(codes_array[start:stop].astype(np.int64)), torch.from_numpy(columns[start:stop]))
    return summarize(counter, label_values)
