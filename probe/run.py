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
import signal
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

from models import CheckpointError, DatasetError, Latent, as_float_batch, load_checkpoint, load_dataset
from models.train import TrainConfig, resolve_device, train
from models.data import DATASET_CHOICES, SPLITS
from models.features import FEATURE_NAMES, image_features, parse_feature_names

from .cli import ArgumentParser, UsageError, EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED
from .analysis import AnalysisResult, ObservationCounter, attribute_label_columns, encode_labels, shuffled_labels
from .assessment import DEFAULT_MIN_COUNT, assess
from .decoding import DEFAULT_HOLDOUT, ActivationSample
from .significance import DEFAULT_FDR
from .hooks import HookError, LayerNotFoundError, Recorder, layer_names, resolve_layers
from .quantize import POOLING_CHOICES, ArgmaxQuantizer, NonFiniteActivationError, Quantizer, check_finite, code_dtype, parse_spec, pool
from .store import ProbeWriter, StoreError, check_output_path, load
from .report import add_figure_arguments, check_figure_arguments, write_figures
from .ngrams import parse_orders
from .observations import Attribute, ObservationError, make_attributes, read_observations
from .tables import LayerView, make_console, render_layer, render_ngrams, render_observations, render_summary

logger = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path("runs/default/model.pt")
DEFAULT_QUANTIZER = "quantile:2"
DEFAULT_RUN_PERMUTATIONS = 1000




def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m probe.run``."""
    parser = ArgumentParser(
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

    observed = parser.add_argument_group("observations (class labels are always one)")
    observed.add_argument("--features", metavar="NAMES", help=f"image features to use as attributes: 'all' or a comma-separated list of {', '.join(FEATURE_NAMES)}")
    observed.add_argument("--observations", metavar="FILE", help="user attributes, one row per sample in dataset order: a CSV with a header of column names (';' in a cell makes the column multi-label) or a .npy [n] or [n, A]")
    observed.add_argument("--ngrams", default="3", metavar="LENGTHS", help="n-gram lengths counted against every observation: N for 1..N, a list 1,2 or a range 2-3; 0 turns n-grams off (default 3)")

    codes = parser.add_argument_group("quantisation")
    codes.add_argument("--quantize", action="append", default=[], metavar="LAYER=SPEC", help="argmax, sign, quantile:B or uniform:B for one layer (default: argmax for the categorical latent, quantile:2 elsewhere)")
    codes.add_argument("--pool", default="mean", choices=POOLING_CHOICES, help="how conv maps [B, C, H, W] become positions: mean or max per channel, or none (every channel and location); default mean")
    codes.add_argument("--calibration", type=int, default=4096, help="samples used to calibrate quantile and uniform bins (default 4096)")

    report = parser.add_argument_group("report and output")
    report.add_argument("--threshold", type=float, default=0.4, help="NPMI at or above which a (code, label) pair is a hit (default 0.4)")
    report.add_argument("--top", type=int, default=10, help="rows per hit table (default 10)")
    report.add_argument("--min-count", type=int, default=DEFAULT_MIN_COUNT, help=f"joint count a pair needs to be a hit; codes seen fewer times are left out of the significance test (default {DEFAULT_MIN_COUNT})")
    report.add_argument("--all-hits", action="store_true", help="list every hit in the layer tables, not only those significant at --fdr")

    testing = parser.add_argument_group("significance and held-out decoding")
    testing.add_argument("--permutations", type=int, default=DEFAULT_RUN_PERMUTATIONS, metavar="R", help=f"label permutations (seeded by --seed) for p-values, FDR flags and corrected MI; 0 turns the test off (default {DEFAULT_RUN_PERMUTATIONS})")
    testing.add_argument("--fdr", type=float, default=DEFAULT_FDR, help=f"false discovery rate for flagging hits, Benjamini-Hochberg (default {DEFAULT_FDR})")
    testing.add_argument("--holdout", type=float, default=DEFAULT_HOLDOUT, help=f"fraction of samples held out (seeded) to score the decoders and the linear probe; 0 turns decoding off (default {DEFAULT_HOLDOUT})")
    report.add_argument("--out", help="output HDF5 file (default runs/<run-name>/probe.h5)")
    report.add_argument("--run-name", help="name of the run folder under runs/ (default: the start time)")
    report.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    report.add_argument("--resume", action="store_true", help="continue an interrupted run from the codes stored in <out>.partial")
    report.add_argument("--flush-every", type=int, default=10_000, metavar="N", help="write codes to the partial file every N samples, the most a killed run loses (default 10000)")
    add_figure_arguments(report)
    return parser


# -- argument checks -------------------------------------------------------------


def _split_pairs(items: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        layer, sep, value = item.partition("=")
        if not sep or not layer.strip() or not value.strip():
            raise UsageError(f"invalid {option} {item!r}; expected LAYER=VALUE, as in {option} conv1=quantile:4")
        if layer.strip() in pairs:
            raise UsageError(f"{option} names layer {layer.strip()!r} twice; give one {option} per layer")
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
    for option, value, low in (("--limit", args.limit, 1), ("--batch-size", args.batch_size, 1), ("--calibration", args.calibration, 1), ("--top", args.top, 0), ("--min-count", args.min_count, 1), ("--flush-every", args.flush_every, 1)):
        if value is not None and value < low:
            raise UsageError(f"invalid {option} {value}; it must be at least {low}")
    if not -1.0 <= args.threshold <= 1.0:
        raise UsageError(f"invalid --threshold {args.threshold}; NPMI lies in [-1, 1]")
    if args.permutations < 0:
        raise UsageError(f"invalid --permutations {args.permutations}; pass 0 to turn the test off or a count such as {DEFAULT_RUN_PERMUTATIONS}")
    if not 0.0 < args.fdr <= 1.0:
        raise UsageError(f"invalid --fdr {args.fdr}; it must lie in (0, 1], for example 0.05")
    if not 0.0 <= args.holdout < 1.0:
        raise UsageError(f"invalid --holdout {args.holdout}; it must lie in [0, 1), for example 0.2 (0 turns decoding off)")
    problem = check_figure_arguments(args.figures, args.html)
    if problem:
        raise UsageError(problem)
    try:
        args.ngram_lengths = parse_orders(args.ngrams)
    except ValueError as error:
        raise UsageError(f"--ngrams: {error}") from None
    try:
        args.feature_names = parse_feature_names(args.features) if args.features else ()
    except ValueError as error:
        raise UsageError(f"--features: {error}") from None
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


def _batches(n: int, batch_size: int, first: int = 0):
    for start in range(first, n, batch_size):
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
    needed = {name: paths[name] for name, quantizer in quantizers.items() if not quantizer.fitted}
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
    assess: float = 0.0


class LayerCounts:
    """Everything counted for one layer during the pass; rebuilt from stored codes on --resume."""

    def __init__(
        self,
        positions: int,
        alphabet_size: int,
        n_labels: int,
        columns: int,
        device: torch.device,
        attributes: list[Attribute] = (),
        attribute_columns: torch.Tensor | None = None,
        ngram_lengths: tuple[int, ...] = (),
    ):
        self.attributes = list(attributes)
        self.attribute_columns = attribute_columns  # [n, A, columns] on the device, sliced per batch
        sizes = [len(attribute.values) for attribute in self.attributes]
        self.counter = ObservationCounter(positions, alphabet_size, n_labels, sizes, ngram_lengths, columns=columns, device=device)
        # Raw activations for the linear probe; restore_activations refills them on --resume.
        self.activations: ActivationSample | None = None

    def keep_activations(self, activations: torch.Tensor, start: int, n_samples: int, seed: int) -> None:
        """Keep the sampled rows of a batch of raw (pooled) activations for the linear probe."""
        if self.activations is None:
            self.activations = ActivationSample(n_samples, seed=seed)
        self.activations.add(start, activations)

    def update(self, codes: torch.Tensor, label_columns: torch.Tensor, start: int) -> None:
        """Count one batch of codes [B, P] whose first sample has index ``start``."""
        attribute_columns = None if self.attribute_columns is None else self.attribute_columns[start : start + codes.shape[0]]
        self.counter.update(codes, label_columns, attribute_columns)

    def result(self, label_values: np.ndarray) -> AnalysisResult:
        return self.counter.result(label_values, self.attributes)


@dataclass
class PassState:
    """State that the pass carries from batch to batch."""

    label_columns: torch.Tensor  # [n, columns] encoded real and shuffled labels on the device
    n_labels: int
    counts: dict[str, LayerCounts] = field(default_factory=dict)
    interrupted: bool = False  # set by the SIGINT handler, checked after every batch
    timing: PassTiming = field(default_factory=PassTiming)
    attributes: list[Attribute] = field(default_factory=list)
    attribute_columns: torch.Tensor | None = None  # [n, A, columns] encoded real and shuffled attribute values
    ngram_lengths: tuple[int, ...] = ()

    def counts_for(self, name: str, positions: int, alphabet_size: int, device: torch.device) -> LayerCounts:
        if name not in self.counts:
            self.counts[name] = LayerCounts(
                positions, alphabet_size, self.n_labels, self.label_columns.shape[1], device, self.attributes, self.attribute_columns, self.ngram_lengths
            )
        return self.counts[name]


def restore_layers(writer: ProbeWriter, quantizers: dict[str, Quantizer], state: PassState, batch_size: int, device: torch.device) -> None:
    """Restore calibration and rebuild counts from the codes a resumed partial file holds."""
    for name, quantizer in quantizers.items():
        stored = writer.layer_attrs(name)
        if stored is None:
            raise StoreError(f"cannot resume from {writer.partial_path}: it has no codes for layer {name!r}; run again without --resume")
        quantizer.load_edges(stored["edges"])
        quantizer.alphabet_size = int(stored["alphabet_size"])
        counts = state.counts_for(name, int(stored["positions"]), quantizer.alphabet_size, device)
        for start, stop in _batches(writer.rows_done, batch_size):
            codes = torch.from_numpy(writer.stored_codes(name, start, stop).astype(np.int64)).to(device)
            counts.update(codes, state.label_columns[start:stop], start)


def restore_activations(
    model: nn.Module,
    paths: dict[str, str],
    quantizers: dict[str, Quantizer],
    images: torch.Tensor,
    state: PassState,
    rows_done: int,
    args: argparse.Namespace,
    device: torch.device,
) -> None:
    """Recompute the raw activations of the samples a resumed file already holds, for the linear probe.

    The codes are not recomputed. Batches and seeds match the interrupted run, so a
    stochastic latent gives the same activations.
    """
    with Recorder(model, paths, args.output_indices) as recorder:
        for start, stop in _batches(rows_done, args.batch_size):
            torch.manual_seed(args.seed * 1_000_003 + start)
            outputs = recorder.run(as_float_batch(images[start:stop]).to(device))
            for name, output in outputs.items():
                state.counts[name].keep_activations(_prepare(output, quantizers[name], args.pool), start, len(images), args.seed)


def probe_pass(
    model: nn.Module,
    paths: dict[str, str],
    quantizers: dict[str, Quantizer],
    images: torch.Tensor,
    state: PassState,
    writer: ProbeWriter,
    args: argparse.Namespace,
    device: torch.device,
    console: Console,
) -> None:
    """Run the batches from ``writer.rows_done`` on through the model, writing and counting codes.

    Codes are flushed to the partial file every ``--flush-every`` samples, so a run
    that is killed can be resumed from the last flush with --resume.
    """
    timing = state.timing
    progress = Progress(
        TextColumn("probing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    last_flush = writer.rows_done
    with Recorder(model, paths, args.output_indices) as recorder, progress:
        task = progress.add_task("probe", total=len(images), completed=writer.rows_done)
        for start, stop in _batches(len(images), args.batch_size, first=writer.rows_done):
            # Seeding per batch makes stochastic sampling the same whether or not a run was resumed.
            torch.manual_seed(args.seed * 1_000_003 + start)
            began = time.perf_counter()
            outputs = recorder.run(as_float_batch(images[start:stop]).to(device))
            timing.forward += time.perf_counter() - began
            added_layer = False
            for name, output in outputs.items():
                began = time.perf_counter()
                check_finite(output, name, start)
                quantizer = quantizers[name]
                prepared = _prepare(output, quantizer, args.pool)
                try:
                    codes = quantizer(prepared)
                except ValueError as error:
                    raise UsageError(f"--quantize {name}={quantizer.spec}: {error}") from None
                codes_cpu = codes.cpu().numpy()
                timing.quantize += time.perf_counter() - began

                began = time.perf_counter()
                if not writer.has_layer(name):
                    added_layer = True
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
                counts = state.counts_for(name, codes.shape[1], quantizer.alphabet_size, device)
                counts.update(codes, state.label_columns[start:stop], start)
                if args.holdout:
                    counts.keep_activations(prepared, start, len(images), args.seed)
                timing.count += time.perf_counter() - began
            # A flush right after the layers are created makes the partial file resumable early.
            if added_layer or stop - last_flush >= args.flush_every:
                began = time.perf_counter()
                writer.flush()
                timing.write += time.perf_counter() - began
                last_flush = stop
            progress.update(task, completed=stop)
            if state.interrupted:
                raise KeyboardInterrupt


def _output_path(args: argparse.Namespace) -> Path:
    if args.out is not None:
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
        if args.resume and not Path(str(out) + ".partial").exists():
            console.print(f"Nothing to resume: {out}.partial does not exist, so the run starts from the beginning.")

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
    attributes = _attributes(args, data, console)
    attribute_columns = attribute_label_columns(attributes, args.seed)
    attrs = {
        "command": shlex.join([Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "probe.run", *sys.argv[1:]]),
        "checkpoint": loaded.checkpoint,
        "checkpoint_sha256": loaded.checkpoint_sha256,
        "model": args.model or f"{type(model).__module__}.{type(model).__name__}",
        "dataset": data.name,
        "dataset_description": data.description,
        "split": data.split,
        "data_root": str(Path(args.data_root).resolve()),
        "n_samples": len(data),
        "seed": args.seed,
        "device": str(device),
        "threshold": args.threshold,
        "min_count": args.min_count,
        "permutations": args.permutations,
        "fdr": args.fdr,
        "holdout": args.holdout,
        "layers": list(paths),
        "quantizers": [quantizer.spec for quantizer in quantizers.values()],
        "pooling": args.pool,
        "batch_size": args.batch_size,
        "calibration": args.calibration,
        "observations": [attribute.name for attribute in attributes],
        "ngram_lengths": list(args.ngram_lengths),
        "torch_version": torch.__version__,
    }

    began = time.perf_counter()
    try:
        writer = ProbeWriter(out, overwrite=args.overwrite, attrs=attrs, resume=args.resume)
    except StoreError as error:
        raise UsageError(str(error)) from None
    if writer.resume_note:
        console.print(writer.resume_note, soft_wrap=True)
    state = PassState(torch.from_numpy(label_columns).to(device), len(label_values))
    state.attributes, state.ngram_lengths = attributes, args.ngram_lengths
    state.attribute_columns = None if attribute_columns is None else torch.from_numpy(attribute_columns).to(device)

    def on_interrupt(signum, frame):
        # Python drops a KeyboardInterrupt raised inside a finaliser, so the flag makes the
        # pass stop at the next batch boundary even then.
        state.interrupted = True
        raise KeyboardInterrupt

    previous_handler = signal.signal(signal.SIGINT, on_interrupt)
    try:
        with torch.no_grad():
            if writer.rows_done:
                console.print(f"Resuming from {writer.partial_path}: {writer.rows_done:,} of {len(data):,} samples are stored.")
                try:
                    restore_layers(writer, quantizers, state, args.batch_size, device)
                except (StoreError, ValueError) as error:
                    raise UsageError(str(error)) from None
                if args.holdout:
                    restore_activations(model, paths, quantizers, data.images, state, writer.rows_done, args, device)
            else:
                writer.write_labels(data.labels.numpy(), label_values)
                writer.write_observations(attributes)
                calibrate(model, paths, quantizers, data.images, args, device)
            probe_pass(model, paths, quantizers, data.images, state, writer, args, device, console)
        views = []
        writer.flush()
        for name, counts in state.counts.items():
            result = counts.result(label_values)
            assessed = time.perf_counter()
            assess(result, _stored_chunks(writer, name, len(data)), encoded, args.permutations, fdr=args.fdr, holdout=args.holdout, min_count=args.min_count, seed=args.seed, device=device, activations=counts.activations)
            state.timing.assess += time.perf_counter() - assessed
            writer.write_result(name, result)
            views.append(LayerView(name, dict(writer.file[f"layers/{name}"].attrs), result))
        for key, value in vars(state.timing).items():
            writer.file.attrs[f"seconds_{key}"] = value
        writer.file.attrs["seconds_total"] = time.perf_counter() - began
        if state.interrupted:
            raise KeyboardInterrupt
        writer.commit()
    except KeyboardInterrupt:
        writer.close()
        stored = writer.rows_flushed
        print(
            f"Interrupted: {out} was not written; {stored:,} of {len(data):,} samples are saved in {writer.partial_path} "
            "(rerun the same command with --resume to continue).",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        writer.close()

    render_summary(console, views, args.threshold, args.min_count)
    for view in views:
        render_layer(console, view, args.threshold, args.top, args.min_count, significant_only=not args.all_hits)
        render_ngrams(console, view, args.threshold, args.top, args.min_count)
        render_observations(console, view, args.threshold, args.min_count)
    console.print(f"Saved {out} ({len(data):,} samples, {len(views)} layers, {time.perf_counter() - began:.1f} s).")
    if args.figures or args.html:
        try:
            with load(out) as saved:
                lines = write_figures(
                    saved, args.figures, args.html, args.threshold, args.min_count, args.top,
                    significant_only=not args.all_hits, images=data.images.numpy(), model=model,
                )
        except OSError as error:
            print(f"error: writing figures failed: {error}; {out} is saved, so rerun python -m probe.report {out} --figures DIR", file=sys.stderr)
            return EXIT_RUNTIME
        for line in lines:
            console.print(line, soft_wrap=True)
    return 0


def _attributes(args: argparse.Namespace, data, console: Console) -> list[Attribute]:
    """Return the image features and user attributes this run counts against, checked against the dataset."""
    attributes: list[Attribute] = []
    if args.feature_names:
        began = time.perf_counter()
        features = image_features(data.images, args.feature_names)
        for feature in features.values():
            attribute = make_attributes({feature.name: feature.values})[0]
            attribute.value_names, attribute.description = list(feature.value_names), feature.description
            attributes.append(attribute)
        console.print(f"Computed image features {', '.join(features)} ({time.perf_counter() - began:.1f} s).")
    if args.observations:
        try:
            attributes.extend(read_observations(args.observations, n_samples=len(data)))
        except ObservationError as error:
            raise UsageError(f"--observations: {error}") from None
    try:
        return make_attributes(attributes, n_samples=len(data))
    except ObservationError as error:
        raise UsageError(f"{error} (an --observations column may repeat an image feature's name; rename it)") from None


def _stored_chunks(writer: ProbeWriter, name: str, n_samples: int, rows: int = 1 << 16):
    """Return a callable that reads a layer's stored codes back in pieces of ``rows`` samples."""

    def chunks():
        for start, stop in _batches(n_samples, rows):
            yield start, torch.from_numpy(writer.stored_codes(name, start, stop).astype(np.int64))

    return chunks


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
