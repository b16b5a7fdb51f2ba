"""Observations other than class labels: named per-sample attributes with integer values.

Public names:
    Attribute            one attribute: a name, one encoded value per sample, the value
                         each code stands for, and the names of string values
    ObservationError     a file or array that cannot be used as attributes
    encode_attribute     turn integers or strings into an Attribute
    make_attributes      turn a mapping of name -> values (or Attributes) into Attributes
    read_observations    read a CSV (named columns) or .npy (one column per attribute)
    MULTI_LABEL_SEPARATOR  ";"

Values are categories. Integers keep their values (``Attribute.values`` lists them,
sorted). Strings get the codes 0..k-1 in sorted order, and ``Attribute.value_names``
keeps the strings. A CSV column in which any cell contains ";" is multi-label: it
becomes one binary attribute per value, named ``<column>=<value>``, set (1) for the
samples whose cell lists that value. Bin continuous measurements before passing them.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Attribute", "ObservationError", "encode_attribute", "make_attributes", "read_observations", "MULTI_LABEL_SEPARATOR"]

MULTI_LABEL_SEPARATOR = ";"
# Attribute names become HDF5 group names, so they exclude "/" and leading dots.
_VALID_NAME = re.compile(r"^[^/.][^/]*$")


class ObservationError(ValueError):
    """Attribute data that cannot be used: wrong shape, row count, dtype or name."""


@dataclass
class Attribute:
    """A per-sample attribute with categorical values."""

    name: str
    encoded: np.ndarray  # (n,) int64 in 0..len(values)-1
    values: np.ndarray  # (k,) int64, the value behind each code, sorted
    value_names: list[str] = field(default_factory=list)  # names of the values when they were strings
    description: str = ""

    def __len__(self) -> int:
        return len(self.encoded)

    def value_name(self, value: int) -> str:
        """Return the display name of ``value``: its string when it had one, else the integer."""
        if self.value_names:
            return self.value_names[int(value)]
        return str(int(value))

    @property
    def raw(self) -> np.ndarray:
        """The value of each sample (n,), int64."""
        return self.values[self.encoded]


# Tables and summaries list the class labels under this name beside the attributes.
RESERVED_NAME = "label"


def check_name(name: str) -> str:
    """Return ``name`` when it can name an HDF5 group; raise ObservationError otherwise."""
    if not isinstance(name, str) or not _VALID_NAME.match(name):
        raise ObservationError(f"invalid attribute name {name!r}; use a non-empty name without '/' that does not start with '.'")
    if name == RESERVED_NAME:
        raise ObservationError(f"attribute name {name!r} is reserved for the class labels; rename the column")
    return name


def encode_attribute(name: str, data, description: str = "", value_names: list[str] | None = None) -> Attribute:
    """Encode integer or string values (n,) of one attribute.

    Floats are accepted when every value is an integer (as read from CSV or .npy);
    other floats raise ObservationError, because values are categories.
    """
    check_name(name)
    array = np.asarray(data)
    if array.ndim != 1:
        raise ObservationError(f"attribute {name!r} must have one value per sample, got shape {array.shape}")
    if array.dtype.kind == "b":
        array = array.astype(np.int64)
    if array.dtype.kind == "f":
        invalid = ~np.isfinite(array) | (array != np.round(array))
        if invalid.any():
            raise ObservationError(f"attribute {name!r} has non-integer value {array[invalid][0]}; bin continuous values into integers first")
        array = array.astype(np.int64)
    if array.dtype.kind in "iu":
        values, encoded = np.unique(array, return_inverse=True)
        return Attribute(name, encoded.astype(np.int64), values.astype(np.int64), list(value_names or []), description)
    if array.dtype.kind in "USO":
        strings = array.astype(str)
        names, encoded = np.unique(strings, return_inverse=True)
        return Attribute(name, encoded.astype(np.int64), np.arange(len(names), dtype=np.int64), [str(item) for item in names], description)
    raise ObservationError(f"attribute {name!r} has dtype {array.dtype}; pass integers or strings")


def _split_multi_label(name: str, cells: np.ndarray) -> list[Attribute]:
    """Split a ';'-separated column into one binary attribute per value."""
    lists = [[item.strip() for item in cell.split(MULTI_LABEL_SEPARATOR) if item.strip()] for cell in cells.tolist()]
    flat = np.array([item for items in lists for item in items], dtype=str)
    owner = np.repeat(np.arange(len(lists)), [len(items) for items in lists])
    values, value_index = np.unique(flat, return_inverse=True)
    member = np.zeros((len(values), len(cells)), dtype=np.int64)
    member[value_index, owner] = 1
    return [
        encode_attribute(f"{name}={value}", member[index], description=f"1 when column {name!r} lists {value!r}", value_names=None)
        for index, value in enumerate(values.tolist())
    ]


def make_attributes(observations, n_samples: int | None = None) -> list[Attribute]:
    """Return Attributes from a mapping name -> values (n,), or a sequence of Attributes.

    String arrays whose cells contain ";" are split like multi-label CSV columns.
    Raises ObservationError for a row count other than ``n_samples`` or a duplicate name.
    """
    if observations is None:
        return []
    if isinstance(observations, Mapping):
        attributes = []
        for name, data in observations.items():
            if isinstance(data, Attribute):
                attributes.append(data)
                continue
            array = np.asarray(data)
            if array.dtype.kind in "USO" and any(MULTI_LABEL_SEPARATOR in str(cell) for cell in array.ravel().tolist()):
                attributes.extend(_split_multi_label(check_name(str(name)), array.astype(str)))
            else:
                attributes.append(encode_attribute(str(name), array))
    else:
        attributes = list(observations)
        for item in attributes:
            if not isinstance(item, Attribute):
                raise ObservationError(f"observations must be a mapping of name -> values or a list of Attribute, got {type(item).__name__}")
    names = [attribute.name for attribute in attributes]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ObservationError(f"attribute {duplicates[0]!r} is given more than once; give each attribute a unique name")
    if n_samples is not None:
        for attribute in attributes:
            if len(attribute) != n_samples:
                raise ObservationError(f"attribute {attribute.name!r} has {len(attribute)} rows but there are {n_samples} samples; give one row per sample")
    return attributes


def _read_csv(path: Path) -> list[Attribute]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise ObservationError(f"{path} has no header row; the first row must name the columns")
    header = [cell.strip() for cell in rows[0]]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ObservationError(f"{path}: column {repeated[0]!r} appears more than once in the header; give each column a unique name")
    body = rows[1:]
    while body and not any(cell.strip() for cell in body[-1]):
        body.pop()  # trailing blank lines
    if len(header) == 1:
        # In a one-column file an empty line is an empty cell (no value, or no labels).
        body = [row or [""] for row in body]
    ragged = [index + 2 for index, row in enumerate(body) if len(row) != len(header)]
    if ragged:
        raise ObservationError(f"{path}: row {ragged[0]} has a different number of cells than the header ({len(header)})")
    table = np.array(body, dtype=str).reshape(len(body), len(header))
    observations = {}
    for column, name in enumerate(header):
        cells = np.char.strip(table[:, column])
        try:
            observations[name] = cells.astype(np.int64)
        except ValueError:
            observations[name] = cells
    return make_attributes(observations)


def _read_npy(path: Path) -> list[Attribute]:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise ObservationError(f"cannot read {path} as .npy ({error})") from None
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ObservationError(f"{path} must hold a 1-D or 2-D array (samples x attributes), got shape {array.shape}")
    return make_attributes({f"column_{index}": array[:, index] for index in range(array.shape[1])})


def read_observations(path: str | Path, n_samples: int | None = None) -> list[Attribute]:
    """Read attributes from a CSV file with a header row, or a .npy array [n] or [n, A].

    .npy columns are named ``column_0``, ``column_1`` ... Raises ObservationError for a
    missing file, an unknown suffix, bad contents, or a row count other than ``n_samples``.
    """
    path = Path(path)
    if not path.is_file():
        raise ObservationError(f"observations file {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        attributes = _read_csv(path)
    elif suffix == ".npy":
        attributes = _read_npy(path)
    else:
        raise ObservationError(f"observations file {path} must be .csv (with a header row) or .npy")
    if n_samples is not None and attributes and len(attributes[0]) != n_samples:
        raise ObservationError(f"observations file {path} has {len(attributes[0])} rows but the dataset has {n_samples} samples; give one row per sample, in dataset order")
    return make_attributes(attributes, n_samples)
