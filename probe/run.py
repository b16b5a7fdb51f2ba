"""Command line: ``python -m probe.run --layers conv1,conv2,latent``.

Runs a dataset through a model with forward hooks on the chosen layers, turns each
layer's activations into integer codes, streams the codes into an HDF5 file, counts
them against the labels on the chosen device, and prints NPMI tables per layer.

Exit codes: 0 success, 1 runtime failure (such as NaN activations), 2 usage error or
invalid input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib
import logging
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from torch import nn

from models import CategoricalVAE, CheckpointError, DatasetError, Latent, TrainConfig, as_float_batch, load_checkpoint, load_dataset, resolve_device, train
from models.data import DATASET_CHOICES, SPLITS

from .analysis import encode_labels, shuffled_labels, summarize
from .counting import JointCounter
from .hooks import HookError, LayerNotFoundError, Recorder, layer_names, resolve_layers
from .quantize import POOLING_CHOICES, ArgmaxQuantizer, NonFiniteActivationError, Quantizer, check_finite, code_dtype, parse_spec, pool
from .store import FORMAT, ProbeWriter, StoreError, check_output_path
from .tables import LayerView, make_console, render_layer, render_summary

logger = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path("runs/default/model.pt")
DEFAULT_QUANTIZER = "quantile:2"
EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class UsageError(Exception):
    """Invalid arguments or input; the CLI prints the message and exits with code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own usage errors also exit with 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m probe.run``."""
    parser = _Parser(
        prog="python -m probe.run",
        description="Record chosen layers of a model, quantise them into discrete codes and measure "
        "which codes go with which labels (NPMI). Results go to an HDF5 file and tables.",
    )
    what = parser.add_argument_group("model and layers")
    what.add_argument("--layers", help="comma-separated layer names: short names (conv1) or dotted module paths (encoder.conv1)")
    what.add_argument("--list-layers", action="store_true", help="print every module with its output shape and exit")
    what.add_argument("--checkpoint", help=f"model checkpoint (default {DEFAULT_CHECKPOINT}, trained first when missing)")
    what.add_argument("--model", metavar="MODULE:CALLABLE", help="build another nn.Module by calling MODULE.CALLABLE(); it receives images [B, 1, H, W] in [0, 1]")
    what.add_argument("--stochastic-latent", action="store_true", help="sample the categorical VAE's latent with Gumbel noise instead of taking the argmax")
    what.add_argument("--output-index", action="append", default=[], metavar="LAYER=I", help="for a layer that returns a tuple or list, record element I")

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="mnist", help=f"{DATASET_CHOICES} (default mnist, or the bundled sample when its files are missing)")
    data.add_argument("--data-root", default="data", help="folder with torchvision's MNIST files (default: data)")
    data.add_argument("--download", action="store_true", help="download MNIST with torchvision first (needs internet)")
    data.add_argument("--split", default="all", choices=SPLITS, help="which split to probe (default: all)")
    data.add_argument("--limit", type=int, help="probe only the first N samples")
    data.add_argument("--batch-size", type=int, default=500, help="samples per forward pass (default 500)")
    data.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto: cuda when available)")
    data.add_argument("--seed", type=int, default=0, help="seed for the shuffled-label baseline and stochastic sampling (default 0)")

    codes = parser.add_argument_group("quantisation")
    codes.add_argument("--quantize", action="append", default=[], metavar="LAYER=SPEC", help="argmax, sign, quantile:B or uniform:B for one layer (default: argmax for the categorical latent, quantile:2 elsewhere)")
    codes.add_argument("--pool", default="mean", choices=POOLING_CHOICES, help="how conv maps [B, C, H, W] become positions: mean or max per channel, or none (every channel and location); default mean")
    codes.add_argument("--calibration", type=int, default=4096, help="samples used to calibrate quantile and uniform bins (default 4096)")

    report = parser.add_argument_group("report and output")
    report.add_argument("--threshold", type=float, default=0.4, help="NPMI at or above which a (code, label) pair is a hit (default 0.4)")
    report.add_argument("--top", type=int, default=10, help="rows per hit table (default 10)")
    report.add_argument("--min-count", type=int, default=1, help="joint count a pair needs to be a hit (default 1)")
    report.add_argument("--out", help="output HDF5 file (default runs/<run-name>/probe.h5)")
    report.add_argument("--run-name", help="name of the run folder under runs/ (default: the start time)")
    report.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return parser


# -- argument checks -------------------------------------------------------------


def _split_pairs(items: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        layer, sep, value = item.partition("=")
        if not sep or not layer.strip() or not value.strip():
            raise UsageError(f"invalid {option} {item!r}; expected LAYER=VALUE, as in {option} conv1=quantile:4")
        pairs[layer.strip()] = value.strip()
    return pairs


def _check_arguments(args: argparse.Namespace) -> None:
    if not args.list_layers and args.layers is None:
        raise UsageError("no layers given; pass --layers conv1,conv2,latent (see --list-layers for the names)")
    if args.layers is not None:
        names = [name.strip() for name in args.layers.split(",")]
        if not any(names) or "" in names:
            raise UsageError(f"invalid --layers {args.layers!r}; give comma-separated names such as conv1,conv2,latent")
        args.layer_list = names
    else:
        args.layer_list = []
    for option, value, low in (("--limit", args.limit, 1), ("--batch-size", args.batch_size, 1), ("--calibration", args.calibration, 1), ("--top", args.top, 0), ("--min-count", args.min_count, 1)):
        if value is not None and value < low:
            raise UsageError(f"invalid {option} {value}; it must be at least {low}")
    if not -1.0 <= args.threshold <= 1.0:
        raise UsageError(f"invalid --threshold {args.threshold}; NPMI lies in [-1, 1]")
    args.quantizer_specs = _split_pairs(args.quantize, "--quantize")
    for layer, spec in args.quantizer_specs.items():
        try:
            parse_spec(spec)
        except ValueError as error:
            raise UsageError(f"--quantize {layer}={spec}: {error}") from None
        if args.layer_list and layer not in args.layer_list:
            raise UsageError(f"--quantize names layer {layer!r}, which is not in --layers {args.layers}")
    indices = _split_pairs(args.output_index, "--output-index")
    try:
        args.output_indices = {layer: int(index) for layer, index in indices.items()}
    except ValueError:
        raise UsageError(f"invalid --output-index {args.output_index}; I must be an integer, as in --output-index lstm=0") from None


# -- model -----------------------------------------------------------------------


@dataclass
class LoadedModel:
    model: nn.Module
    checkpoint: str = ""
    checkpoint_sha256: str = ""
    config: dict = field(default_factory=dict)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _build_custom_model(spec: str, checkpoint: str | None) -> LoadedModel:
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise UsageError(f"invalid --model {spec!r}; expected MODULE:CALLABLE, as in --model my_models:build")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UsageError(f"--model {spec}: cannot import module {module_name!r} ({error}); run from the folder that contains it or install it") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise UsageError(f"--model {spec}: module {module_name!r} has no callable {attribute!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise UsageError(f"--model {spec}: {attribute}() returned {type(model).__name__}, not a torch.nn.Module")
    loaded = LoadedModel(model=model)
    if checkpoint:
        path = Path(checkpoint)
        if not path.is_file():
            raise UsageError(f"checkpoint {path} not found")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several unrelated types for bad files
            raise UsageError(f"checkpoint {path} is not a readable torch file ({error})") from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as error:
            raise UsageError(f"checkpoint {path} does not fit --model {spec}: {error}") from None
        loaded.checkpoint, loaded.checkpoint_sha256 = str(path), _sha256(path)
    return loaded


def _load_model(args: argparse.Namespace, console: Console) -> LoadedModel:
    if args.model:
        return _build_custom_model(args.model, args.checkpoint)
    path = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
    if not path.exists():
        if args.checkpoint:
            raise UsageError(f"checkpoint {path} not found; train one with python -m models.train --out {path.parent}")
        console.print(f"No checkpoint at {path}: training the default model first (python -m models.train).")
        config = TrainConfig(dataset=args.dataset, data_root=args.data_root, download=args.download, seed=args.seed, device=args.device, out=str(path.parent))
        train(config, progress=True, console=console)
    model, config = load_checkpoint(path)
    if args.stochastic_latent:
        model.latent.stochastic_eval = True
    return LoadedModel(model=model, checkpoint=str(path), checkpoint_sha256=_sha256(path), config=config)


# -- the pass ----------------------------------------------------------------------


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def _default_quantizer(name: str, module: nn.Module) -> str:
    return "argmax" if isinstance(module, Latent) else DEFAULT_QUANTIZER


def _prepare(output: torch.Tensor, quantizer: Quantizer, pooling: str) -> torch.Tensor:
    return output if isinstance(quantizer, ArgmaxQuantizer) else pool(output, pooling)


def list_layers(model: nn.Module, images: torch.Tensor, device: torch.device, console: Console) -> None:
    """Print every module with its output shape from one small batch."""
    names = layer_names(model)
    short = {path: name for name, path in names.items() if name != path}
    paths = [path for path, _ in model.named_modules() if path]
    shapes: dict[str, str] = {}
    hooks = []
    for path, module in model.named_modules():
        if not path:
            continue

        def hook(module, inputs, output, path=path):
            if isinstance(output, torch.Tensor):
                shapes[path] = str(list(output.shape))
            elif isinstance(output, (tuple, list)):
                shapes[path] = f"{type(output).__name__} of {len(output)} (use --output-index)"
            else:
                shapes[path] = type(output).__name__

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(as_float_batch(images).to(device))
    finally:
        for handle in hooks:
            handle.remove()
    table = Table(title="Probe-able layers (output shape for a batch of 2)", title_justify="left")
    for header in ("short name", "module path", "type", "output shape"):
        table.add_column(header)
    modules = dict(model.named_modules())
    for path in paths:
        table.add_row(short.get(path, ""), path, type(modules[path]).__name__, shapes.get(path, "(not run)"))
    console.print(table)


def calibrate(
    model: nn.Module,
    paths: dict[str, str],
    quantizers: dict[str, Quantizer],
    images: torch.Tensor,
    args: argparse.Namespace,
    device: torch.device,
) -> None:
    """Fit the quantisers that need calibration on the first --calibration samples."""
    needed = {name: paths[name] for name, quantizer in quantizers.items() if quantizer.needs_calibration}
    if not needed:
        return
    count = min(args.calibration, len(images))
    collected: dict[str, list[torch.Tensor]] = {name: [] for name in needed}
    with Recorder(model, needed, args.output_indices) as recorder:
        for start, stop in _batches(count, args.batch_size):
            outputs = recorder.run(as_float_batch(images[start:stop]).to(device))
            for name, output in outputs.items():
                check_finite(output, name, start)
                collected[name].append(pool(output, args.pool))
    for name in needed:
        quantizers[name].fit(torch.cat(collected[name]))
    logger.info("calibrated %s on %d samples", ", ".join(needed), count)


@dataclass
class PassTiming:
    forward: float = 0.0
    quantize: float = 0.0
    write: float = 0.0
    count: float = 0.0


def probe_pass(
    model: nn.Module,
    paths: dict[str, str],
    quantizers: dict[str, Quantizer],
    images: torch.Tensor,
    label_columns: np.ndarray,
    n_labels: int,
    writer: ProbeWriter,
    args: argparse.Namespace,
    device: torch.device,
    console: Console,
) -> tuple[dict[str, JointCounter], PassTiming]:
    """Run every batch through the model, writing codes and counting them per layer."""
    counters: dict[str, JointCounter] = {}
    timing = PassTiming()
    labels_on_device = torch.from_numpy(label_columns).to(device)
    progress = Progress(
        TextColumn("probing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    with Recorder(model, paths, args.output_indices) as recorder, progress:
        task = progress.add_task("probe", total=len(images))
        for start, stop in _batches(len(images), args.batch_size):
            began = time.perf_counter()
            outputs = recorder.run(as_float_batch(images[start:stop]).to(device))
            timing.forward += time.perf_counter() - began
            for name, output in outputs.items():
                began = time.perf_counter()
                check_finite(output, name, start)
                quantizer = quantizers[name]
                codes = quantizer(_prepare(output, quantizer, args.pool))
                codes_cpu = codes.cpu().numpy()
                timing.quantize += time.perf_counter() - began

                began = time.perf_counter()
                if name not in counters:
                    attrs = {
                        "module": paths[name],
                        "quantizer": quantizer.spec,
                        "pooling": "none" if isinstance(quantizer, ArgmaxQuantizer) or output.dim() != 4 else args.pool,
                        "activation_shape": list(output.shape[1:]),
                    }
                    writer.add_layer(name, codes.shape[1], quantizer.alphabet_size, code_dtype(quantizer.alphabet_size), attrs, quantizer.edges())
                writer.append(name, codes_cpu)
                timing.write += time.perf_counter() - began

                began = time.perf_counter()
                if name not in counters:
                    counters[name] = JointCounter(codes.shape[1], quantizer.alphabet_size, n_labels, columns=label_columns.shape[1], device=device)
                counters[name].update(codes, labels_on_device[start:stop])
                timing.count += time.perf_counter() - began
            progress.update(task, completed=stop)
    return counters, timing


def _output_path(args: argparse.Namespace) -> Path:
    if args.out:
        return Path(args.out)
    run_name = args.run_name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / run_name / "probe.h5"


def run(args: argparse.Namespace, console: Console) -> int:
    """Carry out one probe run from parsed arguments; return the exit code."""
    _check_arguments(args)
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    out = _output_path(args)
    if not args.list_layers:
        try:
            check_output_path(out, args.overwrite)
        except StoreError as error:
            raise UsageError(str(error)) from None

    try:
        data = load_dataset(args.dataset, args.data_root, args.split, args.limit, args.download)
    except DatasetError as error:
        raise UsageError(str(error)) from None
    if data.notice:
        console.print(data.notice, soft_wrap=True)
    try:
        loaded = _load_model(args, console)
    except CheckpointError as error:
        raise UsageError(str(error)) from None
    model = loaded.model.to(device).eval()
    if loaded.config.get("dataset") and loaded.config["dataset"] != data.name and not args.model:
        console.print(f"Note: the checkpoint was trained on {loaded.config['dataset']}, and this run probes {data.name}.")

    if args.list_layers:
        list_layers(model, data.images[:2], device, console)
        return 0
    try:
        paths = resolve_layers(model, args.layer_list)
    except LayerNotFoundError as error:
        raise UsageError(str(error)) from None
    modules = dict(model.named_modules())
    quantizers = {name: parse_spec(args.quantizer_specs.get(name) or _default_quantizer(name, modules[path])) for name, path in paths.items()}

    label_values, encoded = encode_labels(data.labels.numpy())
    label_columns = np.stack([encoded, shuffled_labels(encoded, args.seed)], axis=1)
    attrs = {
        "command": shlex.join([Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "probe.run", *sys.argv[1:]]),
        "checkpoint": loaded.checkpoint,
        "checkpoint_sha256": loaded.checkpoint_sha256,
        "model": args.model or f"{type(model).__module__}.{type(model).__name__}",
        "dataset": data.name,
        "dataset_description": data.description,
        "split": data.split,
        "n_samples": len(data),
        "seed": args.seed,
        "device": str(device),
        "threshold": args.threshold,
        "min_count": args.min_count,
        "layers": list(paths),
        "torch_version": torch.__version__,
    }

    torch.manual_seed(args.seed)
    began = time.perf_counter()
    with torch.no_grad():
        calibrate(model, paths, quantizers, data.images, args, device)
        writer = ProbeWriter(out, overwrite=args.overwrite, attrs=attrs)
        try:
            writer.write_labels(data.labels.numpy(), label_values)
            counters, timing = probe_pass(model, paths, quantizers, data.images, label_columns, len(label_values), writer, args, device, console)
            views = []
            for name, counter in counters.items():
                result = summarize(counter, label_values)
                writer.write_result(name, result)
                views.append(LayerView(name, dict(writer.file[f"layers/{name}"].attrs), result))
            for key, value in vars(timing).items():
                writer.file.attrs[f"seconds_{key}"] = value
            writer.file.attrs["seconds_total"] = time.perf_counter() - began
            writer.commit()
        except KeyboardInterrupt:
            writer.close()
            console.print(f"Interrupted: {out} was not written; the codes recorded so far are in {writer.partial_path}.")
            return EXIT_INTERRUPTED
        finally:
            writer.close()

    render_summary(console, views, args.threshold, args.min_count)
    for view in views:
        render_layer(console, view, args.threshold, args.top, args.min_count)
    console.print(f"Saved {out} ({len(data):,} samples, {len(views)} layers, {time.perf_counter() - began:.1f} s).")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, and map errors to exit codes."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console = make_console()
    args = build_parser().parse_args(argv)
    try:
        return run(args, console)
    except (UsageError, HookError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteActivationError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        print("Interrupted before any result was written; nothing was saved.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
