"""Tests for IDX reading and dataset loading, on the bundled MNIST digits."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from models.data import (
    SAMPLE_IMAGES,
    SAMPLE_LABELS,
    DatasetError,
    IDXError,
    as_float_batch,
    load_dataset,
    read_idx,
)

SAMPLE_CLASS_COUNTS = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write a uint8 array as an IDX file, gzip-compressed when the name ends in .gz."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", size) for size in array.shape)
    content = header + array.tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        content = gzip.compress(content)
    path.write_bytes(content)
    return path


def write_mnist_folder(folder: Path, images: np.ndarray, labels: np.ndarray, train_size: int, gz: bool) -> Path:
    """Write train and t10k IDX files with MNIST's names into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", images[:train_size])
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", labels[:train_size])
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", images[train_size:])
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", labels[train_size:])
    return folder


@pytest.fixture(scope="module")
def sample_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The first 600 bundled images and labels as numpy arrays."""
    return read_idx(SAMPLE_IMAGES)[:600], read_idx(SAMPLE_LABELS)[:600]


def test_sample_all_class_counts():
    data = load_dataset("mnist-sample", split="all")

    assert len(data) == 10_000
    assert data.images.shape == (10_000, 28, 28)
    assert data.images.dtype == torch.uint8
    assert data.labels.dtype == torch.int64
    assert torch.bincount(data.labels).tolist() == SAMPLE_CLASS_COUNTS
    assert data.name == "mnist-sample"
    assert data.notice is None


def test_sample_splits_partition_all():
    everything = load_dataset("mnist-sample", split="all")
    train = load_dataset("mnist-sample", split="train")
    test = load_dataset("mnist-sample", split="test")

    assert (len(train), len(test)) == (9_000, 1_000)
    assert torch.equal(torch.cat([train.images, test.images]), everything.images)
    assert torch.equal(torch.cat([train.labels, test.labels]), everything.labels)


def test_sample_limit_takes_prefix():
    train = load_dataset("mnist-sample", split="train")
    limited = load_dataset("mnist-sample", split="train", limit=25)

    assert len(limited) == 25
    assert torch.equal(limited.images, train.images[:25])


@pytest.mark.parametrize("limit", [0, -3])
def test_limit_must_be_positive(limit):
    with pytest.raises(DatasetError, match=str(limit)):
        load_dataset("mnist-sample", limit=limit)


def test_invalid_split_names_choices():
    with pytest.raises(DatasetError, match="'validation'.*train, test, all"):
        load_dataset("mnist-sample", split="validation")


def test_invalid_dataset_names_choices():
    with pytest.raises(DatasetError, match="'cifar10'.*mnist, mnist-sample, idx:PATH"):
        load_dataset("cifar10")


def test_as_float_batch_range_and_shape():
    images = torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8)

    batch = as_float_batch(images)

    assert batch.shape == (1, 1, 2, 2)
    assert batch.dtype == torch.float32
    assert batch.flatten().tolist() == pytest.approx([0.0, 1.0, 0.2, 0.4])


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_torchvision_layout(tmp_path, sample_arrays, gz):
    images, labels = sample_arrays
    write_mnist_folder(tmp_path / "MNIST" / "raw", images, labels, train_size=500, gz=gz)

    train = load_dataset("mnist", root=tmp_path, split="train")
    test = load_dataset("mnist", root=tmp_path, split="test")
    everything = load_dataset("mnist", root=tmp_path, split="all")

    assert train.name == "mnist"
    assert train.notice is None
    assert (len(train), len(test), len(everything)) == (500, 100, 600)
    assert np.array_equal(everything.images.numpy(), images)
    assert np.array_equal(test.labels.numpy(), labels[500:])


def test_mnist_files_directly_in_root(tmp_path, sample_arrays):
    images, labels = sample_arrays
    write_mnist_folder(tmp_path, images, labels, train_size=500, gz=True)

    data = load_dataset("mnist", root=tmp_path, split="train", limit=10)

    assert data.name == "mnist"
    assert np.array_equal(data.images.numpy(), images[:10])


def test_mnist_missing_files_falls_back(tmp_path):
    data = load_dataset("mnist", root=tmp_path / "empty", split="test")

    assert data.name == "mnist-sample"
    assert len(data) == 1_000
    assert data.notice is not None
    assert str(tmp_path / "empty") in data.notice
    assert "bundled sample of 10,000 MNIST digits" in data.notice
    assert "--download" in data.notice
    assert "\n" not in data.notice


def test_mnist_download_failure_raises(tmp_path, monkeypatch):
    import torchvision

    class OfflineMNIST:
        def __init__(self, root, train=True, download=False):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", OfflineMNIST)

    with pytest.raises(DatasetError) as error:
        load_dataset("mnist", root=tmp_path, download=True)

    message = str(error.value)
    assert "downloading MNIST" in message
    assert str(tmp_path) in message
    assert "Error downloading train-images" in message
    assert "--dataset mnist-sample" in message


def test_mnist_download_success_reads_raw(tmp_path, monkeypatch, sample_arrays):
    import torchvision

    images, labels = sample_arrays
    calls = []

    class LocalMNIST:
        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            write_mnist_folder(Path(root) / "MNIST" / "raw", images, labels, train_size=500, gz=False)

    monkeypatch.setattr(torchvision.datasets, "MNIST", LocalMNIST)

    data = load_dataset("mnist", root=tmp_path, split="test", download=True)

    assert calls == [(str(tmp_path), False, True)]
    assert data.name == "mnist"
    assert np.array_equal(data.labels.numpy(), labels[500:])


def test_idx_folder(tmp_path, sample_arrays):
    images, labels = sample_arrays
    write_mnist_folder(tmp_path, images, labels, train_size=450, gz=False)

    data = load_dataset(f"idx:{tmp_path}", split="all")

    assert data.name == f"idx:{tmp_path}"
    assert len(data) == 600
    assert np.array_equal(data.labels.numpy(), labels)


def test_idx_folder_missing_files(tmp_path, sample_arrays):
    images, labels = sample_arrays
    write_mnist_folder(tmp_path, images, labels, train_size=450, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()

    assert len(load_dataset(f"idx:{tmp_path}", split="train")) == 450
    with pytest.raises(DatasetError, match=r"missing t10k-labels-idx1-ubyte\[\.gz\]"):
        load_dataset(f"idx:{tmp_path}", split="test")


def test_idx_folder_not_found(tmp_path):
    with pytest.raises(DatasetError, match="folder not found"):
        load_dataset(f"idx:{tmp_path / 'absent'}")


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Debian package dataset-fashion-mnist is not installed")
def test_idx_fashion_mnist():
    data = load_dataset(f"idx:{FASHION_MNIST}", split="test")

    assert data.images.shape == (10_000, 28, 28)
    assert torch.bincount(data.labels).tolist() == [1_000] * 10


def test_read_idx_gzip_detected_by_magic(tmp_path, sample_arrays):
    images, _ = sample_arrays
    path = write_idx(tmp_path / "images.idx", images[:3], compress=True)

    assert np.array_equal(read_idx(path), images[:3])


def test_read_idx_big_endian_int32(tmp_path):
    values = np.array([[1, -2, 70_000]], dtype=">i4")
    path = tmp_path / "values.idx"
    path.write_bytes(bytes([0, 0, 0x0C, 2]) + struct.pack(">II", 1, 3) + values.tobytes())

    result = read_idx(path)

    assert result.tolist() == [[1, -2, 70_000]]
    assert result.dtype.isnative


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "labels.idx"
    path.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 2) + b"\x01\x02")

    with pytest.raises(IDXError, match=r"labels\.idx.*bad IDX magic number 0x12340801"):
        read_idx(path)


def test_read_idx_unknown_type_code(tmp_path):
    path = tmp_path / "labels.idx"
    path.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"\x01\x02")

    with pytest.raises(IDXError, match="0x00000701"):
        read_idx(path)


def test_read_idx_truncated_body(tmp_path, sample_arrays):
    images, _ = sample_arrays
    path = write_idx(tmp_path / "images.idx", images[:2])
    path.write_bytes(path.read_bytes()[:-100])

    with pytest.raises(IDXError, match=r"images\.idx: truncated body, expected 1568 bytes .* found 1468"):
        read_idx(path)


def test_read_idx_extra_bytes(tmp_path):
    path = tmp_path / "labels.idx"
    path.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"\x01\x02\x03")

    with pytest.raises(IDXError, match="1 unexpected bytes"):
        read_idx(path)


def test_read_idx_truncated_header(tmp_path):
    path = tmp_path / "images.idx"
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">I", 2))

    with pytest.raises(IDXError, match="truncated header"):
        read_idx(path)


def test_read_idx_truncated_gzip(tmp_path, sample_arrays):
    images, _ = sample_arrays
    path = write_idx(tmp_path / "images-idx3-ubyte.gz", images[:50])
    path.write_bytes(path.read_bytes()[:-200])

    with pytest.raises(IDXError, match=r"images-idx3-ubyte\.gz: truncated or corrupt gzip"):
        read_idx(path)


def test_idx_error_is_dataset_and_value_error():
    assert issubclass(IDXError, DatasetError)
    assert issubclass(DatasetError, ValueError)


def test_image_and_label_counts_differ(tmp_path, sample_arrays):
    images, labels = sample_arrays
    write_mnist_folder(tmp_path, images, labels, train_size=500, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels[:499])

    with pytest.raises(IDXError) as error:
        load_dataset(f"idx:{tmp_path}", split="train")

    message = str(error.value)
    assert "500 images" in message
    assert "499 labels" in message
    assert "train-images-idx3-ubyte" in message
    assert "train-labels-idx1-ubyte" in message
