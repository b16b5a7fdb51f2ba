"""A single self-contained HTML page of a probe run: tables and figures, for sharing.

Public names:
    build_html   the page as a string
    write_html   write the page to a file atomically

The page needs no other file and no network: figures are embedded as base64 PNG data
URIs and the style sheet is inline. Every value taken from the result file is
HTML-escaped. A small inline script counts, once the page has loaded, how many
figures decoded and writes the count into the element ``#image-check``.
"""

from __future__ import annotations

import base64
import html
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from .analysis import AnalysisResult
from .figures import FigureSet, RenderedFigure
from .store import ProbeFile
from .tables import POSITIONAL_ROWS_PER_LABEL, LayerView, format_code, summary_rows

__all__ = ["build_html", "write_html"]

# Column headers of the summary table, as the terminal table names them; other keys show with spaces for underscores.
SUMMARY_HEADERS = {
    "alphabet_size": "alphabet",
    "n_samples": "samples",
    "distinct_codes": "distinct codes",
    "entropy_bits": "H (bits)",
    "mutual_information_bits": "MI (bits)",
    "shuffled_mutual_information_bits": "shuffled MI",
    "corrected_mutual_information_bits": "corrected MI",
    "miller_madow_mutual_information_bits": "Miller-Madow MI",
    "mutual_information_p_value": "MI p-value",
    "null_max_npmi_95": "null max NPMI (95%)",
    "heldout_accuracy": "held-out acc.",
    "positional_heldout_accuracy": "positional held-out acc.",
    "linear_probe_accuracy": "linear probe",
    "chance_accuracy": "chance",
    "heldout_unseen_fraction": "held-out unseen",
    "significant_hits": "significant hits",
    "best_positional_npmi": "best positional",
}
METADATA_KEYS = ("dataset", "dataset_description", "split", "n_samples", "model", "checkpoint", "seed", "created", "command")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
.scroll { overflow-x: auto; }
.notes li { color: #8a5300; } #image-check { font-size: 0.8em; color: #777; }
"""

IMAGE_CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var decoded = images.filter(function (image) { return image.complete && image.naturalWidth > 0; });
  var check = document.getElementById("image-check");
  check.setAttribute("data-total", String(images.length));
  check.setAttribute("data-decoded", String(decoded.length));
  check.textContent = decoded.length + " of " + images.length + " figures loaded";
});
"""


def _format_cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return "–" if not math.isfinite(value) else f"{float(value):.3f}"
    return str(value)


def _table(headers: list[str], rows: list[list], text_columns: set[int] = frozenset()) -> str:
    """Return an HTML table; ``text_columns`` are left-aligned, the rest (numbers) right-aligned."""

    def cell(tag: str, index: int, value) -> str:
        css = ' class="text"' if index in text_columns else ""
        return f"<{tag}{css}>{html.escape(_format_cell(value))}</{tag}>"

    head = "".join(cell("th", index, header) for index, header in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", index, value) for index, value in enumerate(row)) + "</tr>" for row in rows)
    return f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _summary_table(views: list[LayerView], threshold: float, min_count: int) -> str:
    rows = summary_rows(views, threshold, min_count)
    # Columns follow the dicts, so figures that summary_rows gains later appear without changes here.
    headers = list(dict.fromkeys(key for row in rows for key in row))
    text_columns = {index for index, header in enumerate(headers) if header in ("layer", "module", "quantizer")}
    titles = [SUMMARY_HEADERS.get(header, header.replace("_", " ")) for header in headers]
    return _table(titles, [[row.get(header, "") for header in headers] for row in rows], text_columns)


def _hits_table(result: AnalysisResult, threshold: float, min_count: int, top: int, significant_only: bool) -> str:
    """Return the top whole-code hits, as the terminal table lists them (significant ones only after a permutation test)."""
    hits = result.hits(threshold, min_count)
    tested = result.whole.significant is not None
    caption = f"Top whole-code hits ({len(hits):,} with NPMI &gt;= {threshold:g}, joint count &gt;= {min_count})"
    headers = ["code", "label", "NPMI", "joint count", "code count"]
    if tested:
        significant = sum(1 for hit in hits if hit.significant)
        fdr = float(result.stats.get("fdr", float("nan")))
        caption = f"Top whole-code hits ({significant:,} significant at FDR {fdr:g}, {len(hits) - significant:,} more with NPMI &gt;= {threshold:g} not significant)"
        headers += ["p-value", "significant"]
        if significant_only:
            hits = [hit for hit in hits if hit.significant]
    rows = []
    for hit in hits[:top]:
        row = [format_code(hit.code), hit.label, hit.npmi, hit.joint_count, hit.code_count]
        if tested:
            row += [f"{hit.p_value:.2g}", bool(hit.significant)]
        rows.append(row)
    if not rows:
        return f"<h3>{caption}</h3><p>(none)</p>"
    return f"<h3>{caption}</h3>" + _table(headers, rows, {0})


def _positional_table(result: AnalysisResult, min_count: int) -> str:
    """Return the best (position, symbol) pairs per label, as the terminal tables show them."""
    counts, values = result.positional.counts, result.positional.npmi
    positions, symbols, n_labels = values.shape
    scores = np.where(counts >= min_count, values, -np.inf).reshape(positions * symbols, n_labels)
    order = np.argsort(-scores, axis=0, kind="stable")[:POSITIONAL_ROWS_PER_LABEL]  # (rows, labels)
    rows = []
    for label_index, label in enumerate(result.label_values):
        for flat in order[:, label_index]:
            if not np.isfinite(scores[flat, label_index]):
                break
            position, symbol = divmod(int(flat), symbols)
            rows.append([int(label), position, symbol, float(values[position, symbol, label_index]), int(counts[position, symbol, label_index])])
    return "<h3>Best (position, symbol) per label</h3>" + _table(["label", "position", "symbol", "NPMI", "joint count"], rows)


def _figure_html(figure: RenderedFigure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return (
        f'<figure id="{html.escape(figure.name)}"><img src="data:image/png;base64,{data}" alt="{html.escape(figure.title)}">'
        f"<figcaption><strong>{html.escape(figure.title)}.</strong> {html.escape(figure.caption)}</figcaption></figure>"
    )


def build_html(
    run: ProbeFile,
    figure_set: FigureSet,
    threshold: float,
    min_count: int,
    top: int = 10,
    layers: list[str] | None = None,
    significant_only: bool = True,
) -> str:
    """Return the page: run metadata, the summary table, run-wide figures, then per layer its tables and figures."""
    names = [name for name in (layers or list(run.layers)) if run.layers[name].result is not None]
    views = [LayerView(name, run.layers[name].attrs, run.layers[name].result) for name in names]
    title = f"probe report: {run.path.name}"
    metadata_rows = [[key, run.metadata[key]] for key in METADATA_KEYS if key in run.metadata]
    metadata_rows.append(["hits", f"NPMI >= {threshold:g}, joint count >= {min_count}"])

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(str(run.path))}</p>",
        _table(["run", "value"], metadata_rows, {0, 1}),
        "<h2>Layers</h2>",
        _summary_table(views, threshold, min_count),
    ]
    parts.extend(_figure_html(figure) for figure in figure_set.for_layer(None))
    for view in views:
        parts.append(f'<h2 id="layer-{html.escape(view.name)}">Layer {html.escape(view.name)}</h2>')
        parts.append(_hits_table(view.result, threshold, min_count, top, significant_only))
        parts.append(_positional_table(view.result, min_count))
        parts.extend(_figure_html(figure) for figure in figure_set.for_layer(view.name))
    if figure_set.notes:
        parts.append('<h2>Figures not drawn</h2><ul class="notes">')
        parts.extend(f"<li>{html.escape(note)}</li>" for note in figure_set.notes)
        parts.append("</ul>")
    parts.append('<p id="image-check">figures not checked (the page script did not run)</p>')
    parts.append(f"<script>{IMAGE_CHECK_SCRIPT}</script></body></html>")
    return "\n".join(parts)


def write_html(path: str | os.PathLike, page: str) -> Path:
    """Write ``page`` to ``path`` through a temporary file in the same folder, so a reader never sees half a page."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(page)
        os.chmod(temporary, 0o644)  # mkstemp creates 0600, but the page is meant for sharing
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
