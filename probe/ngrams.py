"""Contiguous n-grams of code rows, counted against observations.

A code row of P symbols is read as a message. For each n-gram length m:

non-positional  every m-gram that occurs anywhere in the message. A message that
                contains an m-gram several times counts once for it, so p(x) is the
                fraction of messages that contain x and p(x, y) the fraction that
                contain x and have observation value y.
positional      the m-gram at each start position s, as the pair (s, m-gram); each
                message has exactly one m-gram per start position.

Public names:
    NgramCounter         streams code batches with one or more observation columns;
                         mergeable; memory grows with the distinct (n-gram, value) pairs
    NgramNPMI            non-positional n-gram table of one length against one observation
    PositionalNgramNPMI  positional n-gram table of one length against one observation
    parse_orders         turn "3", "1,2" or "2-4" into a tuple of n-gram lengths
    DEFAULT_ORDERS       (1, 2, 3)

Example::

    counter = NgramCounter(positions=3, alphabet_size=26, value_counts=[10], orders=(1, 2))
    for codes, labels in batches:                    # [B, 3], [B]
        counter.update(codes, labels)
    tables, positional = counter.results()           # one dict per observation column
    tables[0][2].npmi                                # (G, 10) NPMI of each bigram
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange, repeat

from .counting import DENSE_MAX_CELLS, INT64_MAX, SPARSE_FLUSH_KEYS, pack_rows, symbols_per_word, unpack_rows
from .stats import npmi_from_marginals

__all__ = ["NgramCounter", "NgramNPMI", "PositionalNgramNPMI", "parse_orders", "DEFAULT_ORDERS"]

DEFAULT_ORDERS = (1, 2, 3)


@dataclass
class NgramNPMI:
    """Non-positional n-grams of one length against one observation."""

    codes: np.ndarray  # (G, n) distinct n-grams seen, sorted lexicographically
    counts: np.ndarray  # (G, L) messages that contain the n-gram and have each value, int64
    npmi: np.ndarray  # (G, L) float64 in [-1, 1]
    message_counts: np.ndarray  # (G,) messages that contain the n-gram, int64


@dataclass
class PositionalNgramNPMI:
    """N-grams at each start position, of one length, against one observation."""

    starts: np.ndarray  # (G,) start position of each row, int64
    codes: np.ndarray  # (G, n) the n-gram; rows sorted by (start, n-gram)
    counts: np.ndarray  # (G, L) joint counts, int64
    npmi: np.ndarray  # (G, L) float64 in [-1, 1]


def parse_orders(text: str) -> tuple[int, ...]:
    """Parse n-gram lengths: "3" means 1..3, "1,3" the list, "2-4" the range, "0" none.

    Raises ValueError naming the invalid part.
    """
    text = str(text).strip()
    if text in ("0", "none", ""):
        return ()
    if text.isdigit():
        return tuple(range(1, int(text) + 1))
    orders: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"invalid n-gram lengths {text!r}: {part.strip()!r} is not a length or a range like 2-4")
        first, last = int(low), int(high) if dash else int(low)
        if first < 1 or last < first:
            raise ValueError(f"invalid n-gram lengths {text!r}: lengths start at 1 and ranges go upwards")
        orders.update(range(first, last + 1))
    return tuple(sorted(orders))


class _KeyCounts:
    """Counts of int64 keys (dense table or sorted sparse keys) or of int64 rows."""

    def __init__(self, key_space: int | None, width: int, device: torch.device):
        self.device = device
        self.width = width
        if key_space is not None and key_space <= DENSE_MAX_CELLS:
            self.strategy = "dense"
            self.dense = torch.zeros(key_space, dtype=torch.int64, device=device)
        elif key_space is not None and key_space <= INT64_MAX + 1:
            self.strategy = "keys"
        else:
            self.strategy = "rows"
        self.keys = torch.zeros((0,) if self.strategy == "keys" else (0, width), dtype=torch.int64, device=device)
        self.counts = torch.zeros(0, dtype=torch.int64, device=device)
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.pending_size = 0

    def add(self, keys: torch.Tensor, counts: torch.Tensor | None = None) -> None:
        if keys.shape[0] == 0:
            return
        if self.strategy == "dense":
            if counts is None and keys.numel() * 8 >= self.dense.numel():
                self.dense += torch.bincount(keys, minlength=self.dense.numel())
            else:
                self.dense.index_add_(0, keys, torch.ones_like(keys) if counts is None else counts)
            return
        if counts is None:
            counts = torch.ones(keys.shape[0], dtype=torch.int64, device=self.device)
        self.pending.append((keys, counts))
        self.pending_size += keys.shape[0]
        if self.pending_size >= max(SPARSE_FLUSH_KEYS, self.counts.numel()):
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        keys = torch.cat([self.keys, *(keys for keys, _ in self.pending)], dim=0)
        counts = torch.cat([self.counts, *(counts for _, counts in self.pending)])
        unique, inverse = torch.unique(keys, sorted=True, return_inverse=True, dim=None if self.strategy == "keys" else 0)
        merged = torch.zeros(unique.shape[0], dtype=torch.int64, device=self.device)
        merged.index_add_(0, inverse, counts)
        self.keys, self.counts = unique, merged
        self.pending, self.pending_size = [], 0

    def merge(self, other: "_KeyCounts") -> None:
        if self.strategy == "dense":
            self.dense += other.dense.to(self.device)
            return
        other.flush()
        self.add(other.keys.to(self.device), other.counts.to(self.device))

    def items(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the keys (or rows) with a non-zero count, sorted, and their counts."""
        if self.strategy == "dense":
            keys = torch.nonzero(self.dense).flatten()
            return keys, self.dense[keys]
        self.flush()
        return self.keys, self.counts


class NgramCounter:
    """Counts of n-grams (non-positional and positional) against observation columns.

    ``value_counts[i]`` is the number of values of observation column i; ``update``
    takes the encoded values (0..value_counts[i]-1) as ``observations`` [B] or
    [B, columns]. Every column shares one pass over the n-grams: the keys use the
    columns' values laid end to end, so one sort per batch serves all of them.
    Lengths longer than the message are skipped.
    """

    def __init__(
        self,
        positions: int,
        alphabet_size: int,
        value_counts: list[int] | tuple[int, ...],
        orders: tuple[int, ...] = DEFAULT_ORDERS,
        positional: bool = True,
        device: str | torch.device = "cpu",
    ):
        if positions < 1:
            raise ValueError(f"positions must be at least 1, got {positions}")
        if alphabet_size < 1:
            raise ValueError(f"alphabet_size must be at least 1, got {alphabet_size}")
        value_counts = [int(count) for count in value_counts]
        if not value_counts or min(value_counts) < 1:
            raise ValueError(f"value_counts must list at least one observation with at least one value, got {value_counts}")
        if any(order < 1 for order in orders):
            raise ValueError(f"n-gram lengths must be at least 1, got {orders}")
        self.positions = positions
        self.alphabet_size = alphabet_size
        self.value_counts = value_counts
        self.orders = tuple(order for order in sorted(set(orders)) if order <= positions)
        self.positional = positional
        self.device = torch.device(device)
        self.n_samples = 0

        self._offsets = torch.tensor(np.concatenate([[0], np.cumsum(value_counts)[:-1]]), dtype=torch.int64, device=self.device)
        self._total_values = int(sum(value_counts))
        self._value_totals = torch.zeros(self._total_values, dtype=torch.int64, device=self.device)
        self._words = {order: -(-order // symbols_per_word(alphabet_size)) for order in self.orders}
        self._anywhere: dict[int, _KeyCounts] = {}
        self._at_start: dict[int, _KeyCounts] = {}
        for order in self.orders:
            single = self._words[order] == 1
            gram_space = alphabet_size**order if single else None
            space = gram_space * self._total_values if single else None
            self._anywhere[order] = _KeyCounts(space, self._words[order] + 1, self.device)
            if positional:
                starts = positions - order + 1
                space = starts * gram_space * self._total_values if single else None
                self._at_start[order] = _KeyCounts(space, self._words[order] + 2, self.device)

    def _check(self, codes, observations) -> tuple[torch.Tensor, torch.Tensor]:
        codes = torch.as_tensor(codes).to(self.device, torch.int64)
        observations = torch.as_tensor(observations).to(self.device, torch.int64)
        if observations.dim() == 1:
            observations = rearrange(observations, "b -> b 1")
        if codes.dim() != 2 or codes.shape[1] != self.positions:
            raise ValueError(f"codes must have shape [batch, {self.positions}], got {list(codes.shape)}")
        if observations.shape != (codes.shape[0], len(self.value_counts)):
            raise ValueError(f"observations must have shape [{codes.shape[0]}, {len(self.value_counts)}], got {list(observations.shape)}")
        return codes, observations

    def update(self, codes, observations) -> None:
        """Count one batch: ``codes`` [B, P] integers, ``observations`` [B] or [B, columns]."""
        codes, observations = self._check(codes, observations)
        batch = codes.shape[0]
        if batch == 0:
            return
        self.n_samples += batch
        values = observations + self._offsets  # [B, O] indices into the concatenated values
        self._value_totals += torch.bincount(rearrange(values, "b o -> (b o)"), minlength=self._total_values)

        for order in self.orders:
            windows = codes.unfold(1, order, 1)  # [B, K, order], K = P - order + 1
            starts = windows.shape[1]
            words = rearrange(pack_rows(rearrange(windows, "b k m -> (b k) m"), self.alphabet_size), "(b k) w -> b k w", b=batch)
            self._count_anywhere(order, words, values)
            if self.positional:
                self._count_at_start(order, words, values, starts)

    def _count_anywhere(self, order: int, words: torch.Tensor, values: torch.Tensor) -> None:
        batch, starts, width = words.shape
        if width == 1:
            grams = words[:, :, 0]
            vocabulary = None
        else:
            # Several words per n-gram: number the distinct n-grams of this batch first.
            vocabulary, inverse = torch.unique(rearrange(words, "b k w -> (b k) w"), dim=0, return_inverse=True)
            grams = rearrange(inverse, "(b k) -> b k", b=batch)

        # Count each n-gram once per message: sort each row, keep the first of equal neighbours.
        grams, _ = torch.sort(grams, dim=1)
        first = torch.ones_like(grams, dtype=torch.bool)
        first[:, 1:] = grams[:, 1:] != grams[:, :-1]
        rows, columns = torch.nonzero(first, as_tuple=True)
        distinct_grams = grams[rows, columns]  # [N] distinct n-grams of each message
        message_values = values[rows]  # [N, O]
        columns_count = values.shape[1]

        counts = self._anywhere[order]
        if counts.strategy in ("dense", "keys"):
            keys = rearrange(distinct_grams, "n -> n 1") * self._total_values + message_values
            counts.add(rearrange(keys, "n o -> (n o)"))
        else:
            gram_words = distinct_grams if vocabulary is None else vocabulary[distinct_grams]
            gram_words = gram_words.reshape(distinct_grams.shape[0], -1)
            counts.add(
                torch.cat(
                    [
                        repeat(gram_words, "n w -> (n o) w", o=columns_count),
                        rearrange(message_values, "n o -> (n o) 1"),
                    ],
                    dim=1,
                )
            )

    def _count_at_start(self, order: int, words: torch.Tensor, values: torch.Tensor, starts: int) -> None:
        batch, _, width = words.shape
        counts = self._at_start[order]
        start_index = torch.arange(starts, device=self.device)
        columns_count = values.shape[1]
        if counts.strategy in ("dense", "keys"):
            gram_space = self.alphabet_size**order
            cells = start_index * gram_space + words[:, :, 0]  # [B, K]
            keys = rearrange(cells, "b k -> b k 1") * self._total_values + rearrange(values, "b o -> b 1 o")
            counts.add(rearrange(keys, "b k o -> (b k o)"))
        else:
            rows = torch.cat(
                [
                    repeat(start_index, "k -> b k o 1", b=batch, o=columns_count),
                    repeat(words, "b k w -> b k o w", o=columns_count),
                    repeat(values, "b o -> b k o 1", k=starts),
                ],
                dim=3,
            )
            counts.add(rearrange(rows, "b k o w -> (b k o) w"))

    def merge(self, other: "NgramCounter") -> "NgramCounter":
        """Add the counts of ``other`` (same shape parameters) into this counter."""
        theirs = (other.positions, other.alphabet_size, other.value_counts, other.orders, other.positional)
        mine = (self.positions, self.alphabet_size, self.value_counts, self.orders, self.positional)
        if theirs != mine:
            raise ValueError(f"cannot merge n-gram counters of different shapes: {theirs} and {mine}")
        self.n_samples += other.n_samples
        self._value_totals += other._value_totals.to(self.device)
        for order in self.orders:
            self._anywhere[order].merge(other._anywhere[order])
            if self.positional:
                self._at_start[order].merge(other._at_start[order])
        return self

    # -- results -----------------------------------------------------------------

    def _split(self, order: int, items: tuple[torch.Tensor, torch.Tensor], positional: bool):
        """Decode counted keys into (starts, gram words, concatenated value index, counts)."""
        keys, counts = items
        if keys.dim() == 1:
            value = keys % self._total_values
            cell = torch.div(keys, self._total_values, rounding_mode="floor")
            gram_space = self.alphabet_size**order
            start = torch.div(cell, gram_space, rounding_mode="floor") if positional else torch.zeros_like(cell)
            words = rearrange(cell % gram_space, "n -> n 1")
        else:
            value = keys[:, -1]
            start = keys[:, 0] if positional else torch.zeros_like(value)
            words = keys[:, 1:-1] if positional else keys[:, :-1]
        return start, words, value, counts

    def _tables(self, order: int, items, positional: bool) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Return per observation column (starts [G], n-grams [G, order], joint counts [G, L])."""
        start, words, value, counts = self._split(order, items, positional)
        # Each (start, n-gram) becomes one row shared by every observation column.
        group_keys = torch.cat([rearrange(start, "n -> n 1"), words], dim=1)
        unique, inverse = torch.unique(group_keys, dim=0, sorted=True, return_inverse=True)
        rows = unique.shape[0]
        joint = torch.zeros(rows * self._total_values, dtype=torch.int64, device=self.device)
        joint.index_add_(0, inverse * self._total_values + value, counts)
        joint = rearrange(joint, "(g v) -> g v", v=self._total_values)
        grams = unpack_rows(unique[:, 1:], order, self.alphabet_size)
        tables = []
        for offset, size in zip(self._offsets.tolist(), self.value_counts):
            tables.append((unique[:, 0], grams, joint[:, offset : offset + size]))
        return tables

    def results(self) -> tuple[list[dict[int, NgramNPMI]], list[dict[int, PositionalNgramNPMI]]]:
        """Return NPMI tables per observation column: non-positional and positional, by length.

        The positional list is empty for a counter built with ``positional=False``.
        """
        columns = len(self.value_counts)
        anywhere: list[dict[int, NgramNPMI]] = [{} for _ in range(columns)]
        at_start: list[dict[int, PositionalNgramNPMI]] = [{} for _ in range(columns)] if self.positional else []
        total = self.n_samples
        value_totals = [self._value_totals[offset : offset + size] for offset, size in zip(self._offsets.tolist(), self.value_counts)]
        for order in self.orders:
            for column, (_, grams, joint) in enumerate(self._tables(order, self._anywhere[order].items(), positional=False)):
                # Each message has one value per column, so the joint counts of an n-gram
                # add up to the number of messages that contain it.
                message_counts = joint.sum(dim=1)
                anywhere[column][order] = NgramNPMI(
                    codes=grams.cpu().numpy(),
                    counts=joint.cpu().numpy(),
                    npmi=npmi_from_marginals(joint, message_counts, value_totals[column], total).cpu().numpy(),
                    message_counts=message_counts.cpu().numpy(),
                )
            if not self.positional:
                continue
            for column, (starts, grams, joint) in enumerate(self._tables(order, self._at_start[order].items(), positional=True)):
                at_start[column][order] = PositionalNgramNPMI(
                    starts=starts.cpu().numpy(),
                    codes=grams.cpu().numpy(),
                    counts=joint.cpu().numpy(),
                    npmi=npmi_from_marginals(joint, joint.sum(dim=1), value_totals[column], total).cpu().numpy(),
                )
        return anywhere, at_start
