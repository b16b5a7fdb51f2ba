"""Probing overhead: a full ``python -m probe.run`` pass against a bare forward pass of the same model.

Both passes use the same checkpoint, data and batch size. The probe run hooks
conv1, conv2, conv3, fc and latent and runs as a subprocess. Its split comes from
the ``seconds_forward``, ``seconds_quantize``, ``seconds_write``, ``seconds_count``,
``seconds_assess`` and ``seconds_total`` root attributes of its HDF5 file, so
start-up (imports, data and checkpoint loading) is excluded. The bare pass is
timed in this process the same way: batch conversion, transfer and ``model(x)``
under ``torch.no_grad``. probe.run's Recorder ends each forward pass after the last
probed layer, which for the reference VAE skips the decoder, so the bare pass is
timed twice: over the whole model, and stopped after the last probed layer. Each
repeat runs all three, and ratios are medians over repeats.

"The pass" is forward + quantise + write + count. seconds_total also includes
calibration, buffered HDF5 flushes, the post-pass statistics (seconds_assess) and
the result writes; ``other`` is seconds_total minus the named parts.

    python -m benchmarks.bench_overhead
    python -m benchmarks.bench_overhead --quick
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import torch

from models import CategoricalVAE, as_float_batch, load_checkpoint, load_dataset, save_checkpoint
from probe.hooks import resolve_layers

from .common import Stopwatch, apply_threads, base_parser, check_positive, machine_info, median, target, write_result

DEFAULT_DATASET = "idx:/usr/share/datasets/fashion-mnist"
DEFAULT_LAYERS = "conv1,conv2,conv3,fc,latent"
# The permutation test runs after the pass and takes far longer than it, so it is off by default.
DEFAULT_PROBE_ARGS = "--permutations 0"
DEFAULT_TRAIN_STEPS = 200
TARGET_PASS_RATIO = 1.5
PARTS = ("forward", "quantize", "write", "count", "assess", "total")


def prepare_checkpoint(args, folder: Path) -> tuple[str, str]:
    """Return a checkpoint path and how its weights were made: given, trained briefly, or seeded random."""
    if args.checkpoint:
        return args.checkpoint, f"given checkpoint {args.checkpoint}"
    path = folder / "model.pt"
    if args.train_steps > 0:
        from models.train import TrainConfig, train

        config = TrainConfig(dataset=args.dataset, split=args.split, steps=args.train_steps, seed=args.seed, device=args.device, out=str(folder))
        train(config, progress=False)
        return str(path), f"reference VAE trained {args.train_steps} steps (batch 100, seed {args.seed}) on {args.dataset} split {args.split}"
    torch.manual_seed(args.seed)
    save_checkpoint(CategoricalVAE(), path)
    return str(path), f"reference VAE with seeded random weights (torch.manual_seed({args.seed}))"


class _StopForward(Exception):
    """Raised by a hook to end a forward pass after the last probed layer."""


def _raise_stop(module, inputs, output):
    raise _StopForward


def last_probed_module(model: torch.nn.Module, layers: str) -> torch.nn.Module:
    """Return the probed module that comes last in ``named_modules`` order."""
    paths = set(resolve_layers(model, [name.strip() for name in layers.split(",")]).values())
    return [module for path, module in model.named_modules() if path in paths][-1]


def bare_forward(model: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device, stop_at: torch.nn.Module | None = None) -> float:
    """Time one pass of ``model`` over ``images`` without recording, as probe.run feeds it.

    With ``stop_at`` the pass ends after that module, as probe.run's Recorder ends
    it after the last probed layer (for the reference VAE: without the decoder).
    """
    stopwatch = Stopwatch(device)
    handle = stop_at.register_forward_hook(_raise_stop) if stop_at is not None else None

    def run():
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                try:
                    model(as_float_batch(images[start : start + batch_size]).to(device))
                except _StopForward:
                    pass

    try:
        return stopwatch.time(run)[0]
    finally:
        if handle is not None:
            handle.remove()


def probe_command(args, checkpoint: str, out: Path) -> list[str]:
    """Return the probe.run command of one repeat."""
    command = [sys.executable, "-m", "probe.run", "--checkpoint", checkpoint, "--dataset", args.dataset, "--split", args.split]
    command += ["--layers", args.layers, "--batch-size", str(args.batch_size), "--device", args.device, "--out", str(out), "--overwrite"]
    if args.limit:
        command += ["--limit", str(args.limit)]
    return command + shlex.split(args.probe_args)


def probe_run(command: list[str], out: Path, threads: int | None) -> dict:
    """Run probe.run in a subprocess and return its seconds_* attributes."""
    environment = dict(os.environ)
    if threads is not None:
        environment["OMP_NUM_THREADS"] = str(threads)
    completed = subprocess.run(command, capture_output=True, text=True, env=environment)
    if completed.returncode != 0:
        raise RuntimeError(f"probe.run failed with exit code {completed.returncode}: {completed.stderr.strip()[-2000:]}")
    with h5py.File(out, "r") as handle:
        return {part: float(handle.attrs[f"seconds_{part}"]) for part in PARTS}


def build_parser():
    parser = base_parser("overhead", "Time a full probe.run pass against a bare forward pass of the same model over the same data.")
    parser.add_argument("--dataset", default=DEFAULT_DATASET, help=f"dataset as probe.run takes it (default {DEFAULT_DATASET})")
    parser.add_argument("--split", default="train", help="split (default train: 60,000 images)")
    parser.add_argument("--limit", type=int, help="use only the first N images (default: all; --quick 2000)")
    parser.add_argument("--layers", default=DEFAULT_LAYERS, help=f"layers to hook (default {DEFAULT_LAYERS})")
    parser.add_argument("--batch-size", type=int, default=500, help="batch size of both passes (default 500, probe.run's default)")
    parser.add_argument("--device", default="cpu", help="device of both passes (default cpu)")
    parser.add_argument("--checkpoint", help="checkpoint to probe (default: train one for --train-steps steps)")
    parser.add_argument("--train-steps", type=int, help=f"steps to train the checkpoint on the dataset; 0 uses seeded random weights (default {DEFAULT_TRAIN_STEPS}, --quick 0)")
    parser.add_argument("--probe-args", default=DEFAULT_PROBE_ARGS, help=f"further probe.run options, as one string (default {DEFAULT_PROBE_ARGS!r})")
    parser.add_argument("--seed", type=int, default=0, help="seed of training or of the random weights (default 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_threads(parser, args.threads)
    for option in ("repeats", "limit", "batch_size"):
        check_positive(parser, "--" + option.replace("_", "-"), getattr(args, option))
    if args.train_steps is not None and args.train_steps < 0:
        parser.error(f"invalid --train-steps {args.train_steps}; pass 0 for random weights or a positive step count")
    if args.train_steps is None:
        args.train_steps = 0 if args.quick else DEFAULT_TRAIN_STEPS
    args.limit = args.limit or (2000 if args.quick else None)
    repeats = args.repeats or (2 if args.quick else 3)
    device = torch.device(args.device)

    folder = Path(tempfile.mkdtemp(prefix="probe-bench-overhead-"))
    try:
        checkpoint, weights = prepare_checkpoint(args, folder)
        model, _ = load_checkpoint(checkpoint)
        model = model.to(device).eval()
        data = load_dataset(args.dataset, split=args.split, limit=args.limit)
        out = folder / "probe.h5"
        command = probe_command(args, checkpoint, out)
        stop_at = last_probed_module(model, args.layers)
        bare_forward(model, data.images[: args.batch_size], args.batch_size, device)

        rows = []
        for repeat in range(repeats):
            bare = bare_forward(model, data.images, args.batch_size, device)
            bare_to_last = bare_forward(model, data.images, args.batch_size, device, stop_at)
            parts = probe_run(command, out, args.threads)
            row = {"bare_forward": bare, "bare_forward_to_last_layer": bare_to_last, **parts}
            row["pass"] = parts["forward"] + parts["quantize"] + parts["write"] + parts["count"]
            row["other"] = parts["total"] - row["pass"] - parts["assess"]
            rows.append(row)
            print(
                f"repeat {repeat + 1}: bare forward {bare:.2f} s (to the last probed layer {bare_to_last:.2f} s), pass {row['pass']:.2f} s "
                f"({row['pass'] / bare:.2f}x, {row['pass'] / bare_to_last:.2f}x): " + ", ".join(f"{key} {parts[key]:.2f} s" for key in PARTS),
                flush=True,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    figure = {key: median(row[key] for row in rows) for key in rows[0]}
    figure["pass_ratio"] = median(row["pass"] / row["bare_forward"] for row in rows)
    figure["pass_ratio_to_last_layer"] = median(row["pass"] / row["bare_forward_to_last_layer"] for row in rows)
    figure["hooked_forward_ratio"] = median(row["forward"] / row["bare_forward_to_last_layer"] for row in rows)
    figure["n"] = len(data)
    figure["images_per_second_bare"] = len(data) / figure["bare_forward"]
    figure["images_per_second_pass"] = len(data) / figure["pass"]
    print(
        f"median pass / bare forward: {figure['pass_ratio']:.2f}x; against the bare forward to the last probed layer "
        f"{figure['pass_ratio_to_last_layer']:.2f}x (hooked forward alone {figure['hooked_forward_ratio']:.2f}x)"
    )
    shown = [part if part != sys.executable else "python" for part in command]
    payload = {
        "title": "Probing overhead: probe.run against a bare forward pass",
        "quick": args.quick,
        "machine": machine_info(device),
        "settings": {"dataset": args.dataset, "split": args.split, "n": len(data), "layers": args.layers, "batch_size": args.batch_size, "device": str(device), "weights": weights, "repeats": repeats, "probe_command": shlex.join(shown).replace(str(folder), "<tmp>")},
        "repeats": rows,
        "figures": [figure],
        "targets": [
            target("overhead.pass_ratio", f"probe.run pass (forward + quantise + write + count) at most {TARGET_PASS_RATIO} times the bare forward pass of the whole model", figure["pass_ratio"], TARGET_PASS_RATIO, higher_is_better=False, unit="x"),
            target(
                "overhead.pass_ratio_to_last_layer",
                f"the same pass at most {TARGET_PASS_RATIO} times a bare forward pass that stops after the last probed layer, as probe.run's does",
                figure["pass_ratio_to_last_layer"],
                TARGET_PASS_RATIO,
                higher_is_better=False,
                unit="x",
            ),
        ],
    }
    path = write_result("overhead", args.out, payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
