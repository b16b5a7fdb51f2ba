"""Figures of a probe result file, drawn with matplotlib's Agg canvas (no display needed).

Public names:
    render_figures        draw every figure of an open result file into a FigureSet
    save_figures          write a FigureSet's PNG files into a folder
    gallery_figure        a layer's top hits, each with example inputs that received the code
    positional_figure     a layer's NPMI of (position, symbol) for each label, as heatmaps
    buildup_figure        MI, shuffled MI and hits per layer in network order, plus
                          corrected MI and held-out accuracy when the file stores them
    decoder_grid_figure   decoder outputs while one latent position runs over all symbols
    load_images           the probed images of a run, read again from its dataset
    example_indices       the first samples whose code row equals each given code
    decoded_variations    the decoder's pixel probabilities behind the decoder grid
    require_matplotlib    raise FiguresUnavailableError when matplotlib is missing
    RenderedFigure, FigureSet, FiguresUnavailableError

Example::

    with probe.load("runs/default/probe.h5") as run:
        figure_set = render_figures(run, threshold=0.4, min_count=1)
        save_figures(figure_set, "runs/default/figures")

matplotlib is an optional dependency (``pip install -e '.[figures]'``). This module
imports it on first use and never imports ``matplotlib.pyplot``, so it changes no
global backend: every figure is a ``matplotlib.figure.Figure`` on its own Agg canvas.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models import CategoricalVAE, CheckpointError, DatasetError, load_checkpoint, load_dataset

from .analysis import AnalysisResult, Hit
from .store import ProbeFile
from .tables import format_code

__all__ = [
    "render_figures",
    "save_figures",
    "gallery_figure",
    "positional_figure",
    "buildup_figure",
    "decoder_grid_figure",
    "load_images",
    "example_indices",
    "decoded_variations",
    "require_matplotlib",
    "RenderedFigure",
    "FigureSet",
    "FiguresUnavailableError",
]

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install -e '.[figures]'"
DPI = 110
GALLERY_EXAMPLES = 10
# Past this many labels the heatmap figure shows only the best label per cell.
MAX_LABEL_PANELS = 20
PANEL_COLUMNS = 5
MAX_FIGURE_WIDTH = 14.0  # inches; wide panels wrap onto more rows
# The best-label panel writes the label into each cell only while cells stay legible.
MAX_ANNOTATED_CELLS = 300
# Elements of the (rows, hits, positions) comparison array per block when searching codes.
MATCH_BLOCK_ELEMENTS = 1 << 23
DIVERGING_COLORMAP = "RdBu_r"
UNSEEN_COLOR = "#d9d9d9"
VAE_MODEL_NAME = f"{CategoricalVAE.__module__}.{CategoricalVAE.__name__}"
LATENT_MODULE = "latent"


class FiguresUnavailableError(RuntimeError):
    """matplotlib, which figures need, is not installed."""


@dataclass
class RenderedFigure:
    """One figure as PNG bytes, with the names the HTML page and the folder use."""

    name: str  # file stem, such as "gallery-conv1"
    title: str
    caption: str
    png: bytes
    layer: str | None = None  # None for figures about the whole run

    @property
    def filename(self) -> str:
        return f"{self.name}.png"


@dataclass
class FigureSet:
    """The figures of one run and a note for each figure that could not be drawn."""

    figures: list[RenderedFigure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def for_layer(self, layer: str | None) -> list[RenderedFigure]:
        return [figure for figure in self.figures if figure.layer == layer]


def require_matplotlib():
    """Import and return matplotlib, or raise FiguresUnavailableError naming the install command."""
    try:
        import matplotlib
        from matplotlib.backends import backend_agg  # noqa: F401  (the canvas every figure uses)
    except ImportError as error:
        raise FiguresUnavailableError(f"figures need matplotlib, which is not installed ({error}); install it with {INSTALL_HINT}") from None
    return matplotlib


def _new_figure(width: float, height: float, layout: str | None = "constrained"):
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def _file_stem(kind: str, layer: str) -> str:
    return f"{kind}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', layer)}"


# -- data for the galleries -------------------------------------------------------


def load_images(metadata: dict, labels: np.ndarray, data_root: str | os.PathLike | None = None) -> tuple[np.ndarray | None, str | None]:
    """Load the images a run probed, in the run's order; return (images [n, H, W] uint8, None) or (None, reason).

    The run probed the first ``n_samples`` of its dataset split in file order, so row
    i of every codes dataset belongs to image i. The reloaded labels must equal the
    file's labels, which catches a dataset that changed since the run.
    """
    name, split, n_samples = metadata.get("dataset"), metadata.get("split"), metadata.get("n_samples")
    if not name or not split or n_samples is None:
        return None, "the file does not record its dataset, split and sample count, so no example images can be shown"
    root = data_root if data_root is not None else (metadata.get("data_root") or None)
    # NOTE: an idx:PATH dataset with a relative PATH is found relative to the current folder only.
    try:
        data = load_dataset(str(name), root, str(split), limit=int(n_samples))
    except DatasetError as error:
        return None, f"cannot reload dataset {name!r} split {split!r} for example images: {error}"
    if data.notice or data.name != name:
        return None, f"dataset {name!r} is not available here (loading it gave {data.name!r}); pass --data-root with the folder the run used"
    if len(data) != len(labels) or not np.array_equal(data.labels.numpy(), labels):
        return None, f"the labels of dataset {name!r} split {split!r} differ from the run's labels; the data changed since the run, so example images would be wrong"
    return data.images.numpy(), None


def example_indices(codes, hit_codes: np.ndarray, examples: int) -> list[np.ndarray]:
    """Return, per hit code row, the indices of the first ``examples`` samples whose code row equals it.

    ``codes`` is the (n, P) codes dataset, read block by block so that memory stays
    bounded for long runs and wide layers.
    """
    n_samples, positions = codes.shape
    found = [np.zeros(0, dtype=np.int64) for _ in range(len(hit_codes))]
    block = max(1, MATCH_BLOCK_ELEMENTS // max(1, len(hit_codes) * positions))
    for start in range(0, n_samples, block):
        rows = np.asarray(codes[start : start + block])
        matches = (rows[:, None, :] == hit_codes[None, :, :]).all(axis=2)  # (rows, hits)
        for index in range(len(hit_codes)):
            if len(found[index]) < examples:
                found[index] = np.concatenate([found[index], start + np.flatnonzero(matches[:, index])])[:examples]
        if all(len(indices) >= examples for indices in found):
            break
    return found


# -- the figures --------------------------------------------------------------------


def gallery_figure(layer: str, hits: list[Hit], examples: list[np.ndarray], images: np.ndarray, labels: np.ndarray, columns: int | None = None):
    """Draw one row per hit: its code, label and NPMI, then the example images with their labels.

    ``examples[i]`` contains the sample indices shown for ``hits[i]``. ``columns``
    (default: the longest row) fixes the image size, so rare codes do not get larger
    images. An example's label is green when it equals the hit's label and red otherwise.
    """
    columns = max(1, columns or 0, max(len(indices) for indices in examples))
    figure = _new_figure(max(6.0, 1.0 + 0.9 * columns), 0.45 + 1.25 * len(hits))
    figure.suptitle(f"{layer}: top {len(hits)} whole-code hits and inputs that received each code", fontsize=10)
    rows = figure.subfigures(len(hits), 1, squeeze=False)[:, 0]
    for row, hit, indices in zip(rows, hits, examples):
        tested = f"  p = {hit.p_value:.2g}" if np.isfinite(hit.p_value) else ""
        row.suptitle(
            f"code {format_code(hit.code)}  label {hit.label}  NPMI {hit.npmi:.3f}  ({hit.joint_count:,} of {hit.code_count:,} samples){tested}",
            fontsize=8,
            x=0.01,
            ha="left",
        )
        axes = row.subplots(1, columns, squeeze=False)[0]
        for ax in axes:
            ax.set_axis_off()
        for ax, index in zip(axes, indices):
            ax.imshow(images[index], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            sample_label = int(labels[index])
            ax.set_title(f"#{index}: {sample_label}", fontsize=6, color="#1a7f37" if sample_label == hit.label else "#c62828", pad=2)
    return figure


def positional_figure(layer: str, result: AnalysisResult, max_panels: int = MAX_LABEL_PANELS):
    """Draw NPMI of (position, symbol) per label, and the best label per cell, on a fixed [-1, 1] scale.

    Cells whose symbol never occurred at that position are grey instead of -1.
    """
    npmi, counts = result.positional.npmi, result.positional.counts
    positions, symbols, n_labels = npmi.shape
    unseen = counts.sum(axis=2) == 0
    per_label = n_labels <= max_panels
    panels = (n_labels if per_label else 0) + 1
    panel_width = float(np.clip(0.22 * symbols + 0.7, 1.4, 4.5))
    panel_height = float(np.clip(0.22 * positions + 0.7, 1.4, 4.5))
    grid_columns = max(1, min(PANEL_COLUMNS, panels, int(MAX_FIGURE_WIDTH // panel_width)))
    grid_rows = -(-panels // grid_columns)
    figure = _new_figure(grid_columns * panel_width + 1.0, grid_rows * panel_height + 0.6)
    title = f"{layer}: positional NPMI, position x symbol"
    if not per_label:
        title += f" (best label per cell; {n_labels} labels are too many for one panel each)"
    figure.suptitle(title, fontsize=10)
    axes = figure.subplots(grid_rows, grid_columns, squeeze=False).ravel()

    colormap = _diverging_colormap()
    image = None
    panel_values = [npmi[:, :, j] for j in range(n_labels)] if per_label else []
    best = npmi.argmax(axis=2)
    panel_values.append(npmi.max(axis=2))
    panel_titles = [f"label {int(value)}" for value in result.label_values] if per_label else []
    panel_titles.append("best label per cell")
    for ax, values, panel_title in zip(axes, panel_values, panel_titles):
        image = ax.imshow(np.ma.masked_array(values, mask=unseen), cmap=colormap, vmin=-1.0, vmax=1.0, aspect="auto", interpolation="nearest")
        ax.set_title(panel_title, fontsize=8)
        ax.set_xlabel("symbol", fontsize=7)
        ax.set_ylabel("position", fontsize=7)
        ax.tick_params(labelsize=6)
        if symbols <= 30:
            ax.set_xticks(range(symbols))
        if positions <= 30:
            ax.set_yticks(range(positions))
    if positions * symbols <= MAX_ANNOTATED_CELLS:
        best_axes = axes[len(panel_values) - 1]
        for position, symbol in zip(*np.nonzero(~unseen)):
            best_axes.text(symbol, position, str(int(result.label_values[best[position, symbol]])), ha="center", va="center", fontsize=5)
    for ax in axes[len(panel_values) :]:
        ax.set_axis_off()
    colorbar = figure.colorbar(image, ax=axes[: len(panel_values)].tolist(), shrink=0.8, label="NPMI")
    colorbar.ax.tick_params(labelsize=7)
    return figure


def _diverging_colormap():
    import matplotlib

    return matplotlib.colormaps[DIVERGING_COLORMAP].with_extremes(bad=UNSEEN_COLOR)


def _stat_series(results: list[AnalysisResult], key: str) -> np.ndarray:
    return np.array([float(result.stats.get(key, np.nan)) for result in results], dtype=np.float64)


def buildup_figure(names: list[str], results: list[AnalysisResult], label_entropy_bits: float, threshold: float, min_count: int):
    """Draw how label information builds up over the layers, in the order given (network order).

    Top: plug-in MI, shuffled-label MI and, when stored, corrected MI in bits, under
    H(label), the most any layer can reach. Bottom: hits per layer (and significant
    hits after a permutation test) with, when stored, held-out, linear-probe and
    chance accuracy on a second axis.
    """
    figure = _new_figure(max(6.0, 1.1 * len(names) + 2.0), 6.5)
    top, bottom = figure.subplots(2, 1, sharex=True)
    x = np.arange(len(names))

    top.plot(x, _stat_series(results, "mutual_information_bits"), "o-", color="#1f77b4", label="MI (plug-in)")
    top.plot(x, _stat_series(results, "shuffled_mutual_information_bits"), "s--", color="#7f7f7f", label="MI, shuffled labels")
    corrected = _stat_series(results, "corrected_mutual_information_bits")
    if np.isfinite(corrected).any():
        top.plot(x, corrected, "^-", color="#d62728", label="MI, bias-corrected")
    top.axhline(label_entropy_bits, color="black", linewidth=0.8, linestyle=":", label=f"H(label) = {label_entropy_bits:.2f} bits")
    top.set_ylabel("bits")
    top.set_ylim(bottom=0)
    top.set_title("Label information per layer, in network order", fontsize=10)
    top.legend(fontsize=7, loc="best")
    top.grid(alpha=0.3)

    hits = np.array([len(result.hits(threshold, min_count)) for result in results])
    tested = [result.whole.significant is not None for result in results]
    width = 0.4 if any(tested) else 0.8
    bars = bottom.bar(x - width / 2 if any(tested) else x, hits, width=width, color="#9ecae1", label="hits")
    bottom.bar_label(bars, labels=[f"{count:,}" for count in hits], fontsize=7)
    if any(tested):
        significant = np.array([len(result.hits(threshold, min_count, significant_only=True)) if done else 0 for result, done in zip(results, tested)])
        bars = bottom.bar(x + width / 2, significant, width=width, color="#3182bd", label="significant hits (permutation test)")
        bottom.bar_label(bars, labels=[f"{count:,}" if done else "untested" for count, done in zip(significant, tested)], fontsize=7)
    bottom.set_ylabel(f"hits (NPMI >= {threshold:g}, count >= {min_count})", fontsize=8)
    bottom.set_xticks(x, names, rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    accuracy = _stat_series(results, "heldout_accuracy")
    if np.isfinite(accuracy).any():
        second = bottom.twinx()
        second.plot(x, accuracy, "D-", color="#2ca02c", label="held-out accuracy")
        linear = _stat_series(results, "linear_probe_accuracy")
        if np.isfinite(linear).any():
            second.plot(x, linear, "v--", color="#98df8a", label="linear probe accuracy")
        chance = _stat_series(results, "chance_accuracy")
        if np.isfinite(chance).any():
            second.plot(x, chance, ":", color="#555555", label="chance accuracy")
        second.set_ylim(0, 1)
        second.set_ylabel("accuracy (held-out samples)", fontsize=8)
    # Headroom for the bar labels; one legend under the axes so that it covers no bar or line.
    bottom.set_ylim(0, max(1, hits.max()) * 1.15)
    handles, labels = bottom.get_legend_handles_labels()
    if np.isfinite(accuracy).any():
        extra_handles, extra_labels = second.get_legend_handles_labels()
        handles, labels = handles + extra_handles, labels + extra_labels
    bottom.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    bottom.grid(alpha=0.3, axis="y")
    return figure


def decoded_variations(model: CategoricalVAE, typical_code: np.ndarray) -> np.ndarray:
    """Decode the typical code with position p set to symbol s, for every (p, s); return pixel probabilities (N, K, H, W)."""
    latents, categories = model.latents, model.categories
    device = next(model.parameters()).device
    codes = torch.as_tensor(np.asarray(typical_code, dtype=np.int64), device=device).repeat(latents, categories, 1)  # (N, K, N)
    position = torch.arange(latents, device=device)
    codes[position[:, None], torch.arange(categories, device=device)[None, :], position[:, None]] = torch.arange(categories, device=device)[None, :]
    one_hot = F.one_hot(codes.reshape(latents * categories, latents), categories).to(torch.float32)
    with torch.no_grad():
        probabilities = torch.sigmoid(model.decode(one_hot))  # (N*K, 1, H, W)
    return probabilities.reshape(latents, categories, *probabilities.shape[-2:]).cpu().numpy()


def decoder_grid_figure(model: CategoricalVAE, typical_code: np.ndarray, result: AnalysisResult | None = None, threshold: float = 0.4, min_count: int = 1):
    """Draw one row per latent position: the decoder's image for each symbol there, the others held at ``typical_code``.

    The cell that equals the typical code has a red frame. When ``result`` (the latent
    layer's) is given, each cell names its best label by positional NPMI if that NPMI
    reaches ``threshold``. Cells of symbols that the run never produced read "unseen".
    """
    was_training = model.training
    model.eval()
    try:
        pictures = decoded_variations(model, typical_code)
    finally:
        model.train(was_training)
    latents, categories = pictures.shape[:2]
    figure = _new_figure(0.62 * categories + 1.2, 0.85 * latents + 0.9)
    figure.suptitle(f"Decoder outputs: one position runs over all {categories} symbols, the others stay at the typical code {format_code(typical_code)}", fontsize=9)
    axes = figure.subplots(latents, categories, squeeze=False)
    for position in range(latents):
        for symbol in range(categories):
            ax = axes[position, symbol]
            ax.imshow(pictures[position, symbol], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if position == 0:
                ax.set_title(str(symbol), fontsize=7)
            if symbol == 0:
                ax.set_ylabel(f"position {position}", fontsize=7)
            if symbol == int(typical_code[position]):
                for spine in ax.spines.values():
                    spine.set_color("#d62728")
                    spine.set_linewidth(2.0)
            if result is not None:
                ax.set_xlabel(_cell_label(result, position, symbol, threshold, min_count), fontsize=5, labelpad=1)
    return figure


def _cell_label(result: AnalysisResult, position: int, symbol: int, threshold: float, min_count: int) -> str:
    counts, values = result.positional.counts[position, symbol], result.positional.npmi[position, symbol]
    if counts.sum() == 0:
        return "unseen"
    best = int(values.argmax())
    if values[best] >= threshold and counts[best] >= min_count:
        return f"{int(result.label_values[best])}: {values[best]:.2f}"
    return ""


# -- putting a run's figures together -------------------------------------------


def _label_entropy_bits(labels: np.ndarray) -> float:
    counts = np.unique(labels, return_counts=True)[1].astype(np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_decoder(metadata: dict, checkpoint: str | os.PathLike | None) -> tuple[CategoricalVAE | None, str | None]:
    if metadata.get("model") != VAE_MODEL_NAME:
        return None, f"no decoder grid: the run probed {metadata.get('model') or 'an unnamed model'}, not the categorical VAE"
    path = checkpoint or metadata.get("checkpoint")
    if not path:
        return None, "no decoder grid: the file records no checkpoint; pass --checkpoint"
    path = Path(path)
    if not path.is_file():
        return None, f"no decoder grid: checkpoint {path} not found; pass --checkpoint with the run's model file"
    expected = metadata.get("checkpoint_sha256")
    if expected and _sha256(path) != expected:
        return None, f"no decoder grid: checkpoint {path} has changed since the run (SHA-256 differs); pass --checkpoint with the run's model file"
    try:
        model, _ = load_checkpoint(path)
    except CheckpointError as error:
        return None, f"no decoder grid: {error}"
    return model, None


def _latent_layer(run: ProbeFile, names: list[str], model: CategoricalVAE) -> str | None:
    for name in names:
        attrs = run.layers[name].attrs
        if attrs.get("module") == LATENT_MODULE and attrs.get("quantizer") == "argmax" and int(attrs.get("positions", -1)) == model.latents and int(attrs.get("alphabet_size", -1)) == model.categories:
            return name
    return None


def render_figures(
    run: ProbeFile,
    threshold: float = 0.4,
    min_count: int = 1,
    top: int = 10,
    layers: list[str] | None = None,
    examples: int = GALLERY_EXAMPLES,
    images: np.ndarray | None = None,
    model: CategoricalVAE | None = None,
    data_root: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    significant_only: bool = True,
) -> FigureSet:
    """Draw the build-up plot, the latent decoder grid and, per layer, a gallery and positional heatmaps.

    Passing ``images`` (the run's inputs, [n, H, W]) or ``model`` saves reloading the
    data or the checkpoint named in the file. ``data_root`` and ``checkpoint`` replace
    the stored locations. Galleries show only hits significant at the run's FDR when
    the file has a permutation test, unless ``significant_only`` is False. A figure
    that cannot be drawn leaves a note in the FigureSet.
    """
    require_matplotlib()
    names = [name for name in (layers or list(run.layers)) if run.layers[name].result is not None]
    figure_set = FigureSet()
    if not names:
        figure_set.notes.append("no layer in the file has results, so there is nothing to draw")
        return figure_set

    results = [run.layers[name].result for name in names]
    figure = buildup_figure(names, results, _label_entropy_bits(run.labels), threshold, min_count)
    figure_set.figures.append(
        RenderedFigure("buildup", "Build-up over layers", "Mutual information with the labels per layer in network order, with the shuffled-label baseline, and the number of hits; bias-corrected MI, significant hits and accuracies where the file stores them.", _png_bytes(figure))
    )

    _add_decoder_grid(figure_set, run, names, model, checkpoint, threshold, min_count)

    if images is None:
        images, reason = load_images(run.metadata, run.labels, data_root)
        if reason:
            figure_set.notes.append(f"no galleries: {reason}")
    elif len(images) != len(run.labels):
        figure_set.notes.append(f"no galleries: {len(images)} images were given for {len(run.labels)} samples")
        images = None

    for name, result in zip(names, results):
        if images is not None and top > 0:
            hits = result.hits(threshold, min_count, significant_only=significant_only)[:top]
            if hits:
                hit_codes = np.array([hit.code for hit in hits], dtype=np.int64)
                examples_per_hit = example_indices(run.layers[name].codes, hit_codes, examples)
                figure = gallery_figure(name, hits, examples_per_hit, images, run.labels, columns=examples)
                caption = f"Each row is one of the top {len(hits)} whole-code hits of {name}, with up to {examples} inputs that received the code; an input's label is green when it matches the hit's label."
                figure_set.figures.append(RenderedFigure(_file_stem("gallery", name), f"{name}: examples of the top hits", caption, _png_bytes(figure), layer=name))
            else:
                tested = significant_only and result.whole.significant is not None
                qualifier = " that is significant at the run's FDR (--all-hits shows the others)" if tested else ""
                figure_set.notes.append(f"no gallery for {name}: no whole-code hit has NPMI >= {threshold:g} and joint count >= {min_count}{qualifier}")
        figure = positional_figure(name, result)
        caption = "NPMI of each (position, symbol) with each label on a fixed [-1, 1] scale; grey cells are symbols never seen at that position."
        figure_set.figures.append(RenderedFigure(_file_stem("positional", name), f"{name}: positional NPMI", caption, _png_bytes(figure), layer=name))

    for note in figure_set.notes:
        logger.info(note)
    return figure_set


def _add_decoder_grid(figure_set: FigureSet, run: ProbeFile, names: list[str], model, checkpoint, threshold: float, min_count: int) -> None:
    if model is None:
        model, reason = _load_decoder(run.metadata, checkpoint)
        if reason:
            figure_set.notes.append(reason)
            return
    elif not isinstance(model, CategoricalVAE):
        figure_set.notes.append(f"no decoder grid: the model is a {type(model).__name__}, not the categorical VAE")
        return
    latent = _latent_layer(run, names, model)
    if latent is None:
        figure_set.notes.append(f"no decoder grid: the shown layers include no argmax-coded latent layer of {model.latents} x {model.categories}; add latent to --layers")
        return
    result = run.layers[latent].result
    typical_code = result.whole.codes[result.whole.counts.sum(axis=1).argmax()]
    figure = decoder_grid_figure(model, typical_code, result, threshold, min_count)
    caption = (
        f"Row p shows what the decoder draws when latent position p takes each symbol and the other positions keep the run's most frequent code {format_code(typical_code)} (red frame). "
        f"Under a cell: the label with the highest positional NPMI when it reaches {threshold:g}, or 'unseen' when the run never produced that symbol there."
    )
    figure_set.figures.append(RenderedFigure("decoder-grid", f"{latent}: what each symbol draws", caption, _png_bytes(figure)))


def save_figures(figure_set: FigureSet, folder: str | os.PathLike) -> list[Path]:
    """Write every figure as ``<folder>/<name>.png``, creating the folder; return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for figure in figure_set.figures:
        path = folder / figure.filename
        path.write_bytes(figure.png)
        paths.append(path)
    return paths
