"""Image features on tiny hand-drawn images with known feature values, and on real digits."""

import numpy as np
import pytest
import torch

from models import load_dataset
from models.features import FEATURE_NAMES, count_loops, image_features, parse_feature_names

SIZE = 28


def blank():
    return np.zeros((SIZE, SIZE), dtype=np.uint8)


def ring(image, top, left, height, width, thickness=2):
    image[top : top + height, left : left + width] = 255
    image[top + thickness : top + height - thickness, left + thickness : left + width - thickness] = 0
    return image


def horizontal_bar(length=14):
    image = blank()
    image[13:15, 7 : 7 + length] = 255
    return image


def vertical_bar(length=14):
    image = blank()
    image[7 : 7 + length, 13:15] = 255
    return image


def rising_line(length=16):
    image = blank()
    for step in range(length):
        image[21 - step, 6 + step : 8 + step] = 255
    return image


def features_of(*images, names=FEATURE_NAMES):
    batch = torch.from_numpy(np.stack(images))
    return {name: feature.values.tolist() for name, feature in image_features(batch, names).items()}


def test_ring_has_one_loop():
    assert features_of(ring(blank(), 6, 8, 14, 12), names=("loops",))["loops"] == [1]


def test_stacked_rings_have_two_loops():
    eight = ring(blank(), 3, 8, 11, 12)
    ring(eight, 12, 8, 12, 12)

    assert features_of(eight, names=("loops",))["loops"] == [2]


def test_open_ring_has_no_loop():
    letter_c = ring(blank(), 6, 8, 14, 12)
    letter_c[10:16, 18:20] = 0

    assert features_of(letter_c, names=("loops",))["loops"] == [0]


def test_diamond_of_diagonal_steps_closes_loop():
    # The outline touches only at corners; background is 4-connected, so it cannot leak out.
    rows, columns = np.mgrid[0:SIZE, 0:SIZE]
    diamond = np.where(np.abs(rows - 14) + np.abs(columns - 14) == 6, 255, 0).astype(np.uint8)

    assert count_loops(torch.from_numpy(diamond[None] >= 128)).tolist() == [1]


def test_tiny_hole_is_not_a_loop():
    image = blank()
    image[10:14, 10:14] = 255
    image[11, 11] = 0

    assert features_of(image, names=("loops",))["loops"] == [0]


def test_loops_counted_per_image_in_batch():
    one = ring(blank(), 6, 8, 14, 12)
    two = ring(blank(), 3, 8, 11, 12)
    ring(two, 12, 8, 12, 12)

    assert features_of(two, blank(), one, horizontal_bar(), names=("loops",))["loops"] == [2, 0, 1, 0]


def test_horizontal_bar_strokes():
    values = features_of(horizontal_bar())

    assert values["stroke_horizontal"] == [1]
    assert values["stroke_vertical"] == [0]
    assert values["stroke_rising"] == [0]
    assert values["stroke_falling"] == [0]


def test_vertical_bar_strokes():
    values = features_of(vertical_bar())

    assert values["stroke_vertical"] == [1]
    assert values["stroke_horizontal"] == [0]


def test_rising_line_strokes():
    values = features_of(rising_line())

    assert values["stroke_rising"] == [1]
    assert values["stroke_falling"] == [0]
    assert values["stroke_vertical"] == [0]
    assert values["stroke_horizontal"] == [0]


def test_falling_line_strokes():
    values = features_of(np.ascontiguousarray(rising_line()[:, ::-1]))

    assert values["stroke_falling"] == [1]
    assert values["stroke_rising"] == [0]


def test_filled_square_is_no_stroke():
    image = blank()
    image[6:22, 6:22] = 255

    values = features_of(image)

    assert [values[name][0] for name in ("stroke_horizontal", "stroke_vertical", "stroke_rising", "stroke_falling")] == [0, 0, 0, 0]


def test_slant_bins():
    values = features_of(rising_line(), vertical_bar(), np.ascontiguousarray(rising_line()[:, ::-1]), names=("slant",))

    assert values["slant"] == [3, 1, 0]


def test_ink_mass_bins():
    light = blank()
    light[0:5, 0:10] = 255  # 50 of 784 pixels: 6%
    medium = blank()
    medium[0:10, 0:9] = 255  # 90 pixels: 11%
    heavy = blank()
    heavy[0:15, 0:10] = 255  # 150 pixels: 19%

    assert features_of(light, medium, heavy, names=("ink_mass",))["ink_mass"] == [0, 1, 3]


def test_width_and_height_bins():
    wide = horizontal_bar(length=20)  # 20 of 28 wide, 2 high
    narrow = vertical_bar(length=20)  # 2 wide, 20 high

    values = features_of(wide, narrow, names=("width", "height"))

    assert values["width"] == [3, 0]
    assert values["height"] == [0, 2]


def test_blank_image_is_all_zero():
    values = features_of(blank())

    assert all(values[name] == [0] for name in FEATURE_NAMES if name != "slant")
    assert values["slant"] == [1]


def test_float_images_match_uint8():
    image = ring(blank(), 6, 8, 14, 12)
    floats = torch.from_numpy(image[None, None].astype(np.float32) / 255.0)

    got = {name: feature.values.tolist() for name, feature in image_features(floats).items()}

    assert got == features_of(image)


def test_parse_feature_names():
    assert parse_feature_names("all") == FEATURE_NAMES
    assert parse_feature_names("loops, slant") == ("loops", "slant")
    with pytest.raises(ValueError, match="'holes'"):
        parse_feature_names("loops,holes")


def test_mnist_loops_follow_digits():
    data = load_dataset("mnist-sample", "data", "test", None, False)

    loops = image_features(data.images, names=("loops",))["loops"].values
    labels = data.labels.numpy()

    assert np.mean(loops[labels == 1] == 0) > 0.95
    assert np.mean(loops[labels == 0] == 1) > 0.7
    assert np.mean(loops[labels == 8] == 2) > 0.4
