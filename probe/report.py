"""Command line: ``python -m probe.report PATH`` re-renders a result file's tables.

Needs only the HDF5 file, not the model or the data. ``--json`` prints the
per-layer summary as JSON instead of tables. Exit codes: 0 success, 2 for a
missing, foreign, damaged or incomplete file and other usage errors.
"""

from __future__ import annotations

import argparse
import json
import math
import sys


from .store import StoreError, load
from .tables import LayerView, make_console, render_layer, render_summary, summary_rows

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m probe.report``."""
    parser = _Parser(prog="python -m probe.report", description="Print the NPMI tables of a probe result file.")
    parser.add_argument("path", help="HDF5 file written by python -m probe.run or python -m probe.npmi")
    parser.add_argument("--threshold", type=float, help="NPMI at or above which a pair is a hit (default: the run's own)")
    parser.add_argument("--top", type=int, default=10, help="rows per hit table (default 10)")
    parser.add_argument("--min-count", type=int, help="joint count a pair needs to be a hit (default: the run's own)")
    parser.add_argument("--layers", help="comma-separated layers to show (default: all)")
    parser.add_argument("--json", action="store_true", help="print the per-layer summary as JSON")
    return parser


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv: list[str] | None = None) -> int:
    """Load the file, then print tables or JSON; return the exit code."""
    args = build_parser().parse_args(argv)
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
            }
            print(json.dumps(summary, indent=2))
            return 0
        console = make_console()
        console.print(f"{args.path}: {handle.metadata.get('n_samples', '?')} samples of {handle.metadata.get('dataset', '?')} ({handle.metadata.get('split', '?')})", soft_wrap=True)
        render_summary(console, views, threshold, min_count)
        for view in views:
            render_layer(console, view, threshold, args.top, min_count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
