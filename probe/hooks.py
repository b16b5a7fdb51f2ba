"""Forward hooks that record chosen layers of any ``torch.nn.Module``.

Public names:
    resolve_layers       map short names or dotted paths to module paths, with clear errors
    layer_names          every module path of a model, with the short names that are unique
    Recorder             context manager: hooks in ``__enter__``, removed in ``__exit__``
    LayerNotFoundError   an unknown or ambiguous layer name
    HookError            a layer output that cannot be recorded as it is

Example::

    paths = resolve_layers(model, ["conv1", "latent"])
    with Recorder(model, paths) as recorder:
        outputs = recorder.run(images)      # {"conv1": tensor, "latent": tensor}

Recorded outputs are detached clones, so an in-place operation later in the
network cannot change them. After the first pass, which runs to the end to catch
a module that runs twice, each pass stops once every requested layer has been
recorded (``stop_early=True``), skipping the rest of the network.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

__all__ = ["resolve_layers", "layer_names", "Recorder", "LayerNotFoundError", "HookError"]


class LayerNotFoundError(LookupError):
    """A requested layer name matches no module, or more than one."""


class HookError(RuntimeError):
    """A hooked layer returned something the recorder cannot store as one tensor."""


class _StopForward(Exception):
    """Raised from a hook to end the forward pass once every layer is recorded."""


def layer_names(model: nn.Module) -> dict[str, str]:
    """Return {name: module path} for every submodule, short names included where unique.

    A short name is the last component of a dotted path (``conv1`` for
    ``encoder.conv1``) and is listed only when no other module shares it.
    """
    paths = [path for path, _ in model.named_modules() if path]
    last = Counter(path.rsplit(".", 1)[-1] for path in paths)
    names = {path: path for path in paths}
    for path in paths:
        short = path.rsplit(".", 1)[-1]
        if last[short] == 1:
            names.setdefault(short, path)
    return names


def resolve_layers(model: nn.Module, requested: list[str]) -> dict[str, str]:
    """Map each requested name to its module path, keeping the requested names as keys.

    Exact dotted paths win; otherwise a name must equal the last component of
    exactly one module path. Raises LayerNotFoundError listing the valid names.
    """
    paths = [path for path, _ in model.named_modules() if path]
    resolved: dict[str, str] = {}
    for name in requested:
        if name in paths:
            resolved[name] = name
            continue
        matches = [path for path in paths if path.rsplit(".", 1)[-1] == name]
        if len(matches) == 1:
            resolved[name] = matches[0]
        elif len(matches) > 1:
            raise LayerNotFoundError(f"layer name {name!r} is ambiguous: it matches {', '.join(matches)}; pass the full dotted path")
        else:
            valid = sorted(layer_names(model), key=lambda item: (item.count("."), item))
            raise LayerNotFoundError(
                f"unknown layer {name!r}; valid names are: {', '.join(valid)} (--list-layers shows each with its output shape)"
            )
    duplicates = [path for path, count in Counter(resolved.values()).items() if count > 1]
    if duplicates:
        raise LayerNotFoundError(f"layer {duplicates[0]!r} was requested more than once; name each layer once")
    return resolved


class Recorder:
    """Record the outputs of chosen modules during forward passes.

    ``layers`` maps a result name to a module path (as from ``resolve_layers``).
    ``output_index`` picks one element of a tuple or list output, per result name.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: dict[str, str],
        output_index: dict[str, int] | None = None,
        stop_early: bool = True,
    ):
        self.model = model
        self.layers = dict(layers)
        self.output_index = dict(output_index or {})
        self.stop_early = stop_early
        self.outputs: dict[str, torch.Tensor] = {}
        # The first pass always runs to the end, so a module that runs twice per pass is caught.
        self._checked_repeats = False
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        modules = dict(model.named_modules())
        missing = [path for path in self.layers.values() if path not in modules]
        if missing:
            raise LayerNotFoundError(f"no module at path {missing[0]!r}; resolve names with resolve_layers first")
        self._modules = {name: modules[path] for name, path in self.layers.items()}

    def __enter__(self) -> "Recorder":
        try:
            for name, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._hook_for(name)))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook, newest first."""
        while self._handles:
            self._handles.pop().remove()

    def _hook_for(self, name: str):
        def hook(module: nn.Module, inputs, output) -> None:
            if name in self.outputs:
                raise HookError(
                    f"layer {name!r} ({self.layers[name]}) ran more than once in one forward pass; "
                    "its outputs would overwrite each other, so probe a module that runs once per pass"
                )
            self.outputs[name] = self._select(name, output).detach().clone()
            if self.stop_early and self._checked_repeats and len(self.outputs) == len(self._modules):
                raise _StopForward

        return hook

    def _select(self, name: str, output) -> torch.Tensor:
        index = self.output_index.get(name)
        if isinstance(output, (tuple, list)):
            if index is None:
                raise HookError(
                    f"layer {name!r} returns a {type(output).__name__} of {len(output)} elements; "
                    f"choose one with --output-index {name}=I (0 <= I < {len(output)})"
                )
            if not -len(output) <= index < len(output):
                raise HookError(f"--output-index {name}={index} is out of range: the output has {len(output)} elements")
            output = output[index]
        elif index is not None:
            raise HookError(f"--output-index was given for layer {name!r}, but its output is a single {type(output).__name__}")
        if not isinstance(output, torch.Tensor):
            raise HookError(f"layer {name!r} returns {type(output).__name__}, not a tensor; probe a module that returns a tensor")
        if output.dim() == 0:
            raise HookError(f"layer {name!r} returns a single number per batch, not one value per sample; probe a layer whose output has a batch axis")
        return output

    def run(self, *inputs, **kwargs) -> dict[str, torch.Tensor]:
        """Run one forward pass and return {name: recorded output}."""
        self.outputs = {}
        try:
            self.model(*inputs, **kwargs)
        except _StopForward:
            pass
        self._checked_repeats = True
        missing = [name for name in self._modules if name not in self.outputs]
        if missing:
            raise HookError(f"layer {missing[0]!r} ({self.layers[missing[0]]}) did not run in the forward pass, so nothing was recorded")
        return self.outputs
