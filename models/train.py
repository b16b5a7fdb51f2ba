"""Train the reference CategoricalVAE: ``python -m models.train`` or ``train(TrainConfig(...))``.

The loss is the negative ELBO (pixel BCE plus KL to the uniform prior) in nats per
image. The Gumbel-Softmax temperature decays exponentially from ``temperature_start``
and stays at ``temperature_floor`` for the second half of the run. After training, the
model is evaluated in eval mode on the test split of the same dataset and saved to
``OUT/model.pt``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from models.checkpoint import CheckpointError, save_checkpoint
from models.data import DATASET_CHOICES, SPLITS, DatasetError, ImageData, as_float_batch, load_dataset
from models.vae import CategoricalVAE, elbo_terms

logger = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
# Share of the run over which the temperature decays to its floor.
ANNEAL_FRACTION = 0.5
# A cap on latents x categories, so that a typo such as --categories 100000000 gets a
# clear error instead of an out-of-memory crash while the logits layer is allocated.
MAX_LATENT_UNITS = 1_000_000
# Steps between progress-bar refreshes; each refresh syncs with the device to read the losses.
PROGRESS_EVERY = 25
# Number of last training steps whose losses are averaged into the final losses.
FINAL_WINDOW = 100
EVAL_BATCH_SIZE = 1000


class TrainConfigError(ValueError):
    """A training setting that is out of range."""


class DeviceError(TrainConfigError):
    """A device name that is invalid or not available."""


@dataclass
class TrainConfig:
    """Settings of one training run."""

    dataset: str = "mnist"
    data_root: str = "data"
    split: str = "train"
    # About a minute on 2 CPU cores: one run of 3,000 steps took 38-40 s there.
    steps: int = 4500
    batch_size: int = 100
    lr: float = 1e-3
    latents: int = 3
    categories: int = 26
    seed: int = 0
    device: str = "auto"
    out: str | None = "runs/default"
    """Folder for model.pt, or None to skip saving."""
    temperature_start: float = 1.0
    temperature_floor: float = 0.5
    download: bool = False

    def validate(self) -> None:
        """Raise TrainConfigError for the first setting that is out of range."""
        for name in ("steps", "batch_size", "latents"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise TrainConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.categories, int) or self.categories < 2:
            raise TrainConfigError(f"categories must be an integer >= 2, got {self.categories!r}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise TrainConfigError(f"lr must be a finite number greater than 0, got {self.lr!r}")
        if not 0 < self.temperature_floor <= self.temperature_start or not math.isfinite(self.temperature_start):
            raise TrainConfigError(
                "temperatures must satisfy 0 < temperature_floor <= temperature_start, got "
                f"floor {self.temperature_floor!r} and start {self.temperature_start!r}"
            )
        if self.split not in SPLITS:
            raise TrainConfigError(f"invalid split {self.split!r}; valid splits: {', '.join(SPLITS)}")
        if self.latents * self.categories > MAX_LATENT_UNITS:
            raise TrainConfigError(
                f"{self.latents} x {self.categories} latents give {self.latents * self.categories:,} logits, more than "
                f"{MAX_LATENT_UNITS:,}; choose fewer latents or categories"
            )
        if self.out is not None and Path(self.out).exists() and not Path(self.out).is_dir():
            raise TrainConfigError(f"--out {self.out} is a file; pass a folder, in which model.pt will be written")


def resolve_device(name: str) -> torch.device:
    """Turn "auto", "cpu", "cuda" or "cuda:N" into a torch.device; "auto" picks CUDA when available.

    Raises:
        DeviceError: the name is invalid, or CUDA is requested but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")

    is_cuda_name = name == "cuda" or (name.startswith("cuda:") and name[len("cuda:") :].isdigit())
    if not is_cuda_name:
        raise DeviceError(f"invalid device {name!r}; valid devices: {', '.join(DEVICE_CHOICES)}")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {name} requested but no CUDA GPU is available; use --device auto or cpu")
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"--device {name} requested but only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    return device


def temperature_at(step: int, total_steps: int, start: float, floor: float) -> float:
    """Return the Gumbel-Softmax temperature for ``step`` of a run of ``total_steps``.

    The temperature decays exponentially from ``start`` at step 0 to ``floor`` at
    ANNEAL_FRACTION of the run and stays at ``floor`` afterwards. It never increases.
    """
    if start <= floor:
        return floor
    anneal_steps = max(1.0, ANNEAL_FRACTION * total_steps)
    rate = math.log(start / floor) / anneal_steps
    return max(floor, start * math.exp(-rate * step))


def _make_progress(console: Console | None) -> Progress:
    return Progress(
        TextColumn("[bold]training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[losses]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _format_losses(reconstruction: float, kl: float, temperature: float) -> str:
    return f"loss {reconstruction + kl:7.2f}  bce {reconstruction:7.2f}  kl {kl:5.2f}  temp {temperature:.3f}"


@torch.no_grad()
def evaluate(model: CategoricalVAE, data: ImageData, device: torch.device) -> dict[str, float]:
    """Return the mean reconstruction BCE and KL in nats per image, in eval mode.

    The model is left in eval mode.
    """
    model.eval()
    reconstruction_sum = torch.zeros((), dtype=torch.float64, device=device)
    kl_sum = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(data), EVAL_BATCH_SIZE):
        x = as_float_batch(data.images[start : start + EVAL_BATCH_SIZE].to(device))
        terms = elbo_terms(x, model(x))
        reconstruction_sum += terms.reconstruction.double() * len(x)
        kl_sum += terms.kl.double() * len(x)
    return {"bce": reconstruction_sum.item() / len(data), "kl": kl_sum.item() / len(data)}


def train(
    config: TrainConfig, progress: bool = True, console: Console | None = None
) -> tuple[CategoricalVAE, dict[str, Any]]:
    """Train a CategoricalVAE with the settings in ``config`` and return it in eval mode with a summary.

    The same config on the same device gives identical weights on CPU. On CUDA, some
    kernels are nondeterministic, so weights can differ in the last bits between runs.

    Raises:
        TrainConfigError: a setting is out of range (DeviceError for the device).
        DatasetError: the dataset cannot be loaded.
    """
    config.validate()
    device = resolve_device(config.device)
    started = time.perf_counter()

    torch.manual_seed(config.seed)
    batch_generator = torch.Generator().manual_seed(config.seed)

    data = load_dataset(config.dataset, config.data_root, config.split, download=config.download)
    if data.notice:
        logger.warning("%s", data.notice)
    if config.batch_size > len(data):
        raise TrainConfigError(
            f"batch size {config.batch_size} exceeds the {len(data)} training images; use a smaller batch size"
        )
    images = data.images.to(device)
    batches_per_epoch = len(data) // config.batch_size

    model = CategoricalVAE(config.latents, config.categories, temperature=config.temperature_start).to(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    # Columns: reconstruction BCE, KL. Kept on the device so steps do not sync.
    history = torch.zeros(config.steps, 2, device=device)

    bar = _make_progress(console) if progress else None
    task = bar.add_task("train", total=config.steps, losses="") if bar else None
    if bar:
        bar.start()
    try:
        order = torch.empty(0, dtype=torch.int64)
        for step in range(config.steps):
            batch_in_epoch = step % batches_per_epoch
            if batch_in_epoch == 0:
                order = torch.randperm(len(data), generator=batch_generator)
            batch_index = order[batch_in_epoch * config.batch_size : (batch_in_epoch + 1) * config.batch_size]
            x = as_float_batch(images[batch_index.to(device)])

            temperature = temperature_at(step, config.steps, config.temperature_start, config.temperature_floor)
            model.latent.temperature = temperature
            terms = elbo_terms(x, model(x))
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            optimizer.step()
            history[step, 0] = terms.reconstruction.detach()
            history[step, 1] = terms.kl.detach()

            if bar and ((step + 1) % PROGRESS_EVERY == 0 or step + 1 == config.steps):
                recent = history[max(0, step + 1 - PROGRESS_EVERY) : step + 1].mean(dim=0).tolist()
                bar.update(task, completed=step + 1, losses=_format_losses(*recent, temperature))
    finally:
        if bar:
            bar.stop()

    final_bce, final_kl = history[-min(FINAL_WINDOW, config.steps) :].mean(dim=0).tolist()
    test_data = load_dataset(config.dataset, config.data_root, "test")
    heldout = evaluate(model, test_data, device)
    if config.split != "train":
        logger.warning("split %r includes the test split, so heldout_bce is not measured on unseen images", config.split)

    summary: dict[str, Any] = {
        "dataset": data.name,
        "split": config.split,
        "train_images": len(data),
        "steps": config.steps,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "seed": config.seed,
        "device": str(device),
        "temperature_final": model.latent.temperature,
        "final_bce": final_bce,
        "final_kl": final_kl,
        "final_loss": final_bce + final_kl,
        "heldout_bce": heldout["bce"],
        "heldout_kl": heldout["kl"],
        "heldout_images": len(test_data),
        "seconds": time.perf_counter() - started,
        "notice": data.notice,
        "checkpoint": None,
    }
    if config.out is not None:
        checkpoint_info = {key: value for key, value in summary.items() if key not in ("checkpoint", "notice")}
        path = save_checkpoint(model, Path(config.out) / "model.pt", **checkpoint_info)
        summary["checkpoint"] = str(path)
    logger.info(
        "trained %d steps in %.1f s: train bce %.2f, kl %.2f, held-out bce %.2f",
        config.steps,
        summary["seconds"],
        final_bce,
        final_kl,
        heldout["bce"],
    )
    return model, summary


class UsageError(Exception):
    """A command-line argument that argparse rejected."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _category_count(text: str) -> int:
    value = _positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``python -m models.train``."""
    defaults = TrainConfig()
    parser = _ArgumentParser(
        prog="python -m models.train",
        description="Train the reference categorical VAE and save OUT/model.pt.",
    )
    parser.add_argument("--dataset", default=defaults.dataset, help=f"dataset: {DATASET_CHOICES} (default: %(default)s)")
    parser.add_argument(
        "--data-root", default=defaults.data_root, help="folder of the mnist files or their download (default: %(default)s)"
    )
    parser.add_argument("--split", default=defaults.split, choices=SPLITS, help="split to train on (default: %(default)s)")
    parser.add_argument("--steps", type=_positive_int, default=defaults.steps, help="optimizer steps (default: %(default)s)")
    parser.add_argument(
        "--batch-size", type=_positive_int, default=defaults.batch_size, help="images per step (default: %(default)s)"
    )
    parser.add_argument("--lr", type=_positive_float, default=defaults.lr, help="Adam learning rate (default: %(default)s)")
    parser.add_argument(
        "--latents", type=_positive_int, default=defaults.latents, help="number N of categorical variables (default: %(default)s)"
    )
    parser.add_argument(
        "--categories", type=_category_count, default=defaults.categories, help="categories K per variable, at least 2 (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed for weights, noise and batch order (default: %(default)s)")
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--out", default=defaults.out, help="output folder for model.pt (default: %(default)s)")
    parser.add_argument(
        "--download", action="store_true", help="let torchvision download MNIST into --data-root if it is missing"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the training command line and return its exit code: 0 on success, 2 on usage errors."""
    console = Console()
    error_console = Console(stderr=True, highlight=False, soft_wrap=True)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        error_console.print(f"{parser.prog}: error: {error} (see --help)", markup=False)
        return 2

    settings = {field.name: getattr(args, field.name) for field in dataclasses.fields(TrainConfig) if hasattr(args, field.name)}
    config = TrainConfig(**settings)

    # Show warnings of the models package, such as the fallback to the bundled sample,
    # on stderr while this command runs.
    package_logger = logging.getLogger("models")
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    package_logger.addHandler(handler)
    try:
        _, summary = train(config, progress=True, console=console)
    except (TrainConfigError, DatasetError) as error:
        error_console.print(f"{parser.prog}: error: {error}", markup=False)
        return 2
    except (OSError, CheckpointError) as error:
        error_console.print(f"{parser.prog}: error: {error}", markup=False)
        return 1
    finally:
        package_logger.removeHandler(handler)

    console.print(
        f"{summary['steps']} steps on {summary['train_images']:,} {summary['dataset']} images in "
        f"{summary['seconds']:.1f} s on {summary['device']}: train loss {summary['final_loss']:.2f} "
        f"(bce {summary['final_bce']:.2f}, kl {summary['final_kl']:.2f}); "
        f"held-out bce {summary['heldout_bce']:.2f} nats per image on {summary['heldout_images']:,} test images; "
        f"saved {summary['checkpoint']}",
        markup=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
