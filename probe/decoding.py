"""Held-out decoding: how well a layer's codes, or its raw activations, predict the labels.

Public names:
    holdout_mask          a seeded split of n samples into a fit part and a held-out part
    CodeDecoding          held-out accuracies of the code decoders beside chance
    decode_codes          fit the whole-code and positional decoders on the fit part and
                          score them on the held-out part
    ActivationSample      a seeded, size-capped sample of one layer's raw activations
    linear_probe_accuracy held-out accuracy of a logistic regression on raw activations
    DEFAULT_HOLDOUT, LINEAR_PROBE_MAX_VALUES, LINEAR_PROBE_MAX_UNITS

The whole-code decoder predicts the fit part's majority label of a code; codes never
seen in the fit part fall back to the positional decoder, a naive Bayes model
log p(y) + sum over positions of log p(symbol at p | y) with add-one smoothing.
Plug-in MI can be high for codes that never recur; held-out accuracy cannot.

Example::

    heldout = holdout_mask(len(labels), 0.2, seed=0)
    decoding = decode_codes(lambda: [(0, codes)], ids, labels, heldout, positions=P,
                            alphabet_size=S, n_codes=U, n_labels=L)
    decoding.heldout_accuracy, decoding.chance_accuracy
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange, reduce

__all__ = [
    "holdout_mask",
    "CodeDecoding",
    "decode_codes",
    "ActivationSample",
    "linear_probe_accuracy",
    "DEFAULT_HOLDOUT",
    "LINEAR_PROBE_MAX_VALUES",
    "LINEAR_PROBE_MAX_UNITS",
]

logger = logging.getLogger(__name__)

DEFAULT_HOLDOUT = 0.2
# The linear probe keeps at most this many activation values per layer (32 MiB of
# float32): every sample while samples x units fit, else a seeded random subset.
LINEAR_PROBE_MAX_VALUES = 1 << 23
# Wider layers (an unpooled conv map) keep a seeded random subset of this many units,
# so that the sample cap still leaves at least 4,096 samples.
LINEAR_PROBE_MAX_UNITS = 2048
# At most this many samples per layer, so memory and time stay flat as n grows; 20,000
# samples put the held-out accuracy's standard error below 1% at a 0.2 holdout.
LINEAR_PROBE_MAX_SAMPLES = 20_000
# Full-batch L-BFGS on the L2-penalised cross-entropy: a convex problem, so a few hundred
# iterations reach the optimum without the per-step overhead of mini-batch training.
LINEAR_PROBE_ITERATIONS = 200
LINEAR_PROBE_L2 = 1e-4
# Rows x positions x labels of log-probabilities gathered at once by the positional decoder.
PREDICT_CELLS = 1 << 22


def holdout_mask(n_samples: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Return a bool mask (n,) that is True for the round(fraction * n) held-out samples.

    The held-out samples are a seeded uniform draw, so the split does not follow
    the data order. Both parts keep at least one sample.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"invalid holdout fraction {fraction}; it must lie strictly between 0 and 1, for example 0.2")
    held = int(round(fraction * n_samples))
    if held < 1 or held > n_samples - 1:
        raise ValueError(f"holdout fraction {fraction} of {n_samples} samples leaves an empty part; use more samples or another fraction")
    mask = np.zeros(n_samples, dtype=bool)
    mask[np.random.default_rng(seed).choice(n_samples, size=held, replace=False)] = True
    return mask


@dataclass
class CodeDecoding:
    """Held-out accuracies of the code decoders (fractions of held-out samples)."""

    heldout_accuracy: float  # whole code: fit-part majority label, positional fallback for unseen codes
    positional_accuracy: float  # the positional naive Bayes decoder alone
    chance_accuracy: float  # rate of the most frequent label in the held-out part
    unseen_fraction: float  # held-out samples whose code never occurs in the fit part
    fit_samples: int
    heldout_samples: int


def decode_codes(
    chunks: Callable[[], Iterable[tuple[int, torch.Tensor]]],
    ids,
    labels,
    heldout,
    positions: int,
    alphabet_size: int,
    n_codes: int,
    n_labels: int,
    device: str | torch.device = "cpu",
) -> CodeDecoding:
    """Fit the code decoders on the samples where ``heldout`` is False and score them on the rest.

    ``chunks()`` returns an iterable of (first sample index, codes [B, P]) that covers
    the samples in order. It is called twice (fit, then predict), so codes stored in
    a file are read in pieces and never held whole. ``ids`` [n] gives each sample's
    distinct code index and ``labels`` [n] its encoded label.
    """
    ids = torch.as_tensor(np.asarray(ids)).to(device, torch.int64)
    labels = torch.as_tensor(np.asarray(labels)).to(device, torch.int64)
    heldout = torch.as_tensor(np.asarray(heldout, dtype=bool)).to(device)
    fit = ~heldout
    if not bool(fit.any()) or not bool(heldout.any()):
        raise ValueError("both the fit part and the held-out part need at least one sample")

    whole = torch.bincount(ids[fit] * n_labels + labels[fit], minlength=n_codes * n_labels)
    whole = rearrange(whole, "(u l) -> u l", l=n_labels)
    seen = whole.sum(dim=1) > 0
    majority = whole.argmax(dim=1)  # ties go to the smallest label index

    symbol_cells = positions * alphabet_size * n_labels
    joint = torch.zeros(symbol_cells, dtype=torch.int64, device=device)
    position_index = torch.arange(positions, device=device)
    for start, codes in chunks():
        codes = torch.as_tensor(codes).to(device, torch.int64)
        rows = fit[start : start + codes.shape[0]]
        cells = (position_index * alphabet_size + codes[rows]) * n_labels + rearrange(labels[start : start + codes.shape[0]][rows], "b -> b 1")
        joint += torch.bincount(cells.flatten(), minlength=symbol_cells)
    label_counts = torch.bincount(labels[fit], minlength=n_labels).to(torch.float64)
    joint = rearrange(joint, "(p s l) -> (p s) l", p=positions, l=n_labels).to(torch.float64)
    log_likelihood = torch.log(joint + 1.0) - torch.log(label_counts + alphabet_size)
    log_prior = torch.log(label_counts + 1.0) - math.log(float(fit.sum()) + n_labels)

    correct_whole = correct_positional = unseen = 0
    per_block = max(1, PREDICT_CELLS // (positions * n_labels))
    for start, codes in chunks():
        codes = torch.as_tensor(codes).to(device, torch.int64)
        stop = start + codes.shape[0]
        rows = heldout[start:stop]
        held_codes, held_ids, held_labels = codes[rows], ids[start:stop][rows], labels[start:stop][rows]
        for first in range(0, held_codes.shape[0], per_block):
            block = held_codes[first : first + per_block]
            scores = reduce(log_likelihood[position_index * alphabet_size + block], "b p l -> b l", "sum") + log_prior
            positional = scores.argmax(dim=1)
            block_ids, block_labels = held_ids[first : first + per_block], held_labels[first : first + per_block]
            known = seen[block_ids]
            predicted = torch.where(known, majority[block_ids], positional)
            correct_whole += int((predicted == block_labels).sum())
            correct_positional += int((positional == block_labels).sum())
            unseen += int((~known).sum())

    held_total = int(heldout.sum())
    chance = float(torch.bincount(labels[heldout], minlength=n_labels).max()) / held_total
    return CodeDecoding(
        heldout_accuracy=correct_whole / held_total,
        positional_accuracy=correct_positional / held_total,
        chance_accuracy=chance,
        unseen_fraction=unseen / held_total,
        fit_samples=int(fit.sum()),
        heldout_samples=held_total,
    )


class ActivationSample:
    """A seeded sample of one layer's raw activations, capped in memory, for the linear probe.

    ``add`` takes each batch [B, ...] with the index of its first sample. The sample
    keeps the rows of the chosen samples and the chosen units as float32 on the CPU.
    At most ``max_values`` values are kept: all n samples when n x units fit, else a
    seeded random subset of round(max_values / units) samples; a layer with more than
    ``max_units`` units keeps a seeded random subset of them.

    Example::

        sample = ActivationSample(n_samples=len(images), seed=0)
        for start, activations in batches:
            sample.add(start, activations)
        features, indices = sample.features()     # [m, units], [m] sample indices
    """

    def __init__(self, n_samples: int, seed: int = 0, max_values: int = LINEAR_PROBE_MAX_VALUES, max_units: int = LINEAR_PROBE_MAX_UNITS):
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        self.n_samples = n_samples
        self.seed = seed
        self.max_values = max_values
        self.max_units = max_units
        self.units: int | None = None
        self.layer_units: int | None = None
        self._unit_index: torch.Tensor | None = None
        self._row_of_sample: torch.Tensor | None = None
        self._indices: torch.Tensor | None = None
        self._values: torch.Tensor | None = None
        self._filled: torch.Tensor | None = None

    def _choose(self, layer_units: int) -> None:
        rng = np.random.default_rng(self.seed)
        self.layer_units = layer_units
        self.units = min(layer_units, self.max_units)
        if self.units < layer_units:
            self._unit_index = torch.from_numpy(np.sort(rng.choice(layer_units, size=self.units, replace=False)))
        kept = min(self.n_samples, LINEAR_PROBE_MAX_SAMPLES, max(1, self.max_values // self.units))
        indices = np.arange(self.n_samples) if kept == self.n_samples else np.sort(rng.choice(self.n_samples, size=kept, replace=False))
        self._indices = torch.from_numpy(indices.astype(np.int64))
        self._row_of_sample = torch.full((self.n_samples,), -1, dtype=torch.int64)
        self._row_of_sample[self._indices] = torch.arange(kept)
        self._values = torch.zeros((kept, self.units), dtype=torch.float32)
        self._filled = torch.zeros(kept, dtype=torch.bool)

    def add(self, start: int, activations: torch.Tensor) -> None:
        """Keep the chosen rows of a batch [B, ...] whose first sample has index ``start``."""
        flat = rearrange(activations.detach(), "b ... -> b (...)") if activations.dim() > 1 else rearrange(activations.detach(), "b -> b 1")
        if self.units is None:
            self._choose(flat.shape[1])
        elif flat.shape[1] != self.layer_units:
            raise ValueError(f"batch has {flat.shape[1]} units but earlier batches had {self.layer_units}")
        rows = self._row_of_sample[start : start + flat.shape[0]]
        chosen = rows >= 0
        if not bool(chosen.any()):
            return
        picked = flat[chosen.to(flat.device)]
        if self._unit_index is not None:
            picked = picked[:, self._unit_index.to(flat.device)]
        self._values[rows[chosen]] = picked.to("cpu", torch.float32)
        self._filled[rows[chosen]] = True

    def features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the kept activations [m, units] and their sample indices [m] (only rows that were added)."""
        if self._values is None:
            return torch.zeros((0, 0), dtype=torch.float32), torch.zeros(0, dtype=torch.int64)
        return self._values[self._filled], self._indices[self._filled]


def linear_probe_accuracy(
    features: torch.Tensor,
    labels,
    heldout,
    n_labels: int,
    seed: int = 0,
    iterations: int = LINEAR_PROBE_ITERATIONS,
    device: str | torch.device = "cpu",
) -> float:
    """Fit a logistic regression on the fit rows and return its held-out accuracy.

    Features are standardised with the fit rows' mean and standard deviation. The
    weights start at zero and full-batch L-BFGS minimises the mean cross-entropy plus
    ``LINEAR_PROBE_L2 / 2`` times the squared weights, so the result does not depend on
    a sample order. ``seed`` is unused and kept for the callers' signature.
    Returns NaN when either part has no rows.
    """
    features = torch.as_tensor(features).to(device, torch.float32)
    labels = torch.as_tensor(np.asarray(labels)).to(device, torch.int64)
    heldout = torch.as_tensor(np.asarray(heldout, dtype=bool)).to(device)
    fit = ~heldout
    if features.shape[0] != labels.shape[0] or labels.shape[0] != heldout.shape[0]:
        raise ValueError(f"features ({features.shape[0]} rows), labels ({labels.shape[0]}) and heldout ({heldout.shape[0]}) must have equal length")
    if not bool(fit.any()) or not bool(heldout.any()):
        return float("nan")

    mean = features[fit].mean(dim=0)
    scale = features[fit].std(dim=0, unbiased=False).clamp_min(1e-6)
    inputs = (features - mean) / scale
    train_inputs, train_labels = inputs[fit], labels[fit]

    weight = torch.zeros((inputs.shape[1], n_labels), device=device, requires_grad=True)
    bias = torch.zeros(n_labels, device=device, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=iterations, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(train_inputs @ weight + bias, train_labels)
        loss = loss + 0.5 * LINEAR_PROBE_L2 * (weight**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        predicted = (inputs[heldout] @ weight + bias).argmax(dim=1)
    return float((predicted == labels[heldout]).float().mean())
