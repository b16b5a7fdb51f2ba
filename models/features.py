"""Built-in image features: small-integer attributes computed from digit images.

Every feature works on the binarised image (grey level >= 128 of 255 is ink) and
gives one small integer per image. ``docs/observations.md`` describes each one.

Public names:
    FEATURE_NAMES      the features in their standard order
    Feature            one feature's values (n,), value names and description
    image_features     compute the chosen features for a batch of images [n, H, W]
    parse_feature_names  turn "all" or "loops,slant" into a tuple of feature names
    count_loops, stroke_directions, ink_fraction, slant, bounding_box   the measurements

Example::

    features = image_features(data.images, names=("loops", "stroke_vertical"))
    features["loops"].values        # (n,) int64: 0, 1 or 2 closed loops per image
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "FEATURE_NAMES",
    "Feature",
    "image_features",
    "parse_feature_names",
    "count_loops",
    "stroke_directions",
    "ink_fraction",
    "slant",
    "bounding_box",
]

INK_LEVEL = 128
STROKES = ("stroke_horizontal", "stroke_vertical", "stroke_rising", "stroke_falling")
FEATURE_NAMES = (*STROKES, "loops", "ink_mass", "slant", "width", "height")

# Loops: a background region of fewer pixels than this is binarisation noise, not a loop.
MIN_LOOP_PIXELS = 4
MAX_LOOPS = 2
PROPAGATION_STEPS = 8
# Strokes: a run of ink of at least this fraction of the image side, and at least
# MIN_STROKE_PIXELS such run centres, make a stroke in that direction.
STROKE_LENGTH_FRACTION = 0.25
MIN_STROKE_PIXELS = 3
# Bin edges, as fractions of the image area (ink) or side (width, height). They split
# the bundled MNIST sample into bins of comparable size.
INK_EDGES = (0.10, 0.13, 0.16)
WIDTH_EDGES = (0.40, 0.55, 0.65)
# MNIST digits are scaled to 20 pixels of 28, so most fall in the top height bin.
HEIGHT_EDGES = (0.66, 0.70)
# Slant: horizontal shift of the ink per unit of height (positive leans right).
SLANT_EDGES = (-0.05, 0.15, 0.3)


@dataclass
class Feature:
    """One feature of every image: small integers 0..len(value_names)-1."""

    name: str
    values: np.ndarray  # (n,) int64
    value_names: list[str]
    description: str


def parse_feature_names(text: str) -> tuple[str, ...]:
    """Parse "all" or a comma-separated list of feature names; raise ValueError for unknown names."""
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if items == ["all"]:
        return FEATURE_NAMES
    unknown = [item for item in items if item not in FEATURE_NAMES]
    if unknown or not items:
        shown = unknown[0] if unknown else text
        raise ValueError(f"unknown image feature {shown!r}; choose 'all' or a comma-separated list of {', '.join(FEATURE_NAMES)}")
    return tuple(dict.fromkeys(items))


def _binarise(images: torch.Tensor) -> torch.Tensor:
    """Return ink masks [n, H, W] (bool) from uint8 [n, H, W] or float [n, 1, H, W] in [0, 1]."""
    if images.dim() == 4:
        images = images[:, 0]
    if images.dtype == torch.uint8:
        return images >= INK_LEVEL
    return images >= INK_LEVEL / 255.0


def count_loops(ink: torch.Tensor, min_pixels: int = MIN_LOOP_PIXELS) -> torch.Tensor:
    """Count closed loops per image: background regions that do not touch the border.

    Background regions are 4-connected (ink is 8-connected), so a diagonal line of ink
    closes a loop. Regions of fewer than ``min_pixels`` pixels are not counted. All
    images are labelled together by propagating the largest pixel index through each
    region with a 4-neighbour max filter until nothing changes.
    """
    n, height, width = ink.shape
    # A frame of background around each image joins every border-touching region to it.
    background = F.pad(~ink, (1, 1, 1, 1), value=True)
    frame = torch.ones_like(background)
    frame[:, 1:-1, 1:-1] = False
    cells = (height + 2) * (width + 2)
    index = torch.arange(1, cells + 1, device=ink.device, dtype=torch.int32).reshape(height + 2, width + 2)
    outside = cells + 1
    labels = torch.where(frame, outside, index.expand(n, -1, -1))
    labels = torch.where(background, labels, torch.zeros_like(labels))

    # Propagate in rounds of a few steps; images that stopped changing leave the active set.
    active = torch.arange(n, device=ink.device)
    while active.numel():
        current, current_mask = labels[active], background[active]
        before = current
        for _ in range(PROPAGATION_STEPS):
            padded = F.pad(current, (1, 1, 1, 1))
            vertical = torch.maximum(padded[:, :-2, 1:-1], padded[:, 2:, 1:-1])
            horizontal = torch.maximum(padded[:, 1:-1, :-2], padded[:, 1:-1, 2:])
            neighbours = torch.maximum(torch.maximum(vertical, horizontal), current)
            current = torch.where(current_mask, neighbours, current)
        labels[active] = current
        changed = (current != before).flatten(1).any(dim=1)
        active = active[changed]
    labels = labels.long()

    # Each enclosed region keeps the index of its largest pixel; count those roots.
    image_index = torch.arange(n, device=ink.device).reshape(n, 1, 1)
    enclosed = background & (labels != outside)
    keys = image_index * (cells + 2) + labels
    sizes = torch.bincount(keys[enclosed], minlength=n * (cells + 2))
    roots = enclosed & (labels == index.long())
    large = sizes[keys[roots]] >= min_pixels
    return torch.bincount(torch.nonzero(roots)[:, 0][large], minlength=n)


def _line_kernels(length: int) -> torch.Tensor:
    """Return [4, 1, length, length] line kernels: horizontal, vertical, rising (/), falling (\\)."""
    kernels = torch.zeros(4, 1, length, length)
    middle = length // 2
    steps = torch.arange(length)
    kernels[0, 0, middle, :] = 1
    kernels[1, 0, :, middle] = 1
    kernels[2, 0, length - 1 - steps, steps] = 1
    kernels[3, 0, steps, steps] = 1
    return kernels


def stroke_directions(ink: torch.Tensor, length: int | None = None, min_pixels: int = MIN_STROKE_PIXELS) -> torch.Tensor:
    """Return [n, 4] (0/1): whether each image has a horizontal, vertical, rising (/) and falling (\\) stroke.

    An oriented line filter of ``length`` pixels (a quarter of the image side by
    default) marks pixels at the centre of a full run of ink in its direction. A
    pixel counts for a direction only when the same filter across it (perpendicular)
    covers at most half its length of ink, so the stroke is thinner than half its
    length and a filled blob is no stroke.
    """
    n, height, width = ink.shape
    if length is None:
        length = max(3, round(STROKE_LENGTH_FRACTION * min(height, width)))
    length += 1 - length % 2  # odd, so each run has a centre pixel
    kernels = _line_kernels(length).to(ink.device)
    response = F.conv2d(ink[:, None].float(), kernels, padding=length // 2)
    full = response >= length - 0.5  # [n, 4, H, W]
    across = response[:, [1, 0, 3, 2]]
    stroke = full & (across <= length // 2)
    return (stroke.sum(dim=(2, 3)) >= min_pixels).long()


def ink_fraction(ink: torch.Tensor) -> torch.Tensor:
    """Return the fraction of ink pixels of each image [n], float64."""
    return ink.double().mean(dim=(1, 2))


def slant(ink: torch.Tensor) -> torch.Tensor:
    """Return each image's slant [n], float64: horizontal shift of the ink per unit of height.

    From the second-order central moments: -mu11 / mu02 with y pointing down, so a
    digit whose top leans right is positive. An image without vertical extent gets 0.
    """
    n, height, width = ink.shape
    weights = ink.double()
    mass = weights.sum(dim=(1, 2)).clamp(min=1)
    ys = torch.arange(height, dtype=torch.float64, device=ink.device).reshape(1, height, 1)
    xs = torch.arange(width, dtype=torch.float64, device=ink.device).reshape(1, 1, width)
    mean_y = (weights * ys).sum(dim=(1, 2)) / mass
    mean_x = (weights * xs).sum(dim=(1, 2)) / mass
    dy = ys - mean_y.reshape(n, 1, 1)
    dx = xs - mean_x.reshape(n, 1, 1)
    mu11 = (weights * dx * dy).sum(dim=(1, 2))
    mu02 = (weights * dy * dy).sum(dim=(1, 2))
    return torch.where(mu02 > 0, -mu11 / mu02.clamp(min=1e-12), torch.zeros_like(mu02))


def bounding_box(ink: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the width and height in pixels [n] of each image's ink bounding box (0 when empty)."""
    n, height, width = ink.shape
    columns = ink.any(dim=1)  # [n, W]
    rows = ink.any(dim=2)  # [n, H]

    def extent(mask: torch.Tensor, size: int) -> torch.Tensor:
        position = torch.arange(size, device=mask.device).expand_as(mask)
        first = torch.where(mask, position, size).amin(dim=1)
        last = torch.where(mask, position, -1).amax(dim=1)
        return (last - first + 1).clamp(min=0)

    return extent(columns, width), extent(rows, height)


def _bins(values: torch.Tensor, edges: tuple[float, ...]) -> torch.Tensor:
    return torch.bucketize(values.double(), torch.tensor(edges, dtype=torch.float64, device=values.device), right=True)


def _range_names(edges: tuple[float, ...], unit: str, scale: float = 1.0) -> list[str]:
    bounds = [f"{edge * scale:g}{unit}" for edge in edges]
    return [f"<{bounds[0]}", *(f"{low}-{high}" for low, high in zip(bounds, bounds[1:])), f">={bounds[-1]}"]


def _compute(ink: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    height, width = ink.shape[1:]
    out: dict[str, torch.Tensor] = {}
    if any(name in STROKES for name in names):
        strokes = stroke_directions(ink)
        for index, name in enumerate(STROKES):
            out[name] = strokes[:, index]
    if "loops" in names:
        out["loops"] = count_loops(ink).clamp(max=MAX_LOOPS)
    if "ink_mass" in names:
        out["ink_mass"] = _bins(ink_fraction(ink), INK_EDGES)
    if "slant" in names:
        out["slant"] = _bins(slant(ink), SLANT_EDGES)
    if "width" in names or "height" in names:
        box_width, box_height = bounding_box(ink)
        out["width"] = _bins(box_width / width, WIDTH_EDGES)
        out["height"] = _bins(box_height / height, HEIGHT_EDGES)
    return {name: out[name] for name in names}


def _describe() -> dict[str, tuple[list[str], str]]:
    yes_no = ["no", "yes"]
    return {
        "stroke_horizontal": (yes_no, "a horizontal run of ink at least a quarter of the image wide"),
        "stroke_vertical": (yes_no, "a vertical run of ink at least a quarter of the image high"),
        "stroke_rising": (yes_no, "a diagonal run of ink from bottom left to top right (/)"),
        "stroke_falling": (yes_no, "a diagonal run of ink from top left to bottom right (\\)"),
        "loops": (["0", "1", f"{MAX_LOOPS}+"], "closed background regions not touching the border"),
        "ink_mass": (_range_names(INK_EDGES, "%", 100), "fraction of the image area that is ink"),
        "slant": (_range_names(SLANT_EDGES, ""), "horizontal shift of the ink per unit height (positive leans right)"),
        "width": (_range_names(WIDTH_EDGES, "%", 100), "bounding-box width of the ink, in % of the image width"),
        "height": (_range_names(HEIGHT_EDGES, "%", 100), "bounding-box height of the ink, in % of the image height"),
    }


def image_features(images: torch.Tensor, names=FEATURE_NAMES, batch_size: int = 4096) -> dict[str, Feature]:
    """Compute features of images [n, H, W] (uint8) or [n, 1, H, W] (float in [0, 1]).

    Returns name -> Feature in the order of ``names``; works batch by batch on the
    images' device.
    """
    names = tuple(names)
    unknown = [name for name in names if name not in FEATURE_NAMES]
    if unknown:
        raise ValueError(f"unknown image feature {unknown[0]!r}; choose from {', '.join(FEATURE_NAMES)}")
    images = torch.as_tensor(images)
    if images.dim() not in (3, 4) or (images.dim() == 4 and images.shape[1] != 1):
        raise ValueError(f"images must have shape [n, H, W] or [n, 1, H, W], got {list(images.shape)}")
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for start in range(0, images.shape[0], batch_size):
        ink = _binarise(images[start : start + batch_size])
        for name, values in _compute(ink, names).items():
            parts[name].append(values.cpu().long())
    described = _describe()
    features = {}
    for name in names:
        values = torch.cat(parts[name]) if parts[name] else torch.zeros(0, dtype=torch.int64)
        value_names, description = described[name]
        features[name] = Feature(name, values.numpy(), value_names, description)
    return features
