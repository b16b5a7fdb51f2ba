"""HDF5 storage of codes and results: atomic writes and loading.

Public names:
    ProbeWriter    streams labels, per-layer codes and results into a partial file,
                   then renames it onto the output path with ``complete = True``
    load           open a result file: labels, lazy per-layer codes, results, metadata
    ProbeFile, StoredLayer   what ``load`` returns
    StoreError     an output path that cannot be used, or a file that is not a result file
    FORMAT         the format version string written to every file

The layout is documented in docs/hdf5.md. A file at the output path is either
complete and says so, or it is the previous complete file: the writer works on
``<out>.partial`` and only ``commit`` moves it into place.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .analysis import AnalysisResult, PositionalNPMI, WholeCodeNPMI

__all__ = ["ProbeWriter", "load", "ProbeFile", "StoredLayer", "StoreError", "FORMAT", "chunk_shape"]

FORMAT = "probe-hdf5/1"
# Chunks of about 256 KiB: large enough for fast gzip, small enough to read one slice cheaply.
CHUNK_TARGET_BYTES = 256 * 1024


class StoreError(ValueError):
    """An output path that cannot be written, or a file that is not a probe result."""


def chunk_shape(positions: int, itemsize: int, target_bytes: int = CHUNK_TARGET_BYTES) -> tuple[int, int]:
    """Choose a (rows, columns) chunk of about ``target_bytes`` for a codes dataset (n, P)."""
    columns = max(1, min(positions, target_bytes // itemsize))
    rows = max(1, target_bytes // (columns * itemsize))
    return rows, columns


def check_output_path(path: Path, overwrite: bool) -> None:
    """Raise StoreError when ``path`` exists (without overwrite) or its folder is unusable."""
    if path.exists() and not overwrite:
        raise StoreError(f"output file {path} already exists; pass --overwrite to replace it or choose another --out")
    if path.is_dir():
        raise StoreError(f"output path {path} is a folder; pass a file name such as {path / 'probe.h5'}")
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise StoreError(f"cannot write {path}: {folder} is not a folder")
    if folder.exists() and not os.access(folder, os.W_OK):
        raise StoreError(f"cannot write {path}: folder {folder} is not writable; choose another --out")


def _attr_value(value):
    """Convert a Python value into something h5py stores as an attribute."""
    if value is None:
        return ""
    if isinstance(value, str):
        return str(value)  # numpy str_ values have no HDF5 conversion
    if isinstance(value, (list, tuple)) and value and all(isinstance(item, str) for item in value):
        return np.array(value, dtype=h5py.string_dtype())
    return value


class _CodeBuffer:
    """Collects code batches for one layer and writes whole chunks at a time."""

    def __init__(self, dataset: h5py.Dataset):
        self.dataset = dataset
        self.chunk_rows = dataset.chunks[0]
        self.parts: list[np.ndarray] = []
        self.rows = 0

    def append(self, codes: np.ndarray) -> None:
        self.parts.append(codes)
        self.rows += len(codes)
        if self.rows >= self.chunk_rows:
            self.flush(whole_chunks_only=True)

    def flush(self, whole_chunks_only: bool = False) -> None:
        if not self.parts:
            return
        block = np.concatenate(self.parts, axis=0)
        count = (len(block) // self.chunk_rows) * self.chunk_rows if whole_chunks_only else len(block)
        if count:
            start = self.dataset.shape[0]
            self.dataset.resize(start + count, axis=0)
            self.dataset[start : start + count] = block[:count]
        rest = block[count:]
        self.parts = [rest] if len(rest) else []
        self.rows = len(rest)


class ProbeWriter:
    """Write one run's file at ``<path>.partial`` and move it to ``path`` on ``commit``.

    Example::

        with ProbeWriter("runs/a/probe.h5", attrs={"dataset": "mnist"}) as writer:
            writer.write_labels(labels)
            writer.add_layer("latent", positions=3, alphabet_size=26, dtype=np.uint8)
            writer.append("latent", codes)
            writer.write_result("latent", result)
            writer.commit()

    Leaving the ``with`` block without ``commit`` closes the partial file and leaves
    the output path untouched.
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False, attrs: dict | None = None):
        self.path = Path(path)
        check_output_path(self.path, overwrite)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial_path = self.path.with_name(self.path.name + ".partial")
        try:
            self.file = h5py.File(self.partial_path, "w")
        except OSError as error:
            raise StoreError(f"cannot create {self.partial_path}: {error}") from error
        self._buffers: dict[str, _CodeBuffer] = {}
        self.committed = False
        # Layers keep the order in which they were added, which is network order for probe.run.
        self.file.create_group("layers", track_order=True)
        root = self.file.attrs
        root["format"] = FORMAT
        root["complete"] = False
        root["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        for key, value in (attrs or {}).items():
            root[key] = _attr_value(value)

    def __enter__(self) -> "ProbeWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def write_labels(self, labels: np.ndarray, label_values: np.ndarray | None = None) -> None:
        """Store the label of every sample and the sorted distinct label values."""
        labels = np.asarray(labels, dtype=np.int64)
        values = np.unique(labels) if label_values is None else np.asarray(label_values, dtype=np.int64)
        self.file.create_dataset("labels", data=labels, chunks=True, compression="gzip")
        self.file.create_dataset("label_values", data=values)

    def add_layer(
        self,
        name: str,
        positions: int,
        alphabet_size: int,
        dtype: np.dtype,
        attrs: dict | None = None,
        edges: np.ndarray | None = None,
    ) -> None:
        """Create ``layers/<name>`` with an empty, resizable codes dataset (n, positions)."""
        group = self.file.create_group(f"layers/{name}")
        dtype = np.dtype(dtype)
        codes = group.create_dataset(
            "codes",
            shape=(0, positions),
            maxshape=(None, positions),
            dtype=dtype,
            chunks=chunk_shape(positions, dtype.itemsize),
            compression="gzip",
            compression_opts=1,
            shuffle=dtype.itemsize > 1,
        )
        group.attrs["positions"] = positions
        group.attrs["alphabet_size"] = alphabet_size
        for key, value in (attrs or {}).items():
            group.attrs[key] = _attr_value(value)
        if edges is not None:
            group.create_dataset("edges", data=np.asarray(edges, dtype=np.float64))
        self._buffers[name] = _CodeBuffer(codes)

    def append(self, name: str, codes: np.ndarray) -> None:
        """Append a batch of codes [B, positions] to ``layers/<name>/codes``."""
        self._buffers[name].append(np.asarray(codes, dtype=self._buffers[name].dataset.dtype))

    def flush(self) -> None:
        """Write every buffered code row and flush the file to disk."""
        for buffer in self._buffers.values():
            buffer.flush()
        self.file.flush()

    def write_result(self, name: str, result: AnalysisResult) -> None:
        """Store NPMI tables and statistics under ``layers/<name>``."""
        group = self.file.require_group(f"layers/{name}")
        whole = group.create_group("npmi/whole")
        whole.create_dataset("codes", data=result.whole.codes, compression="gzip")
        whole.create_dataset("counts", data=result.whole.counts.astype(np.int64), compression="gzip")
        whole.create_dataset("npmi", data=result.whole.npmi.astype(np.float64), compression="gzip")
        positional = group.create_group("npmi/positional")
        positional.create_dataset("counts", data=result.positional.counts.astype(np.int64), compression="gzip")
        positional.create_dataset("npmi", data=result.positional.npmi.astype(np.float64), compression="gzip")
        stats = group.create_group("stats")
        for key, value in result.stats.items():
            stats.attrs[key] = value

    def commit(self) -> Path:
        """Mark the file complete, close it and move it onto the output path."""
        self.flush()
        self.file.attrs["complete"] = True
        self.file.close()
        os.replace(self.partial_path, self.path)
        self.committed = True
        return self.path

    def close(self) -> None:
        """Close the partial file without committing (a no-op after ``commit``)."""
        if not self.committed and self.file.id.valid:
            try:
                self.flush()
            finally:
                self.file.close()


@dataclass
class StoredLayer:
    """One layer of a result file; ``codes`` is an h5py dataset read on access."""

    name: str
    attrs: dict
    codes: h5py.Dataset
    result: AnalysisResult | None
    edges: np.ndarray | None = None

    @property
    def positions(self) -> int:
        return int(self.attrs["positions"])

    @property
    def alphabet_size(self) -> int:
        return int(self.attrs["alphabet_size"])


@dataclass
class ProbeFile:
    """An open result file; use as a context manager or call ``close``."""

    path: Path
    metadata: dict
    labels: np.ndarray
    label_values: np.ndarray
    layers: dict[str, StoredLayer] = field(default_factory=dict)
    _file: h5py.File | None = None

    def __enter__(self) -> "ProbeFile":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None and self._file.id.valid:
            self._file.close()


def _read_result(group: h5py.Group, label_values: np.ndarray) -> AnalysisResult | None:
    if "npmi" not in group:
        return None
    whole, positional = group["npmi/whole"], group["npmi/positional"]
    return AnalysisResult(
        whole=WholeCodeNPMI(codes=whole["codes"][()], counts=whole["counts"][()], npmi=whole["npmi"][()]),
        positional=PositionalNPMI(counts=positional["counts"][()], npmi=positional["npmi"][()]),
        stats={key: _plain(value) for key, value in group["stats"].attrs.items()} if "stats" in group else {},
        label_values=label_values,
    )


def _plain(value):
    """Convert numpy scalars, arrays and byte strings from HDF5 attributes to Python values."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_plain(item) for item in value.tolist()] if value.dtype.kind in "OSU" else value.tolist()
    return value


def load(path: str | os.PathLike, allow_incomplete: bool = False) -> ProbeFile:
    """Open a result file written by probe.run or probe.npmi.

    Raises StoreError for a missing, unreadable, foreign or incomplete file
    (pass ``allow_incomplete=True`` to inspect a partial one).
    """
    path = Path(path)
    if not path.exists():
        raise StoreError(f"result file {path} not found")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise StoreError(f"cannot read {path} as HDF5 ({error}); the file is corrupt, truncated or not HDF5") from error
    try:
        metadata = {key: _plain(value) for key, value in handle.attrs.items()}
        if not str(metadata.get("format", "")).startswith("probe-hdf5/"):
            raise StoreError(f"{path} is an HDF5 file but not a probe result (no 'format' attribute starting with 'probe-hdf5/')")
        if not metadata.get("complete") and not allow_incomplete:
            raise StoreError(f"{path} is incomplete: the run that wrote it did not finish; rerun it")
        if "labels" not in handle or "layers" not in handle:
            raise StoreError(f"{path} is missing its 'labels' or 'layers' group; the file is damaged")
        labels = handle["labels"][()]
        label_values = handle["label_values"][()] if "label_values" in handle else np.unique(labels)
        layers = {}
        for name, group in handle["layers"].items():
            layers[name] = StoredLayer(
                name=name,
                attrs={key: _plain(value) for key, value in group.attrs.items()},
                codes=group["codes"],
                result=_read_result(group, label_values),
                edges=group["edges"][()] if "edges" in group else None,
            )
    except StoreError:
        handle.close()
        raise
    except (OSError, KeyError, ValueError) as error:
        handle.close()
        raise StoreError(f"cannot read {path}: {error}; the file is damaged") from error
    return ProbeFile(path=path, metadata=metadata, labels=labels, label_values=label_values, layers=layers, _file=handle)
