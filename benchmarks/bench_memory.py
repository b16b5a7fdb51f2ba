"""Memory benchmark: peak RSS of a probe.run over n and over 10 n samples.

Each run is a fresh subprocess that calls ``probe.run.main`` with its dataset
loader replaced by one that repeats the same images R times without copying them
(``RepeatedImages`` gathers each batch from the base images), so n = 600,000 needs
no 10x file and no 10x image tensor. Everything else is probe.run as is: hooks,
quantisers, HDF5 writes of every code, counting and the statistics after the pass.
The subprocess reports VmHWM from /proc/self/status and ru_maxrss.

probe.run itself loads a whole dataset into memory (n x 784 bytes of images for
28 x 28 inputs), so a real run over 600,000 images keeps 10 times the images of
one over 60,000 in memory. This benchmark leaves that part out by design, and the results state it.

    python -m benchmarks.bench_memory
    python -m benchmarks.bench_memory --quick
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from .bench_overhead import DEFAULT_DATASET, DEFAULT_LAYERS, DEFAULT_PROBE_ARGS, DEFAULT_TRAIN_STEPS, prepare_checkpoint
from .common import apply_threads, base_parser, check_positive, current_rss_bytes, machine_info, median, peak_rss_bytes, target, write_result

FACTORS = (1, 10)
TARGET_GROWTH = 0.10


class RepeatedImages:
    """The images of a dataset repeated ``repeats`` times, read by slices without a copy of the whole."""

    def __init__(self, images: torch.Tensor, repeats: int):
        self.base = images
        self.repeats = repeats

    def __len__(self) -> int:
        return len(self.base) * self.repeats

    def __getitem__(self, index):
        if not isinstance(index, slice):
            raise TypeError(f"RepeatedImages supports slices only, got {type(index).__name__}")
        start, stop, step = index.indices(len(self))
        return self.base[torch.arange(start, stop, step) % len(self.base)]


class RepeatedData:
    """A stand-in for models.ImageData whose images are ``RepeatedImages``."""

    def __init__(self, data, repeats: int):
        self.images = RepeatedImages(data.images, repeats)
        self.labels = data.labels.repeat(repeats)
        self.name = data.name
        self.split = data.split
        self.description = f"{data.description}, repeated {repeats} times"
        self.notice = None

    def __len__(self) -> int:
        return len(self.labels)


def run_child(repeats: int, result_path: Path, probe_argv: list[str]) -> int:
    """Run probe.run in this process over the data repeated ``repeats`` times; write peak memory as JSON."""
    import probe.run

    loaded = {}
    original_loader = probe.run.load_dataset

    def load_repeated(*args, **kwargs):
        data = RepeatedData(original_loader(*args, **kwargs), repeats)
        loaded["n"] = len(data)
        loaded["rss_after_load_bytes"] = current_rss_bytes()
        return data

    probe.run.load_dataset = load_repeated
    exit_code = probe.run.main(probe_argv)
    result = {"exit_code": exit_code, "repeats": repeats, **loaded, **peak_rss_bytes()}
    result_path.write_text(json.dumps(result))
    return exit_code


def measure(factor: int, args, checkpoint: str, folder: Path) -> dict:
    """Run one fresh subprocess over the data repeated ``factor`` times and return its memory figures."""
    out = folder / f"probe-{factor}.h5"
    result_path = folder / f"memory-{factor}.json"
    probe_argv = ["--checkpoint", checkpoint, "--dataset", args.dataset, "--split", args.split, "--layers", args.layers, "--batch-size", str(args.batch_size), "--out", str(out), "--overwrite"]
    if args.limit:
        probe_argv += ["--limit", str(args.limit)]
    probe_argv += shlex.split(args.probe_args)
    command = [sys.executable, "-m", "benchmarks.bench_memory", "--child", str(factor), "--child-result", str(result_path), "--", *probe_argv]
    environment = dict(os.environ)
    if args.threads is not None:
        environment["OMP_NUM_THREADS"] = str(args.threads)
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=Path(__file__).resolve().parent.parent)
    if completed.returncode != 0 or not result_path.exists():
        raise RuntimeError(f"the probe.run subprocess over {factor}x the data failed with exit code {completed.returncode}: {completed.stderr.strip()[-2000:]}")
    figure = json.loads(result_path.read_text())
    figure["probe_argv"] = shlex.join(probe_argv).replace(str(folder), "<tmp>")
    out.unlink(missing_ok=True)
    return figure


def build_parser():
    parser = base_parser("memory", "Compare the peak RSS of probe.run over n samples and over the same samples repeated 10 times.")
    parser.add_argument("--dataset", default=DEFAULT_DATASET, help=f"dataset as probe.run takes it (default {DEFAULT_DATASET})")
    parser.add_argument("--split", default="train", help="split (default train: 60,000 images, so 600,000 repeated)")
    parser.add_argument("--limit", type=int, help="images before repetition (default: all; --quick 2000)")
    parser.add_argument("--layers", default=DEFAULT_LAYERS, help=f"layers to hook (default {DEFAULT_LAYERS})")
    parser.add_argument("--batch-size", type=int, default=500, help="probe.run batch size (default 500)")
    parser.add_argument("--checkpoint", help="checkpoint to probe (default: train one for --train-steps steps)")
    parser.add_argument("--train-steps", type=int, help=f"steps to train the checkpoint; 0 uses seeded random weights (default {DEFAULT_TRAIN_STEPS}, --quick 0)")
    parser.add_argument("--probe-args", default=DEFAULT_PROBE_ARGS, help=f"further probe.run options, as one string (default {DEFAULT_PROBE_ARGS!r})")
    parser.add_argument("--seed", type=int, default=0, help="seed of training or of the random weights (default 0)")
    parser.add_argument("--child", type=int, metavar="R", help=argparse.SUPPRESS)
    parser.add_argument("--child-result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("probe_argv", nargs="*", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.child is not None:
        return run_child(args.child, args.child_result, args.probe_argv)
    apply_threads(parser, args.threads)
    for option in ("repeats", "limit", "batch_size"):
        check_positive(parser, "--" + option.replace("_", "-"), getattr(args, option))
    if args.train_steps is not None and args.train_steps < 0:
        parser.error(f"invalid --train-steps {args.train_steps}; pass 0 for random weights or a positive step count")
    if args.train_steps is None:
        args.train_steps = 0 if args.quick else DEFAULT_TRAIN_STEPS
    args.device = "cpu"
    args.limit = args.limit or (2000 if args.quick else None)
    runs = args.repeats or 1

    folder = Path(tempfile.mkdtemp(prefix="probe-bench-memory-"))
    try:
        checkpoint, weights = prepare_checkpoint(args, folder)
        samples = {factor: [] for factor in FACTORS}
        for _ in range(runs):
            for factor in FACTORS:
                figure = measure(factor, args, checkpoint, folder)
                samples[factor].append(figure)
                print(f"n = {figure['n']:>9,}: peak RSS {figure['vm_hwm_bytes'] / 2**20:8.1f} MiB (ru_maxrss {figure['ru_maxrss_bytes'] / 2**20:.1f} MiB, after loading the data {figure['rss_after_load_bytes'] / 2**20:.1f} MiB)", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    figures = []
    for factor in FACTORS:
        peaks = [figure["vm_hwm_bytes"] for figure in samples[factor]]
        figures.append({"factor": factor, "n": samples[factor][0]["n"], "peak_rss_bytes": median(peaks), "runs": samples[factor]})
    growth = figures[1]["peak_rss_bytes"] / figures[0]["peak_rss_bytes"] - 1
    print(f"peak RSS at {figures[1]['n']:,} samples is {growth:+.1%} of that at {figures[0]['n']:,}")
    payload = {
        "title": "Memory: peak RSS over n and 10 n samples",
        "quick": args.quick,
        "machine": machine_info("cpu"),
        "settings": {"dataset": args.dataset, "split": args.split, "layers": args.layers, "batch_size": args.batch_size, "weights": weights, "runs_per_size": runs, "probe_args": args.probe_args, "images_held_in_memory": "the base images only, repeated by index"},
        "figures": figures,
        "growth": growth,
        "targets": [target("memory.growth", f"peak RSS over 10 n samples at most {TARGET_GROWTH:.0%} above that over n", growth, TARGET_GROWTH, higher_is_better=False, unit="fraction")],
    }
    path = write_result("memory", args.out, payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
