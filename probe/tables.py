"""Rich tables and JSON summaries of per-layer NPMI results.

Public names:
    LayerView        a layer's name, attributes and AnalysisResult, as the tables need them
    summary_rows     one dict of figures per layer (the JSON summary)
    render_summary   the table comparing layers side by side
    render_assessment_summary  corrected MI, significant hits and held-out accuracies per layer
    render_layer     one layer's top whole-code hits and best positional hits per label
    format_code      a code row as text, shortened when long
    observation_rows one dict per observation (labels, then attributes) of a layer
    value_hit_rows   per observation value, its strongest code parts, as dicts (JSON)
    render_ngrams    a layer's strongest n-gram hits against the labels, by length
    render_observations  per observation, a table of what goes with each value
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from .analysis import AnalysisResult
from .associations import KINDS, LABEL_OBSERVATION, ValueHit, value_hits
from .stats import mutual_information_bits

__all__ = [
    "make_console",
    "LayerView",
    "summary_rows",
    "render_summary",
    "render_assessment_summary",
    "render_layer",
    "format_code",
    "observation_rows",
    "value_hit_rows",
    "render_ngrams",
    "render_observations",
]

MAX_CODE_CHARS = 40
# Width for output to a file or pipe, where rich would otherwise assume 80 columns.
PIPE_WIDTH = 160
POSITIONAL_ROWS_PER_LABEL = 2
# Per-layer statistics of the significance test and held-out decoding (docs/statistics.md).
ASSESSMENT_STATS = (
    "corrected_mutual_information_bits",
    "miller_madow_mutual_information_bits",
    "mutual_information_p_value",
    "null_max_npmi_95",
    "heldout_accuracy",
    "positional_heldout_accuracy",
    "linear_probe_accuracy",
    "chance_accuracy",
    "heldout_unseen_fraction",
)


@dataclass
class LayerView:
    """A layer as the tables see it: name, attributes (positions, quantizer ...) and result."""

    name: str
    attrs: dict
    result: AnalysisResult


# A table too wide for the console is printed transposed (one column per row) when it
# has at most this many rows, as the per-layer summaries do.
MAX_TRANSPOSED_ROWS = 8


def _folded(table: Table) -> Table:
    """Let every cell wrap onto more lines instead of ending in an ellipsis on narrow terminals."""
    for column in table.columns:
        column.overflow = "fold"
    return table


def _print_table(console: Console, table: Table) -> None:
    """Print a table; one too wide for the console and with few rows is printed transposed."""
    width = Measurement.get(console, console.options.update(max_width=100_000), table).maximum
    if width <= console.width or table.row_count > MAX_TRANSPOSED_ROWS or table.row_count == 0:
        console.print(_folded(table))
        return
    columns = [list(column.cells) for column in table.columns]
    transposed = Table(title=table.title, title_justify="left", caption=table.caption, caption_justify="left")
    transposed.add_column(table.columns[0].header)
    for cell in columns[0]:
        transposed.add_column(cell, justify="right")
    for column, cells in zip(table.columns[1:], columns[1:]):
        transposed.add_row(column.header, *cells)
    console.print(_folded(transposed))


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
                **_assessment_figures(result, threshold, min_count),
            }
        )
    return rows


def _assessment_figures(result: AnalysisResult, threshold: float, min_count: int) -> dict:
    """Return the significance, corrected-MI and held-out figures of a layer; NaN or None where absent."""
    stats = result.stats
    figures = {key: float(stats.get(key, float("nan"))) for key in ASSESSMENT_STATS}
    tested = result.whole.significant is not None
    figures["significant_hits"] = len(result.hits(threshold, min_count, significant_only=True)) if tested else None
    return figures


def render_summary(console: Console, layers: list[LayerView], threshold: float, min_count: int) -> None:
    """Print the table that compares layers side by side."""
    table = Table(title=f"Layers (hits: NPMI >= {threshold:g}, joint count >= {min_count})", title_justify="left")
    for header in ("layer", "quantizer", "positions", "alphabet", "distinct codes", "H (bits)", "MI (bits)", "shuffled MI", "hits", "best positional"):
        table.add_column(header, justify="left" if header in ("layer", "quantizer") else "right")
    rows = summary_rows(layers, threshold, min_count)
    for row in rows:
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
    _print_table(console, table)
    render_assessment_summary(console, rows)


def render_assessment_summary(console: Console, rows: list[dict]) -> None:
    """Print corrected information, significant hits and held-out accuracies per layer.

    A second table, because the first one already fills 160 columns.
    """
    table = Table(
        title="Layers: bias-corrected MI (bits) and held-out accuracy",
        title_justify="left",
        caption="corrected: MI minus mean permutation MI; sig.: significant at the FDR; null NPMI: 95th percentile of the largest "
        "shuffled-label NPMI; unseen: held-out samples with a code absent from the fit part (docs/statistics.md)",
        caption_justify="left",
    )
    headers = (
        "layer", "MI", "corrected", "Miller-Madow", "p (MI)", "hits (sig.)", "null NPMI",
        "held-out", "positional", "linear probe", "chance", "unseen",
    )
    for header in headers:
        table.add_column(header, justify="left" if header == "layer" else "right")
    for row in rows:
        significant = "-" if row["significant_hits"] is None else f"{row['significant_hits']:,}"
        table.add_row(
            row["layer"],
            f"{row['mutual_information_bits']:.3f}",
            f"{row['corrected_mutual_information_bits']:.3f}",
            f"{row['miller_madow_mutual_information_bits']:.3f}",
            _number(row["mutual_information_p_value"], ".2g"),
            f"{row['hits']:,} ({significant})",
            _number(row["null_max_npmi_95"], ".3f"),
            _percent(row["heldout_accuracy"]),
            _percent(row["positional_heldout_accuracy"]),
            _percent(row["linear_probe_accuracy"]),
            _percent(row["chance_accuracy"]),
            _percent(row["heldout_unseen_fraction"]),
        )
    _print_table(console, table)


def _number(value: float, spec: str) -> str:
    return "-" if not np.isfinite(value) else format(value, spec)


def _percent(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{100 * value:.1f}%"


def render_layer(console: Console, layer: LayerView, threshold: float, top: int, min_count: int, significant_only: bool = True) -> None:
    """Print a layer's top whole-code hits and its best (position, symbol) per label.

    After a permutation test only the hits significant at the run's FDR are listed
    (unless ``significant_only`` is False) and the title counts the others.
    """
    result = layer.result
    hits = result.hits(threshold, min_count)
    tested = result.whole.significant is not None
    title = f"{layer.name}: top whole-code hits ({len(hits):,} with NPMI >= {threshold:g})"
    if tested:
        significant = sum(1 for hit in hits if hit.significant)
        fdr = result.stats.get("fdr", float("nan"))
        title = f"{layer.name}: top whole-code hits ({significant:,} significant at FDR {fdr:g}, {len(hits) - significant:,} more with NPMI >= {threshold:g} not significant)"
        if significant_only:
            hits = [hit for hit in hits if hit.significant]
    table = Table(title=title, title_justify="left")
    headers = ("code", "label", "NPMI", "joint count", "code count") + (("p-value", "significant") if tested else ())
    for header in headers:
        table.add_column(header, justify="left" if header == "code" else "right")
    for hit in hits[:top]:
        cells = [format_code(hit.code), str(hit.label), f"{hit.npmi:.3f}", f"{hit.joint_count:,}", f"{hit.code_count:,}"]
        if tested:
            cells += [f"{hit.p_value:.2g}", "yes" if hit.significant else "no"]
        table.add_row(*cells)
    if not hits:
        table.add_row("(none)", *[""] * (len(headers) - 1))
    _print_table(console, table)

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
    _print_table(console, positional)


def _observations(result: AnalysisResult) -> list[tuple[str, AnalysisResult]]:
    return [(LABEL_OBSERVATION, result), *result.observations.items()]


def observation_rows(layer: LayerView, threshold: float, min_count: int) -> list[dict]:
    """Return one dict per observation of a layer: values, MI, shuffled MI, hits, best hit."""
    rows = []
    hits = value_hits(layer.result, threshold, min_count)
    for name, result in _observations(layer.result):
        own = [hit for hit in hits if hit.observation == name]
        best = max(own, key=lambda hit: (hit.npmi, hit.joint_count), default=None)
        rows.append(
            {
                "layer": layer.name,
                "observation": name,
                "values": int(len(result.label_values)),
                "mutual_information_bits": float(result.stats.get("mutual_information_bits", mutual_information_bits(result.whole.counts))),
                "shuffled_mutual_information_bits": float(result.stats.get("shuffled_mutual_information_bits", float("nan"))),
                "hits": len(own),
                "best": None if best is None else describe_hit(best),
                "best_npmi": float("nan") if best is None else best.npmi,
            }
        )
    return rows


def describe_hit(hit: ValueHit) -> str:
    """Describe a hit's code part in words, such as "symbol 13 at position 2"."""
    if hit.kind == "code":
        return f"code {format_code(hit.code)}"
    if hit.kind == "symbol":
        return f"symbol {hit.code[0]} at position {hit.position}"
    if hit.kind == "ngram":
        return f"{len(hit.code)}-gram {format_code(hit.code)} anywhere"
    return f"{len(hit.code)}-gram {format_code(hit.code)} at position {hit.position}"


def _best_per_kind(hits: list[ValueHit]) -> list[ValueHit]:
    """Keep the strongest hit of each kind, strongest first (hits arrive sorted by strength)."""
    best: dict[str, ValueHit] = {}
    for hit in hits:
        best.setdefault(hit.kind, hit)
    return sorted(best.values(), key=lambda hit: (-hit.npmi, -hit.joint_count, KINDS.index(hit.kind)))


def value_hit_rows(layer: LayerView, threshold: float, min_count: int, per_value: int = 10) -> list[dict]:
    """Return up to ``per_value`` hits per observation value, strongest first, as dicts for JSON."""
    rows = []
    taken: dict[tuple[str, int], int] = {}
    for hit in value_hits(layer.result, threshold, min_count):
        key = (hit.observation, hit.value)
        if taken.get(key, 0) >= per_value:
            continue
        taken[key] = taken.get(key, 0) + 1
        rows.append(
            {
                "layer": layer.name,
                "observation": hit.observation,
                "value": hit.value,
                "value_name": hit.value_name,
                "kind": hit.kind,
                "position": hit.position,
                "code": list(hit.code),
                "description": describe_hit(hit),
                "npmi": hit.npmi,
                "joint_count": hit.joint_count,
                "count": hit.count,
            }
        )
    return rows


def render_ngrams(console: Console, layer: LayerView, threshold: float, top: int, min_count: int) -> None:
    """Print a layer's strongest n-gram hits against the labels: anywhere and at a start position."""
    result = layer.result
    if not result.ngrams:
        return
    hits = [hit for hit in value_hits(result, threshold, min_count) if hit.observation == LABEL_OBSERVATION and hit.kind in ("ngram", "positional_ngram")]
    hits.sort(key=lambda hit: (-hit.npmi, -hit.joint_count))
    lengths = ", ".join(str(order) for order in result.ngrams)
    table = Table(title=f"{layer.name}: top n-gram hits against labels (lengths {lengths}; {len(hits):,} with NPMI >= {threshold:g})", title_justify="left")
    for header in ("n-gram", "where", "label", "NPMI", "joint count", "messages"):
        table.add_column(header, justify="left" if header in ("n-gram", "where") else "right")
    for hit in hits[:top]:
        where = "anywhere" if hit.position is None else f"position {hit.position}"
        table.add_row(format_code(hit.code), where, hit.value_name, f"{hit.npmi:.3f}", f"{hit.joint_count:,}", f"{hit.count:,}")
    if not hits:
        table.add_row("(none)", "", "", "", "", "")
    _print_table(console, table)


def render_observations(console: Console, layer: LayerView, threshold: float, min_count: int) -> None:
    """Print the observations overview of a layer, then per observation the best code part of each kind per value.

    Observations without hits get a row in the overview and no table of their own.
    N-grams as long as the code repeat the whole code and are left out of the tables.
    """
    result = layer.result
    overview = Table(
        title=f"{layer.name}: observations (hits of every kind: whole codes, symbols and n-grams with NPMI >= {threshold:g}, joint count >= {min_count})",
        title_justify="left",
    )
    for header in ("observation", "values", "MI (bits)", "shuffled MI", "all hits", "best hit", "NPMI"):
        overview.add_column(header, justify="left" if header in ("observation", "best hit") else "right")
    for row in observation_rows(layer, threshold, min_count):
        overview.add_row(
            row["observation"],
            f"{row['values']:,}",
            f"{row['mutual_information_bits']:.3f}",
            f"{row['shuffled_mutual_information_bits']:.3f}",
            f"{row['hits']:,}",
            row["best"] or "(none)",
            "" if row["best"] is None else f"{row['best_npmi']:.3f}",
        )
    _print_table(console, overview)

    positions = result.whole.codes.shape[1]
    hits = [hit for hit in value_hits(result, threshold, min_count) if hit.kind in ("code", "symbol") or len(hit.code) < positions]
    for name, sub_result in _observations(result):
        own = [hit for hit in hits if hit.observation == name]
        if not own:
            continue
        table = Table(title=f"{layer.name} vs {name}: best code part of each kind per value", title_justify="left")
        for header in ("value", "code part", "NPMI", "joint count", "count"):
            table.add_column(header, justify="left" if header in ("value", "code part") else "right")
        for value in sub_result.label_values:
            chosen = _best_per_kind([hit for hit in own if hit.value == int(value)])
            for rank, hit in enumerate(chosen):
                table.add_row(hit.value_name if rank == 0 else "", describe_hit(hit), f"{hit.npmi:.3f}", f"{hit.joint_count:,}", f"{hit.count:,}")
        _print_table(console, table)
