"""Quantisers: continuous activations to integer codes [batch, positions].

Public names:
    parse_spec            parse "argmax", "sign", "quantile:B" or "uniform:B" into a Quantizer
    Quantizer             base class: ``fit`` (calibration), ``__call__`` (codes), state for storage
    ArgmaxQuantizer       a categorical bottleneck [B, N, K] -> codes [B, N] over K symbols
    SignQuantizer         1 where the activation is > 0, else 0
    QuantileQuantizer     per unit, B equal-frequency bins from calibration samples
    UniformQuantizer      per unit, B equal-width bins over the calibrated range
    pool                  reduce conv maps [B, C, H, W] by mean, max or none
    code_dtype            the smallest unsigned numpy dtype that holds an alphabet
    NonFiniteActivationError   raised when a layer outputs NaN or inf

Example::

    quantizer = parse_spec("quantile:4")
    quantizer.fit(pool(calibration_activations, "mean"))
    codes = quantizer(pool(activations, "mean"))      # [B, C] int64 in 0..3

Bins are right-closed: a value equal to an edge goes to the lower bin, so
``quantile:2`` gives 1 exactly when a unit is above its calibrated median.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange, reduce

__all__ = [
    "parse_spec",
    "Quantizer",
    "ArgmaxQuantizer",
    "SignQuantizer",
    "QuantileQuantizer",
    "UniformQuantizer",
    "pool",
    "flatten_units",
    "code_dtype",
    "NonFiniteActivationError",
    "POOLING_CHOICES",
]

POOLING_CHOICES = ("mean", "max", "none")


class NonFiniteActivationError(ValueError):
    """A layer produced NaN or inf activations, which cannot be binned."""


def code_dtype(alphabet_size: int) -> np.dtype:
    """Return the smallest unsigned integer dtype that fits symbols 0..alphabet_size-1."""
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if alphabet_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"alphabet of {alphabet_size} symbols does not fit in uint64")


def pool(activations: torch.Tensor, method: str) -> torch.Tensor:
    """Reduce a conv map [B, C, H, W] to [B, C] (mean, max) or [B, C*H*W] (none).

    Other shapes pass through unchanged.
    """
    if method not in POOLING_CHOICES:
        raise ValueError(f"invalid pooling {method!r}; choose one of {', '.join(POOLING_CHOICES)}")
    if activations.dim() != 4 or method == "none":
        return activations
    return reduce(activations, "b c h w -> b c", method)


def flatten_units(activations: torch.Tensor) -> torch.Tensor:
    """Flatten every axis after the batch axis: [B, ...] -> [B, units]."""
    if activations.dim() == 1:
        return rearrange(activations, "b -> b 1")
    return rearrange(activations, "b ... -> b (...)")


def check_finite(activations: torch.Tensor, layer: str, first_sample: int) -> None:
    """Raise NonFiniteActivationError naming the layer and the samples with NaN or inf."""
    # The sum is finite whenever every element is, and one reduction is far cheaper than
    # an element-wise mask; only a non-finite sum (NaN, inf or overflow) needs the mask.
    if not activations.is_floating_point() or bool(torch.isfinite(activations.sum())):
        return
    finite = torch.isfinite(activations)
    if bool(finite.all()):
        return
    bad = torch.nonzero(~rearrange(finite, "b ... -> b (...)").all(dim=1)).flatten()
    first, last = first_sample + int(bad[0]), first_sample + int(bad[-1])
    raise NonFiniteActivationError(
        f"layer {layer!r} produced NaN or inf activations in {len(bad)} sample(s) between index {first} and {last}; "
        "check the model and its inputs for these samples, or probe another layer"
    )


class Quantizer:
    """Turn activations into integer codes; subclasses set ``name`` and ``alphabet_size``."""

    name = ""
    needs_calibration = False
    alphabet_size = 0

    @property
    def spec(self) -> str:
        """The text form accepted by ``parse_spec``."""
        return self.name

    @property
    def fitted(self) -> bool:
        """Whether the quantiser can produce codes (calibrated, or needs no calibration)."""
        return not self.needs_calibration

    def fit(self, activations: torch.Tensor) -> None:
        """Calibrate from activations [n, units]; a no-op for quantisers without state."""

    def load_edges(self, edges: np.ndarray | None) -> None:
        """Restore calibration from stored edges (see ``edges``); a no-op without state."""

    def edges(self) -> np.ndarray | None:
        """Return bin edges or thresholds [units, alphabet_size - 1] for storage, or None."""
        return None

    def __call__(self, activations: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ArgmaxQuantizer(Quantizer):
    """Argmax per categorical variable: [B, N, K] -> [B, N] over K symbols."""

    name = "argmax"

    def __init__(self, categories: int | None = None):
        self.alphabet_size = categories or 0

    def __call__(self, activations: torch.Tensor) -> torch.Tensor:
        if activations.dim() == 2:
            activations = rearrange(activations, "b k -> b 1 k")
        if activations.dim() != 3:
            raise ValueError(
                f"argmax expects activations of shape [batch, variables, categories], got {list(activations.shape)}; "
                "use quantile:B or sign for other layers"
            )
        self.alphabet_size = activations.shape[-1]
        return activations.argmax(dim=-1)


class SignQuantizer(Quantizer):
    """1 where the activation is > 0, else 0."""

    name = "sign"
    alphabet_size = 2

    def __init__(self):
        self._units = 0

    def edges(self) -> np.ndarray | None:
        return np.zeros((self._units, 1))

    def __call__(self, activations: torch.Tensor) -> torch.Tensor:
        values = flatten_units(activations)
        self._units = values.shape[1]
        return (values > 0).long()


class _BinQuantizer(Quantizer):
    needs_calibration = True

    def __init__(self, bins: int):
        if bins < 2:
            raise ValueError(f"{self.name} needs at least 2 bins, got {bins}")
        self.bins = bins
        self.alphabet_size = bins
        self._edges: torch.Tensor | None = None  # [units, bins - 1]

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.bins}"

    def edges(self) -> np.ndarray | None:
        return None if self._edges is None else self._edges.cpu().numpy()

    @property
    def fitted(self) -> bool:
        return self._edges is not None

    def load_edges(self, edges: np.ndarray | None) -> None:
        if edges is None or edges.ndim != 2 or edges.shape[1] != self.bins - 1:
            shape = None if edges is None else edges.shape
            raise ValueError(f"stored edges of shape {shape} do not fit {self.spec}, which needs [units, {self.bins - 1}]")
        self._edges = torch.from_numpy(np.asarray(edges, dtype=np.float64))

    def _compute_edges(self, activations: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fit(self, activations: torch.Tensor) -> None:
        activations = flatten_units(activations).to(torch.float64)
        if activations.shape[0] == 0:
            raise ValueError(f"{self.spec} needs at least one calibration sample")
        self._edges = self._compute_edges(activations)

    def __call__(self, activations: torch.Tensor) -> torch.Tensor:
        if self._edges is None:
            raise RuntimeError(f"{self.spec} quantiser used before fit(); run a calibration pass first")
        values = flatten_units(activations)
        if values.shape[1] != self._edges.shape[0]:
            raise ValueError(f"{self.spec} was calibrated on {self._edges.shape[0]} units but got {values.shape[1]}")
        edges = self._edges.to(values.device, torch.float64)
        # searchsorted over each unit's edges: right=False sends a value equal to an edge to the lower bin.
        codes = torch.searchsorted(edges, rearrange(values.to(torch.float64), "b u -> u b").contiguous(), right=False)
        return rearrange(codes, "u b -> b u")


class QuantileQuantizer(_BinQuantizer):
    """Per-unit equal-frequency bins; edges are the calibration quantiles k/B."""

    name = "quantile"

    def _compute_edges(self, activations: torch.Tensor) -> torch.Tensor:
        ordered, _ = torch.sort(activations, dim=0)
        n = ordered.shape[0]
        # Linear interpolation between order statistics, as numpy's default quantile.
        fractions = torch.arange(1, self.bins, dtype=torch.float64, device=activations.device) / self.bins
        where = fractions * (n - 1)
        lower = where.floor().long()
        upper = where.ceil().long()
        weight = rearrange(where - lower, "q -> q 1")
        edges = ordered[lower] * (1 - weight) + ordered[upper] * weight
        return rearrange(edges, "q u -> u q").contiguous()


class UniformQuantizer(_BinQuantizer):
    """Per-unit equal-width bins over the calibrated [min, max]."""

    name = "uniform"

    def _compute_edges(self, activations: torch.Tensor) -> torch.Tensor:
        low = activations.min(dim=0).values
        high = activations.max(dim=0).values
        fractions = torch.arange(1, self.bins, dtype=torch.float64, device=activations.device) / self.bins
        edges = rearrange(low, "u -> u 1") + rearrange(high - low, "u -> u 1") * fractions
        return edges.contiguous()


def parse_spec(spec: str) -> Quantizer:
    """Build a quantiser from its text form: argmax, sign, quantile:B or uniform:B."""
    text = spec.strip().lower()
    if text == "argmax":
        return ArgmaxQuantizer()
    if text == "sign":
        return SignQuantizer()
    name, _, bins = text.partition(":")
    kinds = {"quantile": QuantileQuantizer, "uniform": UniformQuantizer}
    if name in kinds:
        if not bins.isdigit() or int(bins) < 2:
            raise ValueError(f"invalid quantiser {spec!r}: {name} needs a bin count of at least 2, as in {name}:4")
        if int(bins) > 65536:
            raise ValueError(f"invalid quantiser {spec!r}: at most 65536 bins are supported")
        return kinds[name](int(bins))
    raise ValueError(f"invalid quantiser {spec!r}; choose argmax, sign, quantile:B or uniform:B (B >= 2)")
