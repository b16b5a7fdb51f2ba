"""Command line: ``python -m probe.npmi --codes CODES --labels LABELS`` for codes from anywhere.

Runs the counting, NPMI, n-gram and table code of ``python -m probe.run`` on discrete
codes that come from elsewhere (an emergent-communication game, another library's
quantiser), with no model. CODES is an integer matrix (n, P), LABELS one integer per
row; each is a ``.npy`` file, a ``.csv`` file (an optional header row is skipped) or
an HDF5 dataset written ``file.h5:path/to/dataset``.

``--out`` writes the layout of ``python -m probe.run`` (docs/hdf5.md) with the codes
as one layer named ``codes``; ``--json`` prints the summary as JSON instead of tables.
Exit codes: 0 success, 2 usage error or invalid input.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import torch

from .cli import ArgumentParser, UsageError, EXIT_USAGE
from .analysis import analyze
from .assessment import DEFAULT_MIN_COUNT
from .decoding import DEFAULT_HOLDOUT
from .ngrams import parse_orders
from .observations import ObservationError, read_observations
from .quantize import code_dtype
from .significance import DEFAULT_FDR, DEFAULT_PERMUTATIONS
from .store import ProbeWriter, StoreError, check_output_path
from .tables import LayerView, make_console, observation_rows, render_layer, render_ngrams, render_observations, render_summary, summary_rows, value_hit_rows

LAYER_NAME = "codes"
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
WRITE_ROWS = 1 << 16




def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m probe.npmi``."""
    parser = ArgumentParser(
        prog="python -m probe.npmi",
        description="Measure which discrete codes, symbols and n-grams go with which labels and attributes (NPMI), "
        "for codes from any source. Inputs are .npy, .csv or file.h5:path/to/dataset.",
    )
    parser.add_argument("--codes", required=True, help="integer codes (n, P), or (n,) for single symbols")
    parser.add_argument("--labels", required=True, help="one integer label per code row (n,)")
    parser.add_argument("--observations", metavar="FILE", help="attributes, one row per code row: a CSV with a header of names (';' in a cell makes the column multi-label) or a .npy [n] or [n, A]")
    parser.add_argument("--ngrams", default="3", metavar="LENGTHS", help="n-gram lengths: N for 1..N, a list 1,2 or a range 2-3; 0 turns n-grams off (default 3)")
    parser.add_argument("--alphabet-size", type=int, help="symbols per position (default: the largest code plus one)")
    parser.add_argument("--threshold", type=float, default=0.4, help="NPMI at or above which a pair is a hit (default 0.4)")
    parser.add_argument("--min-count", type=int, default=DEFAULT_MIN_COUNT, help=f"joint count a pair needs to be a hit (default {DEFAULT_MIN_COUNT})")
    parser.add_argument("--top", type=int, default=10, help="rows per hit table, and hits per value in --json (default 10)")
    parser.add_argument("--permutations", type=int, default=DEFAULT_PERMUTATIONS, metavar="R", help=f"label permutations for p-values of whole-code hits; 0 turns the test off (default {DEFAULT_PERMUTATIONS})")
    parser.add_argument("--fdr", type=float, default=DEFAULT_FDR, help=f"false discovery rate for flagging hits (default {DEFAULT_FDR})")
    parser.add_argument("--holdout", type=float, default=DEFAULT_HOLDOUT, help=f"fraction of rows held out to score the decoders; 0 turns decoding off (default {DEFAULT_HOLDOUT})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled-label baseline and the permutations (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device that counts, such as cpu or cuda (default cpu)")
    parser.add_argument("--out", help="write the results to this HDF5 file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON instead of tables")
    return parser


def _read_csv(path: Path) -> np.ndarray:
    with open(path, encoding="utf-8") as handle:
        first = handle.readline()
    cells = [cell.strip() for cell in first.split(",")]
    has_header = any(cell and not cell.lstrip("+-").isdigit() for cell in cells)
    try:
        with warnings.catch_warnings():
            # An empty file is reported below as an empty array, not as numpy's warning.
            warnings.simplefilter("ignore", UserWarning)
            return np.loadtxt(path, delimiter=",", dtype=np.int64, skiprows=1 if has_header else 0, ndmin=2)
    except ValueError as error:
        raise UsageError(f"cannot read {path} as a CSV of integers ({error}); put one row per sample, values separated by commas") from None


def _read_hdf5(spec: str) -> np.ndarray:
    file_name, _, dataset = spec.rpartition(":")
    path = Path(file_name)
    if not path.is_file():
        raise UsageError(f"HDF5 file {path} not found (from {spec!r})")
    try:
        with h5py.File(path, "r") as handle:
            if dataset not in handle or not isinstance(handle[dataset], h5py.Dataset):
                raise UsageError(f"{path} has no dataset {dataset!r}; give file.h5:path/to/dataset, such as {path}:layers/latent/codes")
            return handle[dataset][()]
    except OSError as error:
        raise UsageError(f"cannot read {path} as HDF5 ({error})") from None


def read_array(spec: str, option: str) -> np.ndarray:
    """Read ``--codes`` or ``--labels`` from .npy, .csv or file.h5:path/to/dataset."""
    head, sep, _ = spec.rpartition(":")
    if sep and Path(head).suffix.lower() in HDF5_SUFFIXES:
        array = _read_hdf5(spec)
    else:
        path = Path(spec)
        if path.is_dir():
            raise UsageError(f"{option} {path} is a folder; give a .npy or .csv file or file.h5:path/to/dataset")
        if not path.is_file():
            raise UsageError(f"{option} file {path} not found")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            try:
                array = np.load(path, allow_pickle=False)
            except (ValueError, EOFError, OSError) as error:
                raise UsageError(f"cannot read {path} as .npy ({error})") from None
        elif suffix == ".csv":
            array = _read_csv(path)
        elif suffix in HDF5_SUFFIXES:
            raise UsageError(f"{option} {spec}: name the dataset inside the file, as in {spec}:path/to/dataset")
        else:
            raise UsageError(f"{option} {spec}: expected a .npy or .csv file or file.h5:path/to/dataset")
    if array.dtype.kind == "f" and np.isfinite(array).all() and np.array_equal(array, np.round(array)):
        array = array.astype(np.int64)
    if array.dtype.kind not in "iub":
        raise UsageError(f"{option} {spec} contains {array.dtype} values; it must contain integers (string attributes go in --observations)")
    return array


def _check(args: argparse.Namespace) -> None:
    for option, value, low in (("--top", args.top, 0), ("--min-count", args.min_count, 1), ("--permutations", args.permutations, 0), ("--alphabet-size", args.alphabet_size, 1)):
        if value is not None and value < low:
            raise UsageError(f"invalid {option} {value}; it must be at least {low}")
    if not -1.0 <= args.threshold <= 1.0:
        raise UsageError(f"invalid --threshold {args.threshold}; NPMI lies in [-1, 1]")
    if not 0.0 < args.fdr <= 1.0:
        raise UsageError(f"invalid --fdr {args.fdr}; it must lie in (0, 1], for example 0.05")
    if not 0.0 <= args.holdout < 1.0:
        raise UsageError(f"invalid --holdout {args.holdout}; it must lie in [0, 1), for example 0.2 (0 turns decoding off)")
    try:
        args.ngram_lengths = parse_orders(args.ngrams)
    except ValueError as error:
        raise UsageError(f"--ngrams: {error}") from None
    if args.out:
        try:
            check_output_path(Path(args.out), args.overwrite)
        except StoreError as error:
            raise UsageError(str(error)) from None


def _load_inputs(args: argparse.Namespace):
    codes = read_array(args.codes, "--codes")
    labels = read_array(args.labels, "--labels")
    if codes.ndim == 1:
        codes = codes[:, None]
    if codes.ndim != 2:
        raise UsageError(f"--codes {args.codes} has shape {codes.shape}; it must be (n, positions)")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise UsageError(f"--labels {args.labels} has shape {labels.shape}; it must hold one label per code row")
    if len(codes) != len(labels):
        raise UsageError(f"--codes has {len(codes)} rows but --labels has {len(labels)}; give one label per code row")
    if codes.size == 0:
        raise UsageError(f"--codes {args.codes} is empty (shape {codes.shape}); it must hold at least one row and one column")
    if codes.min() < 0:
        raise UsageError(f"--codes contains the negative symbol {codes.min()}; symbols must be non-negative integers")
    attributes = []
    if args.observations:
        try:
            attributes = read_observations(args.observations, n_samples=len(codes))
        except ObservationError as error:
            raise UsageError(f"--observations: {error}") from None
    alphabet = int(codes.max()) + 1
    if args.alphabet_size is not None and args.alphabet_size < alphabet:
        raise UsageError(f"--codes contains symbol {alphabet - 1}, which does not fit --alphabet-size {args.alphabet_size}")
    return codes, labels, attributes, args.alphabet_size or alphabet


def _write(args: argparse.Namespace, codes: np.ndarray, labels: np.ndarray, attributes, alphabet_size: int, result, seconds: float) -> None:
    attrs = {
        "command": shlex.join(["python -m probe.npmi", *sys.argv[1:]]),
        "model": "",
        "dataset": args.codes,
        "dataset_description": f"codes from {args.codes}, labels from {args.labels}",
        "split": "all",
        "n_samples": len(codes),
        "seed": args.seed,
        "device": args.device,
        "threshold": args.threshold,
        "min_count": args.min_count,
        "permutations": args.permutations,
        "fdr": args.fdr,
        "holdout": args.holdout,
        "layers": [LAYER_NAME],
        "observations": [attribute.name for attribute in attributes],
        "ngram_lengths": list(args.ngram_lengths),
        "seconds_count": seconds,
    }
    try:
        writer = ProbeWriter(args.out, overwrite=args.overwrite, attrs=attrs)
    except StoreError as error:
        raise UsageError(str(error)) from None
    with writer:
        writer.write_labels(labels, result.label_values)
        writer.write_observations(attributes)
        writer.add_layer(LAYER_NAME, codes.shape[1], alphabet_size, code_dtype(alphabet_size), {"module": "", "quantizer": "given", "pooling": "none"})
        for start in range(0, len(codes), WRITE_ROWS):
            writer.append(LAYER_NAME, codes[start : start + WRITE_ROWS])
        writer.write_result(LAYER_NAME, result)
        writer.commit()


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def run(args: argparse.Namespace) -> int:
    """Analyse the codes from parsed arguments, print tables or JSON; return the exit code."""
    _check(args)
    codes, labels, attributes, alphabet_size = _load_inputs(args)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UsageError(f"invalid --device {args.device!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but no CUDA device is available; use --device cpu")

    began = time.perf_counter()
    try:
        result = analyze(
            codes,
            labels,
            device=device,
            alphabet_size=alphabet_size,
            seed=args.seed,
            ngrams=args.ngram_lengths,
            observations=attributes,
            permutations=args.permutations,
            holdout=args.holdout,
            fdr=args.fdr,
            min_count=args.min_count,
        )
    except (ValueError, TypeError) as error:
        raise UsageError(f"cannot analyse --codes {args.codes}: {error}") from None
    seconds = time.perf_counter() - began
    if args.out:
        _write(args, codes, labels, attributes, alphabet_size, result, seconds)

    view = LayerView(LAYER_NAME, {"positions": codes.shape[1], "alphabet_size": alphabet_size, "quantizer": "given"}, result)
    if args.json:
        summary = {
            "codes": args.codes,
            "labels": args.labels,
            "n_samples": len(codes),
            "threshold": args.threshold,
            "min_count": args.min_count,
            "ngram_lengths": list(args.ngram_lengths),
            "layers": summary_rows([view], args.threshold, args.min_count),
            "observations": observation_rows(view, args.threshold, args.min_count),
            "value_hits": value_hit_rows(view, args.threshold, args.min_count, per_value=args.top),
        }
        if args.out:
            summary["out"] = str(args.out)
        print(json.dumps(_json_safe(summary), indent=2))
        return 0
    console = make_console()
    render_summary(console, [view], args.threshold, args.min_count)
    render_layer(console, view, args.threshold, args.top, args.min_count)
    render_ngrams(console, view, args.threshold, args.top, args.min_count)
    render_observations(console, view, args.threshold, args.min_count)
    if args.out:
        console.print(f"Saved {args.out} ({len(codes):,} rows, {seconds:.1f} s of counting).")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, and map errors to exit codes."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
