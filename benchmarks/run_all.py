"""Run every benchmark, each in its own subprocess, and render the Markdown page.

    python -m benchmarks.run_all --out docs/benchmarks.md
    python -m benchmarks.run_all --quick

A full run trains one reference VAE for --train-steps steps on Fashion-MNIST and
probes that checkpoint in the overhead, memory and HDF5 benchmarks. --quick uses
small sizes and seeded random weights and writes to a temporary folder unless
--results names another folder, so it never replaces the committed figures.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import RESULTS_DIR
from .render import MISSES_FILE, load_misses, load_results, render

BENCHMARKS = ("counting", "overhead", "memory", "hdf5", "gpu")
# Benchmarks that probe a trained checkpoint of the reference VAE.
CHECKPOINT_USERS = ("overhead", "memory", "hdf5")
DEFAULT_DATASET = "idx:/usr/share/datasets/fashion-mnist"
DEFAULT_TRAIN_STEPS = 200
REPOSITORY = Path(__file__).resolve().parent.parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description="Run every benchmark and render the results as Markdown.")
    parser.add_argument("--quick", action="store_true", help="small sizes that finish in minutes, to check the scripts; not reference figures")
    parser.add_argument("--only", help=f"comma-separated benchmarks to run out of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--results", type=Path, help="folder for the JSON result files (default benchmarks/results; --quick: a new temporary folder)")
    parser.add_argument("--out", type=Path, help="Markdown page to write (default docs/benchmarks.md; --quick: <results>/benchmarks.md)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads in every benchmark (default: torch's default)")
    parser.add_argument("--checkpoint", help="checkpoint for the overhead, memory and HDF5 benchmarks (default: train one; --quick: seeded random weights)")
    parser.add_argument("--train-steps", type=int, default=DEFAULT_TRAIN_STEPS, help=f"steps to train that checkpoint on Fashion-MNIST (default {DEFAULT_TRAIN_STEPS})")
    parser.add_argument("--dataset", default=DEFAULT_DATASET, help=f"dataset of the overhead, memory and HDF5 benchmarks (default {DEFAULT_DATASET})")
    return parser


def train_checkpoint(folder: Path, steps: int, dataset: str) -> str:
    """Train the reference VAE with models.train and return the checkpoint path."""
    command = [sys.executable, "-m", "models.train", "--dataset", dataset, "--split", "train", "--steps", str(steps), "--seed", "0", "--device", "cpu", "--out", str(folder)]
    print(f"$ {shlex.join(command)}", flush=True)
    subprocess.run(command, check=True, cwd=REPOSITORY)
    return str(folder / "model.pt")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",")] if args.only else list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"invalid --only {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"invalid --threads {args.threads}; it must be at least 1")
    if args.train_steps < 1:
        parser.error(f"invalid --train-steps {args.train_steps}; it must be at least 1 (pass --checkpoint to skip training)")
    results = args.results or (Path(tempfile.mkdtemp(prefix="probe-benchmarks-quick-")) if args.quick else RESULTS_DIR)
    out = args.out or (results / "benchmarks.md" if args.quick else REPOSITORY / "docs" / "benchmarks.md")
    results.mkdir(parents=True, exist_ok=True)

    checkpoint = args.checkpoint
    work = Path(tempfile.mkdtemp(prefix="probe-benchmarks-"))
    if checkpoint is None and not args.quick and any(name in CHECKPOINT_USERS for name in names):
        checkpoint = train_checkpoint(work, args.train_steps, args.dataset)

    failed = []
    for name in names:
        command = [sys.executable, "-m", f"benchmarks.bench_{name}", "--out", str(results / f"{name}.json")]
        if args.quick:
            command.append("--quick")
        if args.threads is not None:
            command += ["--threads", str(args.threads)]
        if name in CHECKPOINT_USERS:
            command += ["--dataset", args.dataset]
            if checkpoint:
                command += ["--checkpoint", checkpoint]
        print(f"$ {shlex.join(['python', *command[1:]])}", flush=True)
        began = time.perf_counter()
        completed = subprocess.run(command, cwd=REPOSITORY)
        print(f"({name}: {time.perf_counter() - began:.1f} s, exit code {completed.returncode})", flush=True)
        if completed.returncode != 0:
            failed.append(name)

    page = render(load_results(results), load_misses(MISSES_FILE))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    print(f"wrote {out} from {results}")
    if failed:
        print(f"error: these benchmarks failed: {', '.join(failed)}; their sections show the previous results, if any", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
