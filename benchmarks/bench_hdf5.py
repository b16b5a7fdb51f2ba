"""HDF5 benchmark: writing and reading conv1 codes with --pool none (8 x 14 x 14 = 1,568 positions).

The codes are real: conv1 of the reference VAE on Fashion-MNIST, quantised with
``quantile:2`` fitted on the first 4,096 images as ``probe.run`` does. They are
written in blocks of --flush-every rows, gzip level 1, into a resizable dataset

- with the chunk shape of ``probe.store.chunk_shape`` (what ProbeWriter uses),
- with h5py's automatic chunking (``chunks=True``),
- and through ``ProbeWriter`` itself (append per batch, flush, commit),

then read back: the whole layer, and the first 1,000 rows. Reads follow the
writes, so the file is in the page cache; they measure decompression and HDF5,
not the disk.

    python -m benchmarks.bench_hdf5
    python -m benchmarks.bench_hdf5 --quick
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch

from models import CategoricalVAE, as_float_batch, load_checkpoint, load_dataset
from probe.quantize import code_dtype, parse_spec, pool
from probe.store import ProbeWriter, chunk_shape

from .common import Stopwatch, apply_threads, base_parser, check_positive, machine_info, median, write_result

DEFAULT_DATASET = "idx:/usr/share/datasets/fashion-mnist"
CALIBRATION = 4096
BATCH_SIZE = 500
FLUSH_EVERY = 10_000
SLICE_ROWS = 1000


def conv1_codes(dataset: str, split: str, limit: int | None, checkpoint: str | None, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Return conv1 codes [n, 1568] uint8, the labels [n] and a description of the weights."""
    data = load_dataset(dataset, split=split, limit=limit)
    if checkpoint:
        model, _ = load_checkpoint(checkpoint)
        weights = f"checkpoint {checkpoint}"
    else:
        torch.manual_seed(seed)
        model = CategoricalVAE().eval()
        weights = f"seeded random weights (torch.manual_seed({seed}))"
    conv1 = model.encoder.conv1
    quantizer = parse_spec("quantile:2")
    with torch.no_grad():
        quantizer.fit(pool(conv1(as_float_batch(data.images[:CALIBRATION])), "none"))
        parts = [quantizer(pool(conv1(as_float_batch(data.images[start : start + BATCH_SIZE])), "none")).numpy() for start in range(0, len(data), BATCH_SIZE)]
    codes = np.concatenate(parts).astype(code_dtype(quantizer.alphabet_size))
    return codes, data.labels.numpy(), weights


def write_h5py(path: Path, codes: np.ndarray, chunks, block_rows: int) -> tuple[int, int]:
    """Write codes in blocks into a resizable gzip-1 dataset; return its chunk shape."""
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset(
            "codes", shape=(0, codes.shape[1]), maxshape=(None, codes.shape[1]), dtype=codes.dtype, chunks=chunks, compression="gzip", compression_opts=1
        )
        for start in range(0, len(codes), block_rows):
            block = codes[start : start + block_rows]
            dataset.resize(start + len(block), axis=0)
            dataset[start:] = block
        return dataset.chunks


def write_probe_writer(path: Path, codes: np.ndarray, labels: np.ndarray, flush_every: int) -> tuple[int, int]:
    """Write codes through ProbeWriter the way probe.run does; return the chunk shape."""
    writer = ProbeWriter(path, overwrite=True, attrs={"command": "python -m benchmarks.bench_hdf5"})
    writer.write_labels(labels)
    writer.add_layer("conv1", codes.shape[1], 2, codes.dtype)
    last_flush = 0
    for start in range(0, len(codes), BATCH_SIZE):
        stop = min(start + BATCH_SIZE, len(codes))
        writer.append("conv1", codes[start:stop])
        if stop - last_flush >= flush_every:
            writer.flush()
            last_flush = stop
    chunks = writer.file["layers/conv1/codes"].chunks
    writer.commit()
    return chunks


def read_all(path: Path, name: str) -> np.ndarray:
    with h5py.File(path, "r") as handle:
        return handle[name][()]


def read_slice(path: Path, name: str) -> np.ndarray:
    with h5py.File(path, "r") as handle:
        return handle[name][:SLICE_ROWS]


def measure(codes: np.ndarray, labels: np.ndarray, folder: Path, repeats: int, flush_every: int) -> list[dict]:
    """Time writes and reads for each layout, interleaved within each repeat."""
    stopwatch = Stopwatch("cpu")
    chosen = chunk_shape(codes.shape[1], codes.dtype.itemsize)
    layouts = {
        "chunk_shape": (folder / "chosen.h5", "codes", lambda path: write_h5py(path, codes, chosen, flush_every)),
        "h5py_auto": (folder / "auto.h5", "codes", lambda path: write_h5py(path, codes, True, flush_every)),
        "probe_writer": (folder / "writer.h5", "layers/conv1/codes", lambda path: write_probe_writer(path, codes, labels, flush_every)),
    }
    times = {name: {"write": [], "read_all": [], "read_slice": []} for name in layouts}
    chunks = {}
    for _ in range(repeats):
        for name, (path, dataset, write) in layouts.items():
            path.unlink(missing_ok=True)
            seconds, chunks[name] = stopwatch.time(write, path)
            times[name]["write"].append(seconds)
            seconds, stored = stopwatch.time(read_all, path, dataset)
            times[name]["read_all"].append(seconds)
            if not np.array_equal(stored, codes):
                raise AssertionError(f"{name}: the codes read back differ from those written")
            times[name]["read_slice"].append(stopwatch.time(read_slice, path, dataset)[0])

    figures = []
    raw_bytes = codes.nbytes
    for name, (path, _, _) in layouts.items():
        write, read = median(times[name]["write"]), median(times[name]["read_all"])
        figures.append(
            {
                "layout": name,
                "chunks": list(chunks[name]),
                "chunk_bytes": int(np.prod(chunks[name])) * codes.dtype.itemsize,
                "file_bytes": path.stat().st_size,
                "write_seconds": write,
                "write_bytes_per_second": raw_bytes / write,
                "write_rows_per_second": len(codes) / write,
                "read_all_seconds": read,
                "read_bytes_per_second": raw_bytes / read,
                "read_slice_seconds": median(times[name]["read_slice"]),
                "seconds": times[name],
            }
        )
    chosen_write = times["chunk_shape"]["write"]
    for figure in figures:
        figure["write_time_vs_chunk_shape"] = median(a / b for a, b in zip(times[figure["layout"]]["write"], chosen_write))
    return figures


def build_parser():
    parser = base_parser("hdf5", "Time writing and reading conv1 codes (--pool none, 1,568 positions) with probe's chunk shape and with h5py's automatic chunking.")
    parser.add_argument("--dataset", default=DEFAULT_DATASET, help=f"dataset as probe.run takes it (default {DEFAULT_DATASET})")
    parser.add_argument("--split", default="train", help="split (default train: 60,000 images)")
    parser.add_argument("--limit", type=int, help="use only the first N images (default: all; --quick 6000)")
    parser.add_argument("--checkpoint", help="model checkpoint for conv1 (default: the reference VAE with seeded random weights)")
    parser.add_argument("--flush-every", type=int, default=FLUSH_EVERY, help=f"rows per write, as probe.run's --flush-every (default {FLUSH_EVERY})")
    parser.add_argument("--workdir", type=Path, help="folder for the HDF5 files (default: a new temporary folder, removed afterwards)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_threads(parser, args.threads)
    for option in ("repeats", "limit", "flush_every"):
        check_positive(parser, "--" + option.replace("_", "-"), getattr(args, option))
    repeats = args.repeats or (2 if args.quick else 5)
    limit = args.limit or (6000 if args.quick else None)

    codes, labels, weights = conv1_codes(args.dataset, args.split, limit, args.checkpoint, args.seed)
    print(f"conv1 codes {codes.shape} {codes.dtype}, {codes.nbytes / 2**20:.1f} MiB, weights: {weights}", flush=True)
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="probe-bench-hdf5-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        figures = measure(codes, labels, folder, repeats, args.flush_every)
    finally:
        if args.workdir is None:
            shutil.rmtree(folder, ignore_errors=True)
    for figure in figures:
        print(
            f"{figure['layout']:>13} chunks {str(tuple(figure['chunks'])):>12}: write {figure['write_seconds']:.3f} s "
            f"({figure['write_bytes_per_second'] / 2**20:.0f} MiB/s), read all {figure['read_all_seconds']:.3f} s "
            f"({figure['read_bytes_per_second'] / 2**20:.0f} MiB/s), first {SLICE_ROWS} rows {figure['read_slice_seconds'] * 1e3:.1f} ms, "
            f"file {figure['file_bytes'] / 2**20:.1f} MiB"
        )
    payload = {
        "title": "HDF5: writing and reading conv1 codes",
        "quick": args.quick,
        "machine": machine_info("cpu"),
        "settings": {"dataset": args.dataset, "split": args.split, "n": len(codes), "positions": codes.shape[1], "dtype": str(codes.dtype), "weights": weights, "flush_every": args.flush_every, "repeats": repeats, "compression": "gzip level 1", "slice_rows": SLICE_ROWS},
        "figures": figures,
        "targets": [],
    }
    path = write_result("hdf5", args.out, payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
