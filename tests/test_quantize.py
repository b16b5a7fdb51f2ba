"""Quantisers and pooling on real tensors."""

import numpy as np
import pytest
import torch

from probe.quantize import (
    ArgmaxQuantizer,
    NonFiniteActivationError,
    QuantileQuantizer,
    check_finite,
    code_dtype,
    parse_spec,
    pool,
)


def test_argmax_gives_index_per_variable():
    one_hot = torch.zeros(2, 3, 26)
    one_hot[0, :, 5] = 1
    one_hot[1, 0, 25] = 1
    one_hot[1, 1, 0] = 1
    one_hot[1, 2, 13] = 1

    codes = ArgmaxQuantizer()(one_hot)

    assert codes.tolist() == [[5, 5, 5], [25, 0, 13]]


def test_quantile_two_splits_at_median():
    calibration = torch.arange(100, dtype=torch.float32).reshape(100, 1).repeat(1, 2)
    calibration[:, 1] *= -1
    quantizer = parse_spec("quantile:2")
    quantizer.fit(calibration)

    codes = quantizer(torch.tensor([[10.0, -10.0], [60.0, -60.0], [49.5, -49.5]]))

    # 49.5 and -49.5 are the medians themselves, so both stay in the lower bin.
    assert codes.tolist() == [[0, 1], [1, 0], [0, 0]]


def test_quantile_bins_are_equal_frequency():
    values = torch.randn(10_000, 3, generator=torch.Generator().manual_seed(0))
    quantizer = parse_spec("quantile:4")
    quantizer.fit(values)

    codes = quantizer(values)

    for unit in range(3):
        counts = torch.bincount(codes[:, unit], minlength=4)
        assert counts.tolist() == [2500, 2500, 2500, 2500]


def test_quantile_edges_match_numpy():
    values = torch.randn(999, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    quantizer = QuantileQuantizer(5)
    quantizer.fit(values)

    expected = np.quantile(values.numpy(), [0.2, 0.4, 0.6, 0.8], axis=0).T

    assert np.allclose(quantizer.edges(), expected, atol=1e-12)


def test_uniform_bins_over_range():
    quantizer = parse_spec("uniform:4")
    quantizer.fit(torch.tensor([[0.0], [8.0]]))

    codes = quantizer(torch.tensor([[0.0], [1.9], [2.1], [5.0], [8.0]]))

    assert codes.flatten().tolist() == [0, 0, 1, 2, 3]


def test_sign_quantizer():
    codes = parse_spec("sign")(torch.tensor([[-1.0, 0.0, 0.5]]))

    assert codes.tolist() == [[0, 0, 1]]


def test_unfitted_quantile_raises():
    with pytest.raises(RuntimeError, match="calibration"):
        parse_spec("quantile:3")(torch.zeros(2, 2))


@pytest.mark.parametrize("spec", ["quantile", "quantile:1", "quantile:x", "median", "uniform:0", ""])
def test_invalid_specs_rejected(spec):
    with pytest.raises(ValueError, match="quantile:B|invalid"):
        parse_spec(spec)


def test_pooling_shapes():
    maps = torch.randn(2, 8, 14, 14)

    assert pool(maps, "mean").shape == (2, 8)
    assert pool(maps, "max").shape == (2, 8)
    assert pool(maps, "none").shape == (2, 8, 14, 14)
    assert torch.allclose(pool(maps, "mean"), maps.mean(dim=(2, 3)))


def test_code_dtype_smallest_unsigned():
    assert code_dtype(2) == np.uint8
    assert code_dtype(256) == np.uint8
    assert code_dtype(257) == np.uint16
    assert code_dtype(70_000) == np.uint32


def test_nan_activation_names_layer_and_samples():
    activations = torch.zeros(4, 3)
    activations[2, 1] = float("nan")
    activations[3, 0] = float("inf")

    with pytest.raises(NonFiniteActivationError, match=r"'fc'.*2 sample\(s\) between index 102 and 103"):
        check_finite(activations, "fc", first_sample=100)
