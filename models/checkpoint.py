"""Save and load CategoricalVAE checkpoints.

A checkpoint is a ``torch.save`` file of a dict with "state_dict" and "config". The config
stores the constructor settings (latents, categories, architecture) and whatever the
trainer adds: dataset, steps, seed, final losses. It contains only plain values, so it
loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from models.vae import ARCHITECTURE, CategoricalVAE

logger = logging.getLogger(__name__)

PLAIN_TYPES = (str, int, float, bool, type(None))
LOGITS_WEIGHT = "encoder.logits.weight"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the model."""


def _check_plain(key: str, value: Any) -> None:
    if isinstance(value, PLAIN_TYPES):
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(key, item)
        return
    if isinstance(value, dict):
        for inner_key, item in value.items():
            _check_plain(f"{key}.{inner_key}", item)
        return
    raise TypeError(
        f"checkpoint info {key!r} has type {type(value).__name__}; "
        "use str, int, float, bool, None, or lists and dicts of them"
    )


def save_checkpoint(model: CategoricalVAE, path: str | Path, **info: Any) -> Path:
    """Write ``model`` and ``info`` to ``path`` atomically and return the path.

    The file is written to a temporary name in the same folder and then renamed over
    ``path``, so an interrupted save leaves either the old file or none, never a
    truncated one. Missing parent folders are created.

    Raises:
        TypeError: an ``info`` value is not a plain value (see PLAIN_TYPES).
    """
    for key, value in info.items():
        _check_plain(key, value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    payload = {
        "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
        "config": {**model.config, **info},
    }
    handle, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp creates the file readable by its owner only; a checkpoint gets the usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary_name, 0o666 & ~umask)
        os.replace(temporary_name, path)
    except BaseException:
        Path(temporary_name).unlink(missing_ok=True)
        raise
    logger.info("saved checkpoint %s", path)
    return path


def _read_payload(path: str | Path, map_location: str | torch.device) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; pass the model.pt file inside it")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, OSError) as error:
        # A text file reaches the legacy unpickler and fails with a KeyError on its magic number.
        raise CheckpointError(
            f"{path} is not a valid checkpoint: {error}. Retrain or pass the right file."
        ) from error

    if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
        raise CheckpointError(f"{path} is not a valid checkpoint: no state_dict. Retrain or pass the right file.")
    config = payload.get("config")
    if not isinstance(config, dict) or not {"latents", "categories", "architecture"} <= config.keys():
        raise CheckpointError(
            f"{path} is not a valid checkpoint: the config lacks latents, categories or architecture. "
            "Retrain or pass the right file."
        )
    if config["architecture"] != ARCHITECTURE:
        raise CheckpointError(
            f"{path} has architecture {config['architecture']!r}, but this version builds {ARCHITECTURE!r}. "
            "Retrain with this version or pass a checkpoint of the same architecture."
        )
    return payload


def _shape_of(state_dict: dict[str, torch.Tensor], key: str) -> list[int] | None:
    tensor = state_dict.get(key)
    return list(tensor.shape) if isinstance(tensor, torch.Tensor) else None


def _apply_state(model: CategoricalVAE, payload: dict[str, Any], path: str | Path) -> None:
    config = payload["config"]
    state_dict = payload["state_dict"]
    if (config["latents"], config["categories"]) != (model.latents, model.categories):
        raise CheckpointError(
            f"{path}: checkpoint has {config['latents']} x {config['categories']} latents "
            f"(logits weight {_shape_of(state_dict, LOGITS_WEIGHT)}) but the model has "
            f"{model.latents} x {model.categories} (logits weight {list(model.encoder.logits.weight.shape)})"
        )
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise CheckpointError(
            f"{path} is not a valid checkpoint for this model: {error}. Retrain or pass the right file."
        ) from error


def load_state_into(model: CategoricalVAE, path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load the weights of the checkpoint at ``path`` into ``model`` and return its config.

    Raises:
        CheckpointError: the file is missing or invalid, has another architecture, or
            its latent shape N x K differs from the model's.
    """
    payload = _read_payload(path, map_location)
    _apply_state(model, payload, path)
    return payload["config"]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[CategoricalVAE, dict[str, Any]]:
    """Build a CategoricalVAE from the checkpoint at ``path`` and return it in eval mode with its config.

    Raises:
        CheckpointError: the file is missing or invalid, or has another architecture.
    """
    payload = _read_payload(path, map_location)
    config = payload["config"]
    try:
        model = CategoricalVAE(latents=int(config["latents"]), categories=int(config["categories"]))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path} is not a valid checkpoint: {error}. Retrain or pass the right file.") from error
    _apply_state(model, payload, path)
    model.to(map_location)
    model.eval()
    return model, config
