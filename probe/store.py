"""HDF5 storage of codes and results: atomic writes and loading.

Public names:
    ProbeWriter    streams labels, per-layer codes and results into a partial file,
                   then renames it onto the output path with ``complete = True``
    load           open a result file: labels, lazy per-layer codes, results, metadata
    ProbeFile, StoredLayer   what ``load`` returns
    StoreError     an output path that cannot be used, or a file that is not a result file
    FORMAT         the format version string written to every file

The layout is documented in docs/hdf5.md. A file at the output path is either
marked complete, or it is the previous complete file: the writer works on
``<out>.partial`` and only ``commit`` moves it into place.
"""

from __future__ import annotations

import datetime
import fcntl
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .analysis import AnalysisResult, PositionalNPMI, WholeCodeNPMI
from .ngrams import NgramNPMI, PositionalNgramNPMI
from .observations import Attribute
from .significance import PermutationNull

__all__ = ["ProbeWriter", "OutputLock", "load", "ProbeFile", "StoredLayer", "StoreError", "FORMAT", "chunk_shape"]

logger = logging.getLogger(__name__)

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
    if str(path) in ("", ".") or path.name == "":
        raise StoreError("output path is empty; pass a file name such as runs/demo/probe.h5")
    if path.is_dir():
        raise StoreError(f"output path {path} is a folder; pass a file name such as {path / 'probe.h5'}")
    if path.exists() and not overwrite:
        raise StoreError(f"output file {path} already exists; pass --overwrite to replace it or choose another --out")
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
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        # An empty list is stored as an empty string array, the type its items would have.
        return np.array(value, dtype=h5py.string_dtype())
    return value


class _CodeBuffer:
    """Collects code batches for one layer in memory until the writer flushes them."""

    def __init__(self, dataset: h5py.Dataset):
        self.dataset = dataset
        self.parts: list[np.ndarray] = []
        self.rows = 0

    def append(self, codes: np.ndarray) -> None:
        self.parts.append(codes)
        self.rows += len(codes)

    def flush(self) -> None:
        if not self.parts:
            return
        block = np.concatenate(self.parts, axis=0)
        start = self.dataset.shape[0]
        self.dataset.resize(start + len(block), axis=0)
        self.dataset[start:] = block
        self.parts, self.rows = [], 0


class OutputLock:
    """An exclusive advisory lock on ``<out>.lock``, held while one run writes ``<out>``.

    A second run with the same output fails at once instead of writing the same
    partial file. The lock uses ``fcntl.flock``, which some network filesystems
    do not honour (see docs/hdf5.md).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._handle = None

    def acquire(self) -> None:
        handle = open(self.lock_path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise StoreError(
                f"another run is writing {self.path} (process {owner} has the lock {self.lock_path}); "
                "wait for it to finish or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is None:
            return
        try:
            os.unlink(self.lock_path)
        except FileNotFoundError:
            pass
        self._handle.close()
        self._handle = None


class _DamagedPartialError(StoreError):
    """A partial file that HDF5 cannot open, typically after a kill during a flush."""


# Root attributes that must match for --resume to continue a partial file.
RESUME_KEYS = ("calibration", "checkpoint_sha256", "model", "dataset", "split", "n_samples", "seed", "layers", "quantizers", "pooling", "batch_size", "observations", "ngram_lengths")


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

    def __init__(self, path: str | os.PathLike, overwrite: bool = False, attrs: dict | None = None, resume: bool = False):
        self.path = Path(path)
        check_output_path(self.path, overwrite)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create folder {self.path.parent}: {error.strerror}; choose another --out") from None
        self.partial_path = self.path.with_name(self.path.name + ".partial")
        self._lock = OutputLock(self.path)
        try:
            self._lock.acquire()
        except OSError as error:
            raise StoreError(f"cannot write {self.path}: {error.strerror} ({self._lock.lock_path}); choose another --out") from None
        self._buffers: dict[str, _CodeBuffer] = {}
        self.committed = False
        self.rows_flushed = 0
        """Code rows that every layer has on disk, as of the last flush."""
        self.rows_done = 0
        """Code rows already stored for every layer when a partial file was resumed."""
        self.resume_note = ""
        """Why a --resume started from the beginning, or empty."""
        try:
            if resume and self.partial_path.exists():
                try:
                    self._reopen(attrs or {})
                except _DamagedPartialError as error:
                    self.resume_note = str(error)
                    self._create(attrs or {})
            else:
                self._create(attrs or {})
        except BaseException:
            self._lock.release()
            raise

    def _create(self, attrs: dict) -> None:
        try:
            self.file = h5py.File(self.partial_path, "w")
        except OSError as error:
            raise StoreError(f"cannot create {self.partial_path}: {error}; choose another --out") from None
        # Layers keep the order in which they were added, which is network order for probe.run.
        self.file.create_group("layers", track_order=True)
        root = self.file.attrs
        root["format"] = FORMAT
        root["complete"] = False
        root["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        root["rows_flushed"] = 0
        for key, value in attrs.items():
            root[key] = _attr_value(value)

    def _reopen(self, attrs: dict) -> None:
        """Open an existing partial file for --resume and drop anything past its last flush."""
        try:
            self.file = h5py.File(self.partial_path, "r+")
            root = self.file.attrs
            stored = {key: _plain(value) for key, value in root.items()}
            layers = self.file["layers"]
        except (OSError, KeyError) as error:
            raise _DamagedPartialError(
                f"{self.partial_path} was damaged when the run stopped ({error}), so the run starts from the beginning"
            ) from None
        stored = {key: _plain(value) for key, value in root.items()}
        for key in RESUME_KEYS:
            if key in attrs and _plain(_attr_value(attrs[key])) != stored.get(key):
                self.file.close()
                raise StoreError(
                    f"cannot resume from {self.partial_path}: it was written with {key}={stored.get(key)!r}, "
                    f"this run has {key}={attrs[key]!r}; rerun with the same options or drop --resume"
                )
        self.rows_done = int(stored.get("rows_flushed", 0))
        self.rows_flushed = self.rows_done
        for name, group in layers.items():
            for member in [key for key in group if key not in ("codes", "edges")]:
                del group[member]
            group["codes"].resize(self.rows_done, axis=0)
            self._buffers[name] = _CodeBuffer(group["codes"])

    def stored_codes(self, name: str, start: int, stop: int) -> np.ndarray:
        """Read rows [start, stop) of a layer's stored codes (used to rebuild counts on resume)."""
        return self.file[f"layers/{name}/codes"][start:stop]

    def has_layer(self, name: str) -> bool:
        """Return whether ``layers/<name>`` exists in the file being written."""
        return name in self._buffers

    def layer_attrs(self, name: str) -> dict | None:
        """Return a stored layer's attributes with its edges, or None when it does not exist yet."""
        if name not in self.file["layers"]:
            return None
        group = self.file[f"layers/{name}"]
        attrs = {key: _plain(value) for key, value in group.attrs.items()}
        attrs["edges"] = group["edges"][()] if "edges" in group else None
        return attrs

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
        """Write every buffered code row, record how many rows all layers hold, and flush to disk.

        Codes reach the file only here, and the file is closed and reopened after each
        flush, so a run killed between flushes leaves a partial file that HDF5 can open.
        """
        for buffer in self._buffers.values():
            buffer.flush()
        if self._buffers:
            rows = min(buffer.dataset.shape[0] for buffer in self._buffers.values())
            self.file.attrs["rows_flushed"] = rows
            self.rows_flushed = rows
        self.file.close()
        self.file = h5py.File(self.partial_path, "r+")
        for name, buffer in self._buffers.items():
            buffer.dataset = self.file[f"layers/{name}/codes"]

    def write_observations(self, attributes: list[Attribute]) -> None:
        """Store each attribute's value per sample under ``observations/<attribute>``."""
        root = self.file.require_group("observations")
        for attribute in attributes:
            group = root.create_group(attribute.name)
            group.create_dataset("values", data=attribute.raw.astype(np.int64), chunks=True, compression="gzip")
            group.create_dataset("label_values", data=attribute.values.astype(np.int64))
            if attribute.value_names:
                group.create_dataset("value_names", data=np.array(attribute.value_names, dtype=h5py.string_dtype()))
            group.attrs["description"] = attribute.description

    def write_result(self, name: str, result: AnalysisResult) -> None:
        """Store NPMI tables and statistics under ``layers/<name>``."""
        self._write_analysis(self.file.require_group(f"layers/{name}"), result)

    def _write_analysis(self, group: h5py.Group, result: AnalysisResult) -> None:
        """Store one AnalysisResult in ``group``; attributes go to ``observations/<attribute>`` below it."""
        whole = group.create_group("npmi/whole")
        whole.create_dataset("codes", data=result.whole.codes, compression="gzip")
        whole.create_dataset("counts", data=result.whole.counts.astype(np.int64), compression="gzip")
        whole.create_dataset("npmi", data=result.whole.npmi.astype(np.float64), compression="gzip")
        if result.whole.p_values is not None:
            whole.create_dataset("p_values", data=result.whole.p_values.astype(np.float64), compression="gzip")
            whole.create_dataset("tested", data=result.whole.tested.astype(bool), compression="gzip")
            whole.create_dataset("significant", data=result.whole.significant.astype(bool), compression="gzip")
        if result.null is not None:
            null = group.create_group("null")
            null.create_dataset("mutual_information_bits", data=result.null.mutual_information_bits.astype(np.float64))
            null.create_dataset("max_npmi", data=result.null.max_npmi.astype(np.float64))
            null.attrs["permutations"] = result.null.permutations
            null.attrs["seed"] = result.null.seed
            null.attrs["min_count"] = result.null.min_count
        positional = group.create_group("npmi/positional")
        positional.create_dataset("counts", data=result.positional.counts.astype(np.int64), compression="gzip")
        positional.create_dataset("npmi", data=result.positional.npmi.astype(np.float64), compression="gzip")
        stats = group.create_group("stats")
        for key, value in result.stats.items():
            stats.attrs[key] = value
        _write_ngrams(group, result)
        for attribute, sub_result in result.observations.items():
            sub_group = group.create_group(f"observations/{attribute}")
            sub_group.create_dataset("label_values", data=np.asarray(sub_result.label_values, dtype=np.int64))
            if sub_result.value_names:
                sub_group.create_dataset("value_names", data=np.array(sub_result.value_names, dtype=h5py.string_dtype()))
            self._write_analysis(sub_group, sub_result)

    def commit(self) -> Path:
        """Mark the file complete, close it and move it onto the output path."""
        self.flush()
        self.file.attrs["complete"] = True
        self.file.close()
        os.replace(self.partial_path, self.path)
        self.committed = True
        self._lock.release()
        return self.path

    def close(self) -> None:
        """Close the partial file without committing (a no-op after ``commit``)."""
        try:
            if not self.committed and self.file.id.valid:
                try:
                    self.flush()
                except (OSError, RuntimeError, ValueError, KeyError) as error:
                    # An interrupt inside an earlier flush can leave stale handles; the last
                    # complete flush is still on disk and rows_flushed records how far it got.
                    logger.warning("final flush of %s failed (%s); it keeps the rows of the last flush", self.partial_path, error)
                finally:
                    if self.file.id.valid:
                        self.file.close()
        finally:
            self._lock.release()


def _write_ngrams(group: h5py.Group, result: AnalysisResult) -> None:
    """Store n-gram tables as ``npmi/ngram/<n>`` and ``npmi/positional_ngram/<n>``."""
    for order, table in result.ngrams.items():
        ngram = group.create_group(f"npmi/ngram/{order}")
        ngram.create_dataset("codes", data=table.codes.astype(np.int64), compression="gzip")
        ngram.create_dataset("counts", data=table.counts.astype(np.int64), compression="gzip")
        ngram.create_dataset("npmi", data=table.npmi.astype(np.float64), compression="gzip")
        ngram.create_dataset("message_counts", data=table.message_counts.astype(np.int64), compression="gzip")
    for order, table in result.positional_ngrams.items():
        ngram = group.create_group(f"npmi/positional_ngram/{order}")
        ngram.create_dataset("starts", data=table.starts.astype(np.int64), compression="gzip")
        ngram.create_dataset("codes", data=table.codes.astype(np.int64), compression="gzip")
        ngram.create_dataset("counts", data=table.counts.astype(np.int64), compression="gzip")
        ngram.create_dataset("npmi", data=table.npmi.astype(np.float64), compression="gzip")


def _read_ngrams(group: h5py.Group, result: AnalysisResult) -> None:
    for order, table in (group["npmi/ngram"].items() if "npmi/ngram" in group else ()):
        counts = table["counts"][()]
        message_counts = table["message_counts"][()] if "message_counts" in table else counts.sum(axis=1)
        result.ngrams[int(order)] = NgramNPMI(codes=table["codes"][()], counts=counts, npmi=table["npmi"][()], message_counts=message_counts)
    for order, table in (group["npmi/positional_ngram"].items() if "npmi/positional_ngram" in group else ()):
        result.positional_ngrams[int(order)] = PositionalNgramNPMI(
            starts=table["starts"][()], codes=table["codes"][()], counts=table["counts"][()], npmi=table["npmi"][()]
        )
    result.ngrams = dict(sorted(result.ngrams.items()))
    result.positional_ngrams = dict(sorted(result.positional_ngrams.items()))


def _read_observation_results(group: h5py.Group, result: AnalysisResult) -> None:
    for attribute, sub_group in (group["observations"].items() if "observations" in group else ()):
        sub_result = _read_result(sub_group, sub_group["label_values"][()])
        if sub_result is None:
            continue
        if "value_names" in sub_group:
            sub_result.value_names = [_plain(name) for name in sub_group["value_names"][()]]
        result.observations[attribute] = sub_result


def _read_attributes(handle: h5py.File) -> dict[str, Attribute]:
    """Read per-sample attribute values stored at ``observations/<attribute>``."""
    attributes = {}
    for name, group in (handle["observations"].items() if "observations" in handle else ()):
        values = group["values"][()]
        label_values = group["label_values"][()]
        attributes[name] = Attribute(
            name=name,
            encoded=np.searchsorted(label_values, values).astype(np.int64),
            values=label_values,
            value_names=[_plain(item) for item in group["value_names"][()]] if "value_names" in group else [],
            description=_plain(group.attrs.get("description", "")),
        )
    return attributes


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
    # Attribute name -> per-sample values, for runs with image features or user attributes.
    observations: dict[str, Attribute] = field(default_factory=dict)

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
    tables = {key: whole[key][()] for key in ("p_values", "tested", "significant") if key in whole}
    null = None
    if "null" in group:
        null = PermutationNull(
            permutations=int(group["null"].attrs["permutations"]),
            seed=int(group["null"].attrs["seed"]),
            mutual_information_bits=group["null/mutual_information_bits"][()],
            max_npmi=group["null/max_npmi"][()],
            min_count=int(group["null"].attrs["min_count"]),
        )
    result = AnalysisResult(
        whole=WholeCodeNPMI(codes=whole["codes"][()], counts=whole["counts"][()], npmi=whole["npmi"][()], **tables),
        positional=PositionalNPMI(counts=positional["counts"][()], npmi=positional["npmi"][()]),
        stats={key: _plain(value) for key, value in group["stats"].attrs.items()},
        label_values=label_values,
        null=null,
    )
    _read_ngrams(group, result)
    _read_observation_results(group, result)
    return result


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
        observations = _read_attributes(handle)
    except StoreError:
        handle.close()
        raise
    except (OSError, KeyError, ValueError) as error:
        handle.close()
        raise StoreError(f"cannot read {path}: {error}; the file is damaged") from error
    return ProbeFile(path=path, metadata=metadata, labels=labels, label_values=label_values, layers=layers, _file=handle, observations=observations)
