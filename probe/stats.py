"""NPMI, entropy and mutual information from joint count tables.

Public names:
    npmi                  normalised pointwise mutual information of a joint count table
    npmi_from_marginals   NPMI of joint counts whose marginals are counted separately
    entropy_bits          Shannon entropy of a count vector, in bits
    mutual_information_bits  plug-in I(X; Y) of a joint count table, in bits
    miller_madow_mutual_information_bits  I(X; Y) with the Miller-Madow bias correction, in bits

All functions take int64 counts (numpy or torch) and compute in float64. The
conventions at the limits are part of the contract:

    p(x, y) = 0            -> npmi = -1 (never together, including unobserved x or y)
    p(x, y) = 1            -> npmi = +1 (one code and one label, always together)
    otherwise              -> log(p(x,y) / (p(x) p(y))) / -log p(x,y), clipped to [-1, 1]
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["npmi", "npmi_from_marginals", "entropy_bits", "mutual_information_bits", "miller_madow_mutual_information_bits"]


def _as_float64(counts) -> torch.Tensor:
    if isinstance(counts, np.ndarray):
        counts = torch.from_numpy(counts)
    counts = torch.as_tensor(counts)
    if counts.is_floating_point():
        raise TypeError(f"counts must be integers, got dtype {counts.dtype}")
    if (counts < 0).any():
        raise ValueError("counts must be non-negative")
    return counts.to(torch.float64)


def npmi(joint) -> torch.Tensor:
    """Compute NPMI for every cell of a joint count table [..., X, Y].

    Marginals are taken over the last two axes, so a stack of tables (for example
    [P, S, L] positional counts, one table per position) is handled in one call.
    Returns float64 values in [-1, 1] and never NaN.
    """
    counts = _as_float64(joint).to(torch.int64)
    return npmi_from_marginals(counts, counts.sum(dim=-1), counts.sum(dim=-2), counts.sum(dim=(-2, -1)))


def npmi_from_marginals(joint, count_x, count_y, total) -> torch.Tensor:
    """Compute NPMI of joint counts [..., X, Y] from separately counted marginals.

    ``count_x`` [..., X] and ``count_y`` [..., Y] are the occurrence counts of x and
    of y, and ``total`` is the number of trials. They need not be the sums of
    ``joint``: an n-gram that occurs in a message is counted once for that message,
    so summing its joint counts over the n-grams of a message does not give the
    message count. Same conventions and range as ``npmi``; never NaN.
    """
    counts = _as_float64(joint)
    x = _as_float64(count_x).to(counts.device).unsqueeze(-1)
    y = _as_float64(count_y).to(counts.device).unsqueeze(-2)
    n = _as_float64(total).to(counts.device)
    if n.dim() > 0:
        n = n.reshape(*n.shape, 1, 1)

    # Logs of counts rather than of probabilities keep the ratio exact in float64.
    # Empty cells give -inf and NaN here and are replaced by the conventions below.
    log_joint = torch.log(counts)
    log_total = torch.log(n)
    pmi = log_joint + log_total - torch.log(x) - torch.log(y)
    values = pmi / (log_total - log_joint)

    values = torch.where(counts == 0, torch.full_like(values, -1.0), values)
    values = torch.where((counts > 0) & (counts == n), torch.ones_like(values), values)
    return values.clamp_(-1.0, 1.0)


def entropy_bits(counts) -> float:
    """Return the plug-in Shannon entropy, in bits, of a vector of counts."""
    counts = _as_float64(counts).flatten()
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * torch.log2(p)).sum())


def mutual_information_bits(joint) -> float:
    """Return the plug-in mutual information I(X; Y), in bits, of a joint table [X, Y]."""
    counts = _as_float64(joint)
    if counts.dim() != 2:
        raise ValueError(f"joint counts must be a 2-D table, got shape {list(counts.shape)}")
    total = counts.sum()
    if total == 0:
        return 0.0
    count_x = counts.sum(dim=1, keepdim=True)
    count_y = counts.sum(dim=0, keepdim=True)
    nonzero = counts > 0
    ratio = (counts * total) / (count_x * count_y)
    terms = counts[nonzero] / total * torch.log2(ratio[nonzero])
    # Rounding can leave a tiny negative sum for independent variables.
    return max(0.0, float(terms.sum()))


def miller_madow_mutual_information_bits(joint) -> float:
    """Return I(X; Y) of a joint table [X, Y] with the Miller-Madow correction, in bits.

    Each plug-in entropy gains (nonzero cells - 1) / 2n nats, so
    I = plug-in I - (K_xy - K_x - K_y + 1) / (2 n ln 2) with K the number of nonzero
    cells of the joint table and of each marginal. The correction assumes every
    cell is well sampled; with most codes seen once it removes only a small part
    of the bias (see docs/statistics.md).
    """
    counts = _as_float64(joint)
    if counts.dim() != 2:
        raise ValueError(f"joint counts must be a 2-D table, got shape {list(counts.shape)}")
    total = float(counts.sum())
    if total == 0:
        return 0.0
    joint_cells = int((counts > 0).sum())
    x_cells = int((counts.sum(dim=1) > 0).sum())
    y_cells = int((counts.sum(dim=0) > 0).sum())
    correction = (joint_cells - x_cells - y_cells + 1) / (2.0 * total * math.log(2.0))
    return mutual_information_bits(joint) - correction
