"""Command line: ``python -m probe.report PATH`` re-renders a result file's tables.

Needs only the HDF5 file, not the model or the data. ``--json`` prints the
per-layer summary as JSON instead of tables. ``--figures DIR`` also writes PNG
figures and ``--html FILE`` a self-contained HTML page. Both reread the example
images from the run's dataset and the decoder of the grid from its checkpoint.
Exit codes: 0 success, 1 when writing figures fails, 2 for a missing, foreign,
damaged or incomplete file and other usage errors (matplotlib missing included).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


from .cli import ArgumentParser, EXIT_RUNTIME, EXIT_USAGE
from .store import ProbeFile, StoreError, load
from .tables import LayerView, make_console, observation_rows, render_layer, render_ngrams, render_observations, render_summary, summary_rows, value_hit_rows




def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m probe.report``."""
    parser = ArgumentParser(prog="python -m probe.report", description="Print the NPMI tables of a probe result file.")
    parser.add_argument("path", help="HDF5 file written by python -m probe.run or python -m probe.npmi")
    parser.add_argument("--threshold", type=float, help="NPMI at or above which a pair is a hit (default: the run's own)")
    parser.add_argument("--top", type=int, default=10, help="rows per hit table (default 10)")
    parser.add_argument("--min-count", type=int, help="joint count a pair needs to be a hit (default: the run's own)")
    parser.add_argument("--layers", help="comma-separated layers to show (default: all)")
    parser.add_argument("--json", action="store_true", help="print the per-layer summary as JSON")
    parser.add_argument("--all-hits", action="store_true", help="list every hit in the layer tables, not only those significant at the run's FDR")
    add_figure_arguments(parser)
    parser.add_argument("--data-root", help="folder of the run's dataset files for the example images (default: the one the run used)")
    parser.add_argument("--checkpoint", help="model checkpoint for the decoder grid (default: the one the run used)")
    return parser


def add_figure_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --figures and --html, which probe.run shares."""
    parser.add_argument("--figures", metavar="DIR", help="write PNG figures into DIR (needs matplotlib: pip install -e '.[figures]')")
    parser.add_argument("--html", metavar="FILE", help="write one self-contained HTML page with the tables and figures")


def check_figure_arguments(figures: str | None, html_path: str | None) -> str | None:
    """Return an error message when --figures or --html cannot be honoured, else None."""
    if not figures and not html_path:
        return None
    from .figures import FiguresUnavailableError, require_matplotlib

    try:
        require_matplotlib()
    except FiguresUnavailableError as error:
        return str(error)
    if figures and Path(figures).exists() and not Path(figures).is_dir():
        return f"invalid --figures {figures}: it is a file, not a folder; pass a folder name"
    if html_path and Path(html_path).is_dir():
        return f"invalid --html {html_path}: it is a folder; pass a file name such as {Path(html_path) / 'report.html'}"
    return None


def write_figures(
    run: ProbeFile,
    figures: str | None,
    html_path: str | None,
    threshold: float,
    min_count: int,
    top: int,
    layers: list[str] | None = None,
    significant_only: bool = True,
    **sources,
) -> list[str]:
    """Draw the run's figures, write the PNGs and the HTML page that were requested, and return lines to print.

    ``sources`` go to ``probe.figures.render_figures`` (images, model, data_root, checkpoint).
    Raises OSError when a file cannot be written.
    """
    from .figures import render_figures, save_figures
    from .html_report import build_html, write_html

    figure_set = render_figures(run, threshold=threshold, min_count=min_count, top=top, layers=layers, significant_only=significant_only, **sources)
    lines = [f"Note: {note}" for note in figure_set.notes]
    if figures:
        paths = save_figures(figure_set, figures)
        lines.append(f"Wrote {len(paths)} figures to {figures}: {', '.join(path.name for path in paths)}")
    if html_path:
        write_html(html_path, build_html(run, figure_set, threshold, min_count, top, layers, significant_only))
        lines.append(f"Wrote {html_path} ({len(figure_set.figures)} figures embedded)")
    return lines


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv: list[str] | None = None) -> int:
    """Load the file, then print tables or JSON; return the exit code."""
    args = build_parser().parse_args(argv)
    problem = check_figure_arguments(args.figures, args.html)
    if args.top < 0:
        problem = f"invalid --top {args.top}; it must be at least 0"
    elif args.min_count is not None and args.min_count < 1:
        problem = f"invalid --min-count {args.min_count}; it must be at least 1"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        handle = load(args.path)
    except StoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    with handle:
        threshold = args.threshold if args.threshold is not None else float(handle.metadata.get("threshold", 0.4))
        min_count = args.min_count if args.min_count is not None else int(handle.metadata.get("min_count", 1))
        if not -1.0 <= threshold <= 1.0:
            print(f"error: invalid --threshold {threshold}; NPMI lies in [-1, 1]", file=sys.stderr)
            return EXIT_USAGE
        names = list(handle.layers) if not args.layers else [name.strip() for name in args.layers.split(",")]
        unknown = [name for name in names if name not in handle.layers]
        if unknown:
            print(f"error: layer {unknown[0]!r} is not in {args.path}; it has {', '.join(handle.layers)}", file=sys.stderr)
            return EXIT_USAGE
        views = [LayerView(name, handle.layers[name].attrs, handle.layers[name].result) for name in names if handle.layers[name].result is not None]
        if args.json:
            summary = {
                "path": str(args.path),
                "metadata": {key: handle.metadata[key] for key in ("dataset", "split", "n_samples", "seed", "checkpoint", "created") if key in handle.metadata},
                "threshold": threshold,
                "min_count": min_count,
                "layers": [{key: _json_safe(value) for key, value in row.items()} for row in summary_rows(views, threshold, min_count)],
                "observations": [{key: _json_safe(value) for key, value in row.items()} for view in views for row in observation_rows(view, threshold, min_count)],
                "value_hits": [row for view in views for row in value_hit_rows(view, threshold, min_count, per_value=args.top)],
            }
            print(json.dumps(summary, indent=2))
        else:
            console = make_console()
            console.print(f"{args.path}: {handle.metadata.get('n_samples', '?')} samples of {handle.metadata.get('dataset', '?')} ({handle.metadata.get('split', '?')})", soft_wrap=True)
            render_summary(console, views, threshold, min_count)
            for view in views:
                render_layer(console, view, threshold, args.top, min_count, significant_only=not args.all_hits)
                render_ngrams(console, view, threshold, args.top, min_count)
                render_observations(console, view, threshold, min_count)
        if args.figures or args.html:
            # With --json, stdout carries only the JSON document.
            stream = sys.stderr if args.json else sys.stdout
            try:
                lines = write_figures(
                    handle, args.figures, args.html, threshold, min_count, args.top, names,
                    significant_only=not args.all_hits, data_root=args.data_root, checkpoint=args.checkpoint,
                )
            except OSError as error:
                print(f"error: writing figures failed: {error}", file=sys.stderr)
                return EXIT_RUNTIME
            for line in lines:
                print(line, file=stream)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
