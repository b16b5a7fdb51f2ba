"""Per-value summaries: what in the codes goes with each label or attribute value.

Public names:
    ValueHit     one association of a code part with an observation value
    value_hits   every association at or above a threshold, grouped by observation and
                 value, strongest first within each value
    KINDS        the kinds of code part, in the order they are listed

Kinds of code part:
    code              a whole code row
    symbol            one symbol at one position
    ngram             an n-gram anywhere in the code (counted once per message)
    positional_ngram  an n-gram (n >= 2) starting at one position

Example::

    for hit in value_hits(result, threshold=0.4):
        print(hit.observation, hit.value_name, hit.kind, hit.position, hit.code, hit.npmi)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ValueHit", "value_hits", "KINDS", "LABEL_OBSERVATION"]

KINDS = ("code", "symbol", "ngram", "positional_ngram")
# The observation name under which class labels are listed.
LABEL_OBSERVATION = "label"


@dataclass(frozen=True)
class ValueHit:
    """A code part whose NPMI with one observation value is at or above the threshold."""

    observation: str  # "label" or an attribute name
    value: int
    value_name: str  # the string behind ``value`` for string attributes, else str(value)
    kind: str  # one of KINDS
    position: int | None  # position of a symbol or start of a positional n-gram; None otherwise
    code: tuple[int, ...]  # the code row, the symbol as (s,), or the n-gram
    npmi: float
    joint_count: int
    count: int  # samples with this code part


def _table_hits(kind, positions, codes, counts, values, marginal, threshold, min_count):
    """Yield (value column, kind, position, code, npmi, joint, count) for cells above threshold."""
    rows, columns = np.nonzero((values >= threshold) & (counts >= min_count))
    for row, column in zip(rows.tolist(), columns.tolist()):
        position = None if positions is None else int(positions[row])
        yield column, kind, position, tuple(int(v) for v in codes[row]), float(values[row, column]), int(counts[row, column]), int(marginal[row])


def _hits_of(result, threshold: float, min_count: int):
    whole = result.whole
    yield from _table_hits("code", None, whole.codes, whole.counts, whole.npmi, whole.counts.sum(axis=1), threshold, min_count)

    positional = result.positional
    P, S, L = positional.counts.shape
    counts = positional.counts.reshape(P * S, L)
    positions = np.repeat(np.arange(P), S)
    symbols = np.tile(np.arange(S), P)[:, None]
    yield from _table_hits("symbol", positions, symbols, counts, positional.npmi.reshape(P * S, L), counts.sum(axis=1), threshold, min_count)

    for order in sorted(result.ngrams):
        table = result.ngrams[order]
        yield from _table_hits("ngram", None, table.codes, table.counts, table.npmi, table.message_counts, threshold, min_count)
    for order in sorted(result.positional_ngrams):
        # Length 1 at a start position is the "symbol" kind already.
        if order < 2:
            continue
        table = result.positional_ngrams[order]
        yield from _table_hits("positional_ngram", table.starts, table.codes, table.counts, table.npmi, table.counts.sum(axis=1), threshold, min_count)


def _observation_hits(observation: str, result, threshold: float, min_count: int) -> list[ValueHit]:
    names = list(getattr(result, "value_names", []) or [])
    hits = []
    for column, kind, position, code, value, joint, count in _hits_of(result, threshold, min_count):
        label = int(result.label_values[column])
        hits.append(ValueHit(observation, label, names[label] if names else str(label), kind, position, code, value, joint, count))
    kind_rank = {kind: rank for rank, kind in enumerate(KINDS)}
    hits.sort(key=lambda hit: (hit.value, -hit.npmi, -hit.joint_count, kind_rank[hit.kind], hit.position or 0, hit.code))
    return hits


def value_hits(result, threshold: float = 0.4, min_count: int = 1) -> list[ValueHit]:
    """Return the code parts at or above ``threshold`` for every label and attribute value.

    Labels come first (observation "label"), then attributes in their order. Within an
    observation, values are ascending; within a value, hits go by NPMI, then joint
    count, descending. The number of hits is bounded by the table sizes, which grow
    with the distinct codes and n-grams, not with the samples.
    """
    hits = _observation_hits(LABEL_OBSERVATION, result, threshold, min_count)
    for name, sub_result in result.observations.items():
        hits.extend(_observation_hits(name, sub_result, threshold, min_count))
    return hits
