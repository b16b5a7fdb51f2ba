"""Rich tables and JSON summaries of per-layer NPMI results.

Public names:
    LayerView        a layer's name, attributes and AnalysisResult, as the tables need them
    summary_rows     one dict of figures per layer (the JSON summary)
    render_summary   the table comparing layers side by side
    render_layer     one layer's top whole-code hits and best positional hits per label
    format_code      a code row as text, shortened when long
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.table import Table

from .analysis import AnalysisResult

__all__ = ["make_console", "LayerView", "summary_rows", "render_summary", "render_layer", "format_code"]

MAX_CODE_CHARS = 40
# Width for output to a file or pipe, where rich would otherwise assume 80 columns.
PIPE_WIDTH = 160
POSITIONAL_ROWS_PER_LABEL = 2


@dataclass
class LayerView:
    """A layer as the tables see it: name, attributes (positions, quantizer ...) and result."""

    name: str
    attrs: dict
    result: AnalysisResult


def make_console() -> Console:
    """Return a console for tables: the terminal's width, or PIPE_WIDTH when not a terminal."""
    if sys.stdout.isatty() or "COLUMNS" in os.environ:
        return Console()
    return Console(width=PIPE_WIDTH)


def format_code(code) -> str:
    """Format a code row as "[3 13 18]", or its start and length when long."""
    text = "[" + " ".join(str(int(symbol)) for symbol in code) + "]"
    if len(text) <= MAX_CODE_CHARS:
        return text
    return text[: MAX_CODE_CHARS - 8].rsplit(" ", 1)[0] + f" … ({len(code)})]"


def summary_rows(layers: list[LayerView], threshold: float, min_count: int) -> list[dict]:
    """Return one dict per layer with the figures of the summary table."""
    rows = []
    for layer in layers:
        result, stats = layer.result, layer.result.stats
        positional = result.positional
        observed = positional.counts >= min_count
        best_positional = float(positional.npmi[observed].max()) if observed.any() else float("nan")
        rows.append(
            {
                "layer": layer.name,
                "module": layer.attrs.get("module", ""),
                "quantizer": layer.attrs.get("quantizer", ""),
                "positions": int(layer.attrs.get("positions", result.whole.codes.shape[1])),
                "alphabet_size": int(layer.attrs.get("alphabet_size", positional.counts.shape[1])),
                "n_samples": int(stats.get("n_samples", result.whole.counts.sum())),
                "distinct_codes": int(stats["distinct_codes"]),
                "entropy_bits": float(stats["entropy_bits"]),
                "mutual_information_bits": float(stats["mutual_information_bits"]),
                "shuffled_mutual_information_bits": float(stats.get("shuffled_mutual_information_bits", float("nan"))),
                "hits": len(result.hits(threshold, min_count)),
                "best_positional_npmi": best_positional,
            }
        )
    return rows


def render_summary(console: Console, layers: list[LayerView], threshold: float, min_count: int) -> None:
    """Print the table that compares layers side by side."""
    table = Table(title=f"Layers (hits: NPMI >= {threshold:g}, joint count >= {min_count})", title_justify="left")
    for header in ("layer", "quantizer", "positions", "alphabet", "distinct codes", "H (bits)", "MI (bits)", "shuffled MI", "hits", "best positional"):
        table.add_column(header, justify="left" if header in ("layer", "quantizer") else "right")
    for row in summary_rows(layers, threshold, min_count):
        table.add_row(
            row["layer"],
            row["quantizer"],
            f"{row['positions']:,}",
            f"{row['alphabet_size']:,}",
            f"{row['distinct_codes']:,}",
            f"{row['entropy_bits']:.2f}",
            f"{row['mutual_information_bits']:.3f}",
            f"{row['shuffled_mutual_information_bits']:.3f}",
            f"{row['hits']:,}",
            f"{row['best_positional_npmi']:.3f}",
        )
    console.print(table)


def render_layer(console: Console, layer: LayerView, threshold: float, top: int, min_count: int) -> None:
    """Print a layer's top whole-code hits and its best (position, symbol) per label."""
    result = layer.result
    hits = result.hits(threshold, min_count)
    table = Table(title=f"{layer.name}: top whole-code hits ({len(hits):,} with NPMI >= {threshold:g})", title_justify="left")
    for header in ("code", "label", "NPMI", "joint count", "code count"):
        table.add_column(header, justify="left" if header == "code" else "right")
    for hit in hits[:top]:
        table.add_row(format_code(hit.code), str(hit.label), f"{hit.npmi:.3f}", f"{hit.joint_count:,}", f"{hit.code_count:,}")
    if not hits:
        table.add_row("(none)", "", "", "", "")
    console.print(table)

    positional = Table(title=f"{layer.name}: best (position, symbol) per label", title_justify="left")
    for header in ("label", "position", "symbol", "NPMI", "joint count"):
        positional.add_column(header, justify="right")
    counts, values = result.positional.counts, result.positional.npmi
    for label_index, label in enumerate(result.label_values):
        scores = np.where(counts[:, :, label_index] >= min_count, values[:, :, label_index], -np.inf)
        flat = np.argsort(-scores, axis=None, kind="stable")[:POSITIONAL_ROWS_PER_LABEL]
        for rank, index in enumerate(flat):
            position, symbol = np.unravel_index(index, scores.shape)
            if not np.isfinite(scores[position, symbol]):
                break
            positional.add_row(
                str(int(label)) if rank == 0 else "",
                str(int(position)),
                str(int(symbol)),
                f"{values[position, symbol, label_index]:.3f}",
                f"{int(counts[position, symbol, label_index]):,}",
            )
    console.print(positional)
