"""Slow, obvious implementations that the tests compare the tensor code against.

Everything here uses plain Python dictionaries and ``math.log`` on probabilities,
so it shares no code and no formula rearrangement with the library.
"""

from __future__ import annotations

import math
from collections import Counter


def joint_counter(codes, labels) -> Counter:
    """Count (code row tuple, label) pairs one sample at a time."""
    counts: Counter = Counter()
    for row, label in zip(codes, labels):
        counts[(tuple(int(v) for v in row), int(label))] += 1
    return counts


def npmi_value(p_xy: float, p_x: float, p_y: float) -> float:
    """NPMI of one pair from probabilities, with the -1 and +1 limits."""
    if p_xy == 0:
        return -1.0
    if p_xy == 1:
        return 1.0
    return math.log(p_xy / (p_x * p_y)) / -math.log(p_xy)


def whole_npmi(codes, labels) -> dict:
    """Return {(code tuple, label): npmi} for every observed code and label."""
    n = len(labels)
    pairs = joint_counter(codes, labels)
    code_counts: Counter = Counter()
    label_counts: Counter = Counter()
    for (code, label), count in pairs.items():
        code_counts[code] += count
        label_counts[label] += count
    return {
        (code, label): npmi_value(pairs.get((code, label), 0) / n, code_counts[code] / n, label_counts[label] / n)
        for code in code_counts
        for label in label_counts
    }


def positional_npmi(codes, labels) -> dict:
    """Return {(position, symbol, label): npmi} for symbols seen at each position."""
    n = len(labels)
    label_counts = Counter(int(label) for label in labels)
    result = {}
    for position in range(len(codes[0])):
        column = [int(row[position]) for row in codes]
        symbol_counts = Counter(column)
        pairs = Counter(zip(column, (int(label) for label in labels)))
        for symbol in symbol_counts:
            for label in label_counts:
                result[(position, symbol, label)] = npmi_value(
                    pairs.get((symbol, label), 0) / n, symbol_counts[symbol] / n, label_counts[label] / n
                )
    return result


def entropy_bits(values) -> float:
    """Entropy in bits of the empirical distribution of hashable values."""
    counts = Counter(values)
    n = sum(counts.values())
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def mutual_information_bits(codes, labels) -> float:
    """Plug-in I(code; label) in bits, from H(code) + H(label) - H(code, label)."""
    rows = [tuple(int(v) for v in row) for row in codes]
    labels = [int(label) for label in labels]
    return entropy_bits(rows) + entropy_bits(labels) - entropy_bits(list(zip(rows, labels)))


def ngram_npmi(codes, labels, length) -> dict:
    """Return {(n-gram tuple, label): npmi} over messages, each n-gram counted once per message."""
    n = len(labels)
    label_counts = Counter(int(label) for label in labels)
    gram_counts: Counter = Counter()
    pairs: Counter = Counter()
    for row, label in zip(codes, labels):
        row = [int(v) for v in row]
        present = {tuple(row[start : start + length]) for start in range(len(row) - length + 1)}
        for gram in present:
            gram_counts[gram] += 1
            pairs[(gram, int(label))] += 1
    return {
        (gram, label): npmi_value(pairs.get((gram, label), 0) / n, gram_counts[gram] / n, label_counts[label] / n)
        for gram in gram_counts
        for label in label_counts
    }


def positional_ngram_npmi(codes, labels, length) -> dict:
    """Return {(start, n-gram tuple, label): npmi} for the n-gram at each start position."""
    n = len(labels)
    label_counts = Counter(int(label) for label in labels)
    gram_counts: Counter = Counter()
    pairs: Counter = Counter()
    for row, label in zip(codes, labels):
        row = [int(v) for v in row]
        for start in range(len(row) - length + 1):
            key = (start, tuple(row[start : start + length]))
            gram_counts[key] += 1
            pairs[(key, int(label))] += 1
    return {
        (start, gram, label): npmi_value(pairs.get(((start, gram), label), 0) / n, gram_counts[(start, gram)] / n, label_counts[label] / n)
        for (start, gram) in gram_counts
        for label in label_counts
    }
