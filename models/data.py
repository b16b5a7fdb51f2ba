"""Image datasets in MNIST's IDX format, shared by training and the probe.

Sources, chosen by ``load_dataset(name=...)``:

- ``mnist``: torchvision's MNIST files under a root folder, optionally downloaded by
  torchvision. Without files and without download it falls back to the bundled sample.
- ``mnist-sample``: 10,000 real MNIST digits bundled in ``models/sample_data``
  (see PROVENANCE.md there): 9,000 for ``train`` and 1,000 for ``test``.
- ``idx:PATH``: a folder of MNIST-format IDX files, such as Fashion-MNIST.

The order of the samples is the order in the files. Nothing here shuffles.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

logger = logging.getLogger(__name__)

SPLITS = ("train", "test", "all")
DATASET_CHOICES = "mnist, mnist-sample, idx:PATH"
DEFAULT_ROOT = "data"

SAMPLE_DIR = Path(__file__).parent / "sample_data"
SAMPLE_IMAGES = SAMPLE_DIR / "images-idx3-ubyte.gz"
SAMPLE_LABELS = SAMPLE_DIR / "labels-idx1-ubyte.gz"
SAMPLE_TRAIN_SIZE = 9_000

# File stems of MNIST's IDX files. Each may also carry a ".gz" suffix.
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# IDX type codes: the third byte of the magic number.
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


class DatasetError(ValueError):
    """A dataset name, split, limit or file that cannot be loaded."""


class IDXError(DatasetError):
    """An IDX file that is malformed or inconsistent with its pair."""


@dataclass
class ImageData:
    """Images with their integer labels, in file order."""

    images: torch.Tensor
    """uint8 grey levels 0-255, shape [n, H, W]."""
    labels: torch.Tensor
    """int64 class labels, shape [n]."""
    name: str
    """Dataset name as ``load_dataset`` accepts it, e.g. "mnist-sample"."""
    split: str
    """"train", "test" or "all"."""
    description: str
    """One line saying where the data came from."""
    notice: str | None = None
    """One line for the user about how the data was chosen, such as a fallback, or None."""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 3:
            raise ValueError(
                f"images must be a uint8 tensor [n, H, W], got {self.images.dtype} {list(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(f"labels must be an int64 tensor [n], got {self.labels.dtype} {list(self.labels.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)


def as_float_batch(images: torch.Tensor) -> torch.Tensor:
    """Convert uint8 images [B, H, W] to float32 [B, 1, H, W] in [0, 1]."""
    return rearrange(images, "b h w -> b 1 h w").to(torch.float32) / 255.0


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not, into an array in native byte order.

    The file is treated as gzip when its name ends in ".gz" or it starts with the gzip
    magic bytes.

    Raises:
        IDXError: the file is a truncated or corrupt gzip stream, has a bad magic number,
            an unknown type code, or a body shorter or longer than its header declares.
    """
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz" or raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            raise IDXError(f"{path}: truncated or corrupt gzip data ({error})") from error

    if len(raw) < 4:
        raise IDXError(f"{path}: file has {len(raw)} bytes, too short for the 4-byte IDX magic number")
    magic = int.from_bytes(raw[:4], "big")
    type_code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or type_code not in IDX_DTYPES or ndim == 0:
        raise IDXError(
            f"{path}: bad IDX magic number 0x{magic:08x}; expected 0x0000TTDD with a known type "
            f"code TT (0x08 for uint8) and DD >= 1 dimensions, e.g. 0x00000803 for images"
        )

    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise IDXError(f"{path}: truncated header, expected {header_size} bytes for {ndim} dimensions, found {len(raw)}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))

    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_size
    if actual < expected:
        raise IDXError(f"{path}: truncated body, expected {expected} bytes for shape {shape}, found {actual}")
    if actual > expected:
        raise IDXError(f"{path}: {actual - expected} unexpected bytes after the {expected}-byte body for shape {shape}")

    array = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    # astype copies, so the result is writable and in native byte order.
    return array.astype(dtype.newbyteorder("="))


def _read_pair(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise IDXError(f"{images_path}: expected uint8 images [n, H, W], got {images.dtype} with shape {images.shape}")
    if labels.ndim != 1:
        raise IDXError(f"{labels_path}: expected labels with one dimension [n], got shape {labels.shape}")
    if len(images) != len(labels):
        raise IDXError(
            f"image and label counts differ: {len(images)} images in {images_path} "
            f"but {len(labels)} labels in {labels_path}"
        )
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def _find_idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _splits_to_read(split: str) -> tuple[str, ...]:
    return ("train", "test") if split == "all" else (split,)


def _missing_files(folder: Path, split: str) -> list[str]:
    return [
        f"{stem}[.gz]"
        for part in _splits_to_read(split)
        for stem in SPLIT_FILES[part]
        if _find_idx_file(folder, stem) is None
    ]


def _read_split_from_folder(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read the IDX files of ``split`` from ``folder``; "all" concatenates train then test."""
    image_parts, label_parts = [], []
    for part in _splits_to_read(split):
        images_stem, labels_stem = SPLIT_FILES[part]
        images, labels = _read_pair(_find_idx_file(folder, images_stem), _find_idx_file(folder, labels_stem))
        image_parts.append(images)
        label_parts.append(labels)
    return torch.cat(image_parts), torch.cat(label_parts)


def _load_sample(split: str) -> ImageData:
    images, labels = _read_pair(SAMPLE_IMAGES, SAMPLE_LABELS)
    if split == "train":
        images, labels = images[:SAMPLE_TRAIN_SIZE], labels[:SAMPLE_TRAIN_SIZE]
    elif split == "test":
        images, labels = images[SAMPLE_TRAIN_SIZE:], labels[SAMPLE_TRAIN_SIZE:]
    description = (
        f"bundled sample of 10,000 MNIST digits in {SAMPLE_DIR} "
        f"(first {SAMPLE_TRAIN_SIZE:,} are train, the rest test; provenance in PROVENANCE.md)"
    )
    return ImageData(images, labels, "mnist-sample", split, description)


def _download_mnist(root: Path, split: str) -> None:
    # Imported here so that the other sources work without loading torchvision.
    import torchvision

    for part in _splits_to_read(split):
        try:
            torchvision.datasets.MNIST(str(root), train=(part == "train"), download=True)
        except Exception as error:  # torchvision raises several types for network and file failures.
            raise DatasetError(
                f"downloading MNIST into {root} failed: {type(error).__name__}: {error}. "
                "Check your connection or use --dataset mnist-sample."
            ) from error


def _load_mnist(root: Path, split: str, download: bool) -> ImageData:
    # torchvision keeps the IDX files in root/MNIST/raw; a plain folder of IDX files also works.
    folders = (root / "MNIST" / "raw", root)
    for folder in folders:
        if not _missing_files(folder, split):
            images, labels = _read_split_from_folder(folder, split)
            return ImageData(images, labels, "mnist", split, f"MNIST IDX files in {folder}")

    if download:
        _download_mnist(root, split)
        raw_folder = root / "MNIST" / "raw"
        missing = _missing_files(raw_folder, split)
        if missing:
            raise DatasetError(f"torchvision reported success but {', '.join(missing)} is missing in {raw_folder}")
        images, labels = _read_split_from_folder(raw_folder, split)
        return ImageData(images, labels, "mnist", split, f"MNIST downloaded by torchvision into {raw_folder}")

    notice = (
        f"MNIST files not found under {root}; using the bundled sample of 10,000 MNIST digits. "
        "Pass --download to fetch the full 70,000."
    )
    logger.info(notice)
    data = _load_sample(split)
    data.notice = notice
    return data


def _load_idx_folder(spec: str, split: str) -> ImageData:
    folder = Path(spec)
    if not spec:
        raise DatasetError("dataset idx: needs a folder, e.g. idx:/usr/share/datasets/fashion-mnist")
    if not folder.is_dir():
        raise DatasetError(f"dataset idx:{spec}: folder not found")
    missing = _missing_files(folder, split)
    if missing:
        raise DatasetError(f"dataset idx:{spec}: missing {', '.join(missing)} for split {split!r}")
    images, labels = _read_split_from_folder(folder, split)
    return ImageData(images, labels, f"idx:{spec}", split, f"IDX files in {folder}")


def load_dataset(
    name: str = "mnist",
    root: str | Path | None = None,
    split: str = "train",
    limit: int | None = None,
    download: bool = False,
) -> ImageData:
    """Load a split of an image dataset; see the module docstring for the names.

    Args:
        name: "mnist", "mnist-sample" or "idx:PATH".
        root: folder for "mnist" files, "data" by default. Other sources ignore it.
        split: "train", "test", or "all" (train followed by test).
        limit: keep only the first ``limit`` samples of the split.
        download: for "mnist", let torchvision download missing files into ``root``.

    Raises:
        DatasetError: unknown name or split, limit below 1, missing files for "idx:",
            or a failed download.
        IDXError: a malformed IDX file.
    """
    if split not in SPLITS:
        raise DatasetError(f"invalid split {split!r}; valid splits: {', '.join(SPLITS)}")
    if limit is not None and limit <= 0:
        raise DatasetError(f"limit must be a positive number of samples, got {limit}")

    if name == "mnist":
        data = _load_mnist(Path(DEFAULT_ROOT if root is None else root), split, download)
    elif name == "mnist-sample":
        data = _load_sample(split)
    elif name.startswith("idx:"):
        data = _load_idx_folder(name[len("idx:") :], split)
    else:
        raise DatasetError(f"invalid dataset {name!r}; valid datasets: {DATASET_CHOICES}")

    if limit is not None:
        data.images = data.images[:limit]
        data.labels = data.labels[:limit]
    logger.info("loaded %d images of %s split %s: %s", len(data), data.name, split, data.description)
    return data
