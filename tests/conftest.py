"""Shared fixtures: a small trained categorical VAE on the bundled MNIST digits."""

import pytest

from models.train import TrainConfig, train


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """Path of a 3 x 26 categorical VAE trained for a few steps on the bundled sample."""
    folder = tmp_path_factory.mktemp("checkpoint")
    config = TrainConfig(dataset="mnist-sample", steps=150, batch_size=100, seed=0, device="cpu", out=str(folder))
    train(config, progress=False)
    return folder / "model.pt"
