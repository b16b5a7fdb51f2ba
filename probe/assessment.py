"""Honest figures for one analysed layer: significance of hits, bias-corrected MI, held-out decoding.

Public names:
    assess              add p-values, FDR flags, corrected MI and held-out accuracies
                        to an ``AnalysisResult`` (used by ``probe.analyze`` and probe.run)
    code_chunks         the ``chunks`` callable of in-memory codes, for ``assess``
    DEFAULT_MIN_COUNT   the joint count a (code, label) pair needs to be a hit

The statistics added to ``result.stats`` are explained in docs/statistics.md.

Example::

    result = summarize(counter, label_values)
    assess(result, code_chunks(codes), encoded_labels, permutations=200, holdout=0.2)
    result.stats["corrected_mutual_information_bits"], result.stats["heldout_accuracy"]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np
import torch

from .counting import distinct_row_index
from .decoding import ActivationSample, decode_codes, holdout_mask, linear_probe_accuracy
from .significance import DEFAULT_FDR, benjamini_hochberg, empirical_p_values, permutation_null, testable_pairs

if TYPE_CHECKING:
    from .analysis import AnalysisResult

__all__ = ["assess", "code_chunks", "DEFAULT_MIN_COUNT"]

logger = logging.getLogger(__name__)

# On 2,000 bundled MNIST digits, shuffled labels still gave a trained VAE 4 whole-code
# hits at NPMI >= 0.3 with a minimum of 3 and none with 5 (docs/statistics.md).
DEFAULT_MIN_COUNT = 5
CHUNK_ROWS = 1 << 16


def code_chunks(codes: np.ndarray, rows: int = CHUNK_ROWS) -> Callable[[], Iterable[tuple[int, torch.Tensor]]]:
    """Return a callable that yields (first index, codes [B, P] int64) over in-memory codes."""

    def chunks():
        for start in range(0, len(codes), rows):
            yield start, torch.from_numpy(np.asarray(codes[start : start + rows]).astype(np.int64))

    return chunks


def _sample_ids(result: "AnalysisResult", chunks, alphabet_size: int, n_samples: int, device) -> torch.Tensor:
    distinct = torch.from_numpy(result.whole.codes.astype(np.int64)).to(device)
    ids = torch.empty(n_samples, dtype=torch.int64, device=device)
    for start, codes in chunks():
        ids[start : start + codes.shape[0]] = distinct_row_index(codes.to(device), distinct, alphabet_size)
    return ids


def assess(
    result: "AnalysisResult",
    chunks: Callable[[], Iterable[tuple[int, torch.Tensor]]],
    labels,
    permutations: int,
    fdr: float = DEFAULT_FDR,
    holdout: float = 0.2,
    min_count: int = DEFAULT_MIN_COUNT,
    seed: int = 0,
    device: str | torch.device = "cpu",
    activations: ActivationSample | None = None,
) -> "AnalysisResult":
    """Add significance, bias-corrected MI and held-out decoding to ``result`` in place.

    ``chunks()`` yields (first index, codes [B, P]) over the same samples, in order,
    that ``result`` counted, and ``labels`` [n] are their encoded labels (0..L-1).
    ``permutations`` R > 0 runs the permutation test: ``result.null``,
    ``result.whole.p_values``, ``tested`` and ``significant`` (Benjamini-Hochberg at
    ``fdr`` over the tested pairs). ``holdout`` > 0 adds held-out accuracies, and
    ``activations`` (raw activations of the same samples) adds the linear probe.
    Returns ``result``.
    """
    if permutations < 0:
        raise ValueError(f"invalid permutations {permutations}; pass 0 to turn the test off or a count such as 200")
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"invalid holdout {holdout}; pass 0 to turn decoding off or a fraction such as 0.2")
    if min_count < 1:
        raise ValueError(f"invalid min_count {min_count}; it must be at least 1")
    labels = torch.as_tensor(np.asarray(labels, dtype=np.int64)).to(device)
    n_samples = labels.shape[0]
    stats = result.stats
    n_codes, n_labels = result.whole.counts.shape
    alphabet_size = int(result.positional.counts.shape[1])
    positions = int(result.positional.counts.shape[0])
    ids = _sample_ids(result, chunks, alphabet_size, n_samples, device)
    plug_in = float(stats["mutual_information_bits"])

    stats["permutations"] = int(permutations)
    stats["fdr"] = float(fdr)
    if permutations:
        null = permutation_null(ids, labels, n_codes, n_labels, permutations, seed=seed, observed_counts=result.whole.counts, min_count=min_count, device=device)
        result.null = null
        p_values = empirical_p_values(null.exceedances, null.draws)
        tested = testable_pairs(result.whole.counts, fdr, min_count, permutations)
        result.whole.p_values = p_values
        result.whole.tested = tested
        result.whole.significant = benjamini_hochberg(p_values, fdr, tested)
        stats["corrected_mutual_information_bits"] = plug_in - float(null.mutual_information_bits.mean())
        stats["null_mutual_information_bits_std"] = float(null.mutual_information_bits.std())
        stats["mutual_information_p_value"] = null.mutual_information_p_value(plug_in)
        reached = null.max_npmi[np.isfinite(null.max_npmi)]
        # Permutations where no pair reaches min_count have no maximum; they count as below any hit.
        stats["null_max_npmi_95"] = float(np.quantile(np.concatenate([reached, np.full(null.permutations - reached.size, -1.0)]), 0.95)) if reached.size else float("nan")
        stats["tested_pairs"] = int(tested.sum())
        stats["significant_pairs"] = int(result.whole.significant.sum())
    elif "shuffled_mutual_information_bits" in stats:
        # Without the test, the single shuffled-label column is the bias estimate.
        stats["corrected_mutual_information_bits"] = plug_in - float(stats["shuffled_mutual_information_bits"])
    else:
        stats["corrected_mutual_information_bits"] = float("nan")

    stats["holdout"] = float(holdout)
    for key in ("heldout_accuracy", "positional_heldout_accuracy", "chance_accuracy", "heldout_unseen_fraction", "linear_probe_accuracy"):
        stats[key] = float("nan")
    if holdout and 1 <= round(holdout * n_samples) <= n_samples - 1:
        heldout = holdout_mask(n_samples, holdout, seed)
        decoding = decode_codes(chunks, ids, labels, heldout, positions, alphabet_size, n_codes, n_labels, device)
        stats["heldout_accuracy"] = decoding.heldout_accuracy
        stats["positional_heldout_accuracy"] = decoding.positional_accuracy
        stats["chance_accuracy"] = decoding.chance_accuracy
        stats["heldout_unseen_fraction"] = decoding.unseen_fraction
        stats["heldout_samples"] = decoding.heldout_samples
        if activations is not None:
            features, indices = activations.features()
            stats["linear_probe_samples"] = int(indices.shape[0])
            stats["linear_probe_units"] = int(features.shape[1]) if features.dim() == 2 else 0
            if indices.shape[0]:
                index = indices.numpy()
                stats["linear_probe_accuracy"] = linear_probe_accuracy(features, labels.cpu().numpy()[index], heldout[index], n_labels, seed=seed, device=device)
    elif holdout:
        logger.info("holdout %.3f of %d samples leaves an empty part; held-out accuracies are NaN", holdout, n_samples)
    return result
