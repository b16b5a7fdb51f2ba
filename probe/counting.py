"""Tensor counters that turn integer codes and labels into joint counts.

Public names:
    JointCounter   streams (codes, labels) batches and accumulates whole-code and
                   positional joint counts on a torch device; mergeable.
    pack_rows      packs code rows into int64 words without collisions.
    unpack_rows    inverts ``pack_rows``.
    distinct_row_index  maps each code row to its index among sorted distinct rows.

Every count is int64 and nothing on the data path loops over samples or over
distinct codes in Python. The counter's memory grows with the number of distinct
(code, label) pairs, never with the number of samples.

Example::

    counter = JointCounter(positions=3, alphabet_size=26, n_labels=10)
    for codes, labels in batches:          # codes [B, 3], labels [B]
        counter.update(codes, labels)
    distinct, joint = counter.whole()      # [U, 3], [1, U, 10]
"""

from __future__ import annotations


import torch
from einops import rearrange, repeat

__all__ = ["JointCounter", "pack_rows", "unpack_rows", "symbols_per_word", "distinct_row_index"]

# A dense count table is used while the joint key space has at most this many cells
# (32 MiB of int64); beyond it the counter keeps sorted sparse keys.
DENSE_MAX_CELLS = 1 << 22
# Sparse keys are merged into the sorted state once this many (2 MiB) are pending, so the
# pending buffer stays small beside the state: peak memory of a run over 600,000 samples
# was 8.6% above that over 60,000 with this value, and 40% above with 1 << 21.
SPARSE_FLUSH_KEYS = 1 << 18
INT64_MAX = (1 << 63) - 1


def symbols_per_word(alphabet_size: int) -> int:
    """Return how many symbols of an alphabet fit in one non-negative int64 word."""
    if alphabet_size < 1:
        raise ValueError(f"alphabet_size must be at least 1, got {alphabet_size}")
    if alphabet_size == 1:
        return 63
    count = 1
    while alphabet_size ** (count + 1) <= INT64_MAX + 1:
        count += 1
    return count


def _word_layout(positions: int, alphabet_size: int) -> list[tuple[int, int]]:
    """Split positions into (start, stop) runs that each fit one int64 word."""
    per_word = symbols_per_word(alphabet_size)
    return [(start, min(start + per_word, positions)) for start in range(0, positions, per_word)]


def pack_rows(codes: torch.Tensor, alphabet_size: int) -> torch.Tensor:
    """Pack code rows [n, P] into int64 words [n, W] by mixed radix.

    Position 0 is the most significant digit of word 0, so sorting the packed rows
    lexicographically sorts the code rows lexicographically. ``W`` is 1 while
    ``alphabet_size ** P`` fits in int64.
    """
    codes = codes.long()
    words = []
    for start, stop in _word_layout(codes.shape[1], alphabet_size):
        width = stop - start
        weights = alphabet_size ** torch.arange(width - 1, -1, -1, device=codes.device, dtype=torch.int64)
        words.append((codes[:, start:stop] * weights).sum(dim=1))
    if not words:
        return torch.zeros((codes.shape[0], 1), dtype=torch.int64, device=codes.device)
    return torch.stack(words, dim=1)


def unpack_rows(words: torch.Tensor, positions: int, alphabet_size: int) -> torch.Tensor:
    """Invert ``pack_rows``: int64 words [n, W] back to code rows [n, P]."""
    columns = []
    for index, (start, stop) in enumerate(_word_layout(positions, alphabet_size)):
        width = stop - start
        weights = alphabet_size ** torch.arange(width - 1, -1, -1, device=words.device, dtype=torch.int64)
        columns.append(torch.div(words[:, index : index + 1], weights, rounding_mode="floor") % alphabet_size)
    if not columns:
        return torch.zeros((words.shape[0], 0), dtype=torch.int64, device=words.device)
    return torch.cat(columns, dim=1)


def distinct_row_index(codes: torch.Tensor, distinct: torch.Tensor, alphabet_size: int) -> torch.Tensor:
    """Return the index [n] of each code row [n, P] among ``distinct`` rows [U, P].

    ``distinct`` must be sorted lexicographically without repeats, as
    ``JointCounter.whole`` returns it. Raises ValueError when a row is not among them.
    """
    codes = torch.as_tensor(codes).to(torch.int64)
    distinct = torch.as_tensor(distinct).to(codes.device, torch.int64)
    if codes.dim() != 2 or distinct.dim() != 2 or codes.shape[1] != distinct.shape[1]:
        raise ValueError(f"codes {list(codes.shape)} and distinct rows {list(distinct.shape)} must both be [rows, positions] with equal positions")
    if codes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=codes.device)
    words = pack_rows(codes, alphabet_size)
    distinct_words = pack_rows(distinct, alphabet_size)
    if words.shape[1] == 1:
        index = torch.searchsorted(distinct_words[:, 0].contiguous(), words[:, 0].contiguous())
        found = index < distinct_words.shape[0]
        found[found.clone()] = distinct_words[index[found], 0] == words[found, 0]
    else:
        # Rows of several words have no 1-D order to search, so sort both sets together.
        together, inverse = torch.unique(torch.cat([distinct_words, words]), sorted=True, return_inverse=True, dim=0)
        index = inverse[distinct_words.shape[0] :]
        from_distinct = torch.zeros(together.shape[0], dtype=torch.bool, device=codes.device)
        from_distinct[inverse[: distinct_words.shape[0]]] = True
        found = from_distinct[index]
    if not bool(found.all()):
        missing = codes[torch.nonzero(~found)[0, 0]].tolist()
        raise ValueError(f"code row {missing} is not among the {distinct.shape[0]} distinct rows; count the codes and the distinct rows from the same data")
    return index


def _accumulate(table: torch.Tensor, index: torch.Tensor) -> None:
    """Add one to ``table`` at every entry of ``index`` (duplicates add up)."""
    if index.numel() == 0:
        return
    if index.numel() * 8 >= table.numel():
        table += torch.bincount(index, minlength=table.numel())
    else:
        table.index_add_(0, index, torch.ones_like(index))


class JointCounter:
    """Joint counts of (code row, label) and of (position, symbol, label).

    ``labels`` passed to ``update`` are integers in [0, n_labels). With ``columns``
    > 1 each sample carries several label columns (for example the real labels and
    shuffled copies) and the whole-code counts get one slice per column. Positional
    counts use column 0 only.

    Three strategies keep the whole-code state small and exact:
    dense      a bincount table while codes x columns x labels has few cells;
    keys       sorted unique int64 keys (mixed radix) while the key space fits int64;
    rows       unique over packed rows of several int64 words otherwise.
    """

    def __init__(
        self,
        positions: int,
        alphabet_size: int,
        n_labels: int,
        columns: int = 1,
        device: str | torch.device = "cpu",
        positional: bool = True,
    ):
        if positions < 1:
            raise ValueError(f"positions must be at least 1, got {positions}")
        if alphabet_size < 1:
            raise ValueError(f"alphabet_size must be at least 1, got {alphabet_size}")
        if n_labels < 1:
            raise ValueError(f"n_labels must be at least 1, got {n_labels}")
        if columns < 1:
            raise ValueError(f"columns must be at least 1, got {columns}")
        self.positions = positions
        self.alphabet_size = alphabet_size
        self.n_labels = n_labels
        self.columns = columns
        self.device = torch.device(device)
        self.n_samples = 0

        self._words = len(_word_layout(positions, alphabet_size))
        key_space = alphabet_size**positions * columns * n_labels if self._words == 1 else None
        if key_space is not None and key_space <= DENSE_MAX_CELLS:
            self.strategy = "dense"
            self._dense = torch.zeros(key_space, dtype=torch.int64, device=self.device)
        elif key_space is not None and key_space <= INT64_MAX + 1:
            self.strategy = "keys"
        else:
            self.strategy = "rows"
        self._state_keys = torch.zeros((0,) if self.strategy == "keys" else (0, self._words + 2), dtype=torch.int64, device=self.device)
        self._state_counts = torch.zeros(0, dtype=torch.int64, device=self.device)
        self._pending_keys: list[torch.Tensor] = []
        self._pending_counts: list[torch.Tensor] = []
        self._pending_size = 0

        self._positional = None
        if positional:
            cells = positions * alphabet_size * n_labels
            self._positional = torch.zeros(cells, dtype=torch.int64, device=self.device)

    # -- streaming ---------------------------------------------------------------

    def update(self, codes: torch.Tensor, labels: torch.Tensor) -> None:
        """Count one batch: ``codes`` [B, P] integers, ``labels`` [B] or [B, columns]."""
        codes = torch.as_tensor(codes).to(self.device, torch.int64)
        labels = torch.as_tensor(labels).to(self.device, torch.int64)
        if labels.dim() == 1:
            labels = rearrange(labels, "b -> b 1")
        if codes.dim() != 2 or codes.shape[1] != self.positions:
            raise ValueError(f"codes must have shape [batch, {self.positions}], got {list(codes.shape)}")
        if labels.shape != (codes.shape[0], self.columns):
            raise ValueError(f"labels must have shape [{codes.shape[0]}, {self.columns}], got {list(labels.shape)}")
        if codes.shape[0] == 0:
            return
        self.n_samples += codes.shape[0]

        words = pack_rows(codes, self.alphabet_size)
        column_index = torch.arange(self.columns, device=self.device)
        if self.strategy in ("dense", "keys"):
            # key = ((code * columns) + column) * n_labels + label
            keys = (rearrange(words[:, 0], "b -> b 1") * self.columns + column_index) * self.n_labels + labels
            keys = rearrange(keys, "b r -> (b r)")
            if self.strategy == "dense":
                _accumulate(self._dense, keys)
            else:
                self._add_pending(keys)
        else:
            rows = torch.cat(
                [
                    repeat(words, "b w -> (b r) w", r=self.columns),
                    rearrange(repeat(column_index, "r -> b r", b=codes.shape[0]), "b r -> (b r) 1"),
                    rearrange(labels, "b r -> (b r) 1"),
                ],
                dim=1,
            )
            self._add_pending(rows)

        if self._positional is not None:
            position_index = torch.arange(self.positions, device=self.device)
            cells = (position_index * self.alphabet_size + codes) * self.n_labels + labels[:, :1]
            _accumulate(self._positional, rearrange(cells, "b p -> (b p)"))

    def _add_pending(self, keys: torch.Tensor, counts: torch.Tensor | None = None) -> None:
        if counts is None:
            counts = torch.ones(keys.shape[0], dtype=torch.int64, device=self.device)
        self._pending_keys.append(keys)
        self._pending_counts.append(counts)
        self._pending_size += keys.shape[0]
        if self._pending_size >= max(SPARSE_FLUSH_KEYS, self._state_counts.numel()):
            self._flush()

    def _flush(self) -> None:
        if not self._pending_keys:
            return
        keys = torch.cat([self._state_keys, *self._pending_keys], dim=0)
        counts = torch.cat([self._state_counts, *self._pending_counts])
        dim = None if self.strategy == "keys" else 0
        unique, inverse = torch.unique(keys, sorted=True, return_inverse=True, dim=dim)
        merged = torch.zeros(unique.shape[0], dtype=torch.int64, device=self.device)
        merged.index_add_(0, inverse, counts)
        self._state_keys, self._state_counts = unique, merged
        self._pending_keys, self._pending_counts, self._pending_size = [], [], 0

    def merge(self, other: "JointCounter") -> "JointCounter":
        """Add the counts of ``other`` (same shape parameters) into this counter."""
        theirs = (other.positions, other.alphabet_size, other.n_labels, other.columns, other.strategy)
        mine = (self.positions, self.alphabet_size, self.n_labels, self.columns, self.strategy)
        if theirs != mine:
            raise ValueError(f"cannot merge counters of different shapes: {theirs} and {mine}")
        self.n_samples += other.n_samples
        if self.strategy == "dense":
            self._dense += other._dense.to(self.device)
        else:
            other._flush()
            self._add_pending(other._state_keys.to(self.device), other._state_counts.to(self.device))
        if (self._positional is None) != (other._positional is None):
            raise ValueError("cannot merge a counter with positional counts and one without")
        if self._positional is not None:
            self._positional += other._positional.to(self.device)
        return self

    # -- results -----------------------------------------------------------------

    def whole(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return distinct code rows [U, P] (sorted) and joint counts [columns, U, L].

        Code rows that never occurred are absent; all columns share the same rows.
        """
        L, R = self.n_labels, self.columns
        if self.strategy == "dense":
            table = rearrange(self._dense, "(k r l) -> k r l", r=R, l=L)
            seen = table.sum(dim=(1, 2)) > 0
            code_keys = torch.nonzero(seen).flatten()
            counts = rearrange(table[code_keys], "u r l -> r u l")
            rows = unpack_rows(rearrange(code_keys, "u -> u 1"), self.positions, self.alphabet_size)
            return rows, counts.contiguous()

        self._flush()
        if self.strategy == "keys":
            label = self._state_keys % L
            column = torch.div(self._state_keys, L, rounding_mode="floor") % R
            code_keys = torch.div(self._state_keys, L * R, rounding_mode="floor")
            unique_keys, inverse = torch.unique(code_keys, sorted=True, return_inverse=True)
            unique_words = rearrange(unique_keys, "u -> u 1")
        else:
            label = self._state_keys[:, -1]
            column = self._state_keys[:, -2]
            unique_words, inverse = torch.unique(self._state_keys[:, :-2], sorted=True, return_inverse=True, dim=0)
        U = unique_words.shape[0]
        counts = torch.zeros(R * U * L, dtype=torch.int64, device=self.device)
        counts.index_add_(0, (column * U + inverse) * L + label, self._state_counts)
        rows = unpack_rows(unique_words, self.positions, self.alphabet_size)
        return rows, rearrange(counts, "(r u l) -> r u l", r=R, l=L)

    def positional(self) -> torch.Tensor:
        """Return positional joint counts [P, S, L] for label column 0."""
        if self._positional is None:
            raise RuntimeError("this counter was built with positional=False")
        return rearrange(self._positional, "(p s l) -> p s l", p=self.positions, s=self.alphabet_size)

