"""Tests for the categorical VAE, the Gumbel-Softmax sampler and the KL term."""

import math

import pytest
import torch

from models import CategoricalVAE, Decoder, Encoder, Latent, gumbel_softmax, kl_to_uniform
from models.data import as_float_batch, load_dataset
from models.vae import elbo_terms


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """Eight real MNIST digits as float32 [8, 1, 28, 28]."""
    return as_float_batch(load_dataset("mnist-sample", split="test", limit=8).images)


@pytest.mark.parametrize("draw", [0.0, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_gumbel_softmax_finite_at_uniform_extremes(monkeypatch, draw, dtype):
    def constant_rand(shape, *, generator=None, dtype=None, device=None):
        return torch.full(tuple(shape), draw, dtype=dtype, device=device)

    monkeypatch.setattr(torch, "rand", constant_rand)
    logits = torch.tensor([[0.0, 1.0, -2.0, 30.0]], dtype=dtype)

    soft = gumbel_softmax(logits, 0.5)
    hard = gumbel_softmax(logits, 0.5, hard=True)

    assert torch.isfinite(soft).all()
    assert torch.isfinite(hard).all()
    assert torch.allclose(soft.sum(-1).double(), torch.ones(1, dtype=torch.float64), atol=1e-3)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_gumbel_softmax_rejects_bad_temperature(temperature):
    with pytest.raises(ValueError, match=str(temperature)):
        gumbel_softmax(torch.zeros(2, 3), temperature)


def test_gumbel_softmax_hard_is_exact_one_hot():
    logits = torch.randn(64, 5, 26, generator=torch.Generator().manual_seed(1))

    sample = gumbel_softmax(logits, 0.7, hard=True, generator=torch.Generator().manual_seed(2))

    assert set(sample.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(sample.sum(-1), torch.ones(64, 5))


def test_gumbel_softmax_hard_has_soft_gradient():
    base = torch.randn(4, 3, 6, generator=torch.Generator().manual_seed(3))
    weights = torch.randn(4, 3, 6, generator=torch.Generator().manual_seed(4))

    soft_logits = base.clone().requires_grad_()
    soft = gumbel_softmax(soft_logits, 0.5, generator=torch.Generator().manual_seed(5))
    (soft * weights).sum().backward()

    hard_logits = base.clone().requires_grad_()
    hard = gumbel_softmax(hard_logits, 0.5, hard=True, generator=torch.Generator().manual_seed(5))
    (hard * weights).sum().backward()

    assert torch.equal(hard, torch.nn.functional.one_hot(soft.argmax(-1), 6).float())
    assert torch.allclose(hard_logits.grad, soft_logits.grad, atol=1e-6)
    assert soft_logits.grad.abs().sum() > 0


def test_gumbel_softmax_generator_reproducible():
    logits = torch.zeros(10, 26)

    first = gumbel_softmax(logits, 1.0, generator=torch.Generator().manual_seed(7))
    second = gumbel_softmax(logits, 1.0, generator=torch.Generator().manual_seed(7))

    assert torch.equal(first, second)


def test_kl_zero_for_uniform_logits():
    for value in (0.0, 3.7, -120.0):
        logits = torch.full((5, 3, 26), value)
        assert torch.equal(kl_to_uniform(logits), torch.zeros(5))


def test_kl_near_one_hot_is_n_log_k():
    latents, categories = 3, 26
    logits = torch.zeros(2, latents, categories)
    logits[:, :, 4] = 50.0

    kl = kl_to_uniform(logits)

    assert kl.shape == (2,)
    assert torch.allclose(kl, torch.full((2,), latents * math.log(categories)), atol=1e-4)


def test_kl_matches_log_softmax_formula():
    logits = torch.randn(6, 4, 10, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    log_q = torch.log_softmax(logits, -1)
    expected = (log_q.exp() * log_q).sum((-2, -1)) + 4 * math.log(10)

    assert torch.allclose(kl_to_uniform(logits), expected, atol=1e-12)
    assert (kl_to_uniform(logits) >= 0).all()


def test_kl_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"\[B, N, K\]"):
        kl_to_uniform(torch.zeros(3, 26))


def test_encoder_layer_shapes(digits):
    encoder = Encoder(latents=3, categories=26).eval()
    recorded = {}
    for name in ("conv1", "conv2", "bn2", "conv3", "fc", "logits"):
        module = getattr(encoder, name)
        module.register_forward_hook(lambda _module, _inputs, output, name=name: recorded.__setitem__(name, output.shape))

    logits = encoder(digits)

    assert recorded["conv1"] == (8, 8, 14, 14)
    assert recorded["conv2"] == (8, 16, 7, 7)
    assert recorded["bn2"] == (8, 16, 7, 7)
    assert recorded["conv3"] == (8, 32, 4, 4)
    assert recorded["fc"] == (8, 128)
    assert recorded["logits"] == (8, 78)
    assert logits.shape == (8, 3, 26)


def test_model_module_names_unique():
    model = CategoricalVAE()
    names = [name for name, _ in model.named_modules() if name]
    short_names = [name.rsplit(".", 1)[-1] for name in names]

    for expected in ("encoder.conv1", "encoder.conv2", "encoder.bn2", "encoder.conv3", "encoder.fc", "encoder.logits", "latent"):
        assert expected in names
    assert len(short_names) == len(set(short_names))


def test_model_forward_shapes_and_config(digits):
    model = CategoricalVAE(latents=4, categories=10).eval()

    output = model(digits)

    assert output.reconstruction_logits.shape == (8, 1, 28, 28)
    assert output.logits.shape == (8, 4, 10)
    assert output.code.shape == (8, 4, 10)
    assert model.config == {"latents": 4, "categories": 10, "architecture": "conv3-fc128"}
    assert model.decode(output.code).shape == (8, 1, 28, 28)


def test_default_model_is_3_by_26():
    model = CategoricalVAE()

    assert (model.latents, model.categories) == (3, 26)
    assert model.encoder.logits.out_features == 78


def test_decoder_output_shape():
    code = torch.nn.functional.one_hot(torch.tensor([[0, 5, 25], [1, 2, 3]]), 26).float()

    assert Decoder(3, 26).eval()(code).shape == (2, 1, 28, 28)


def test_latent_eval_is_argmax_one_hot():
    logits = torch.randn(32, 3, 26, generator=torch.Generator().manual_seed(9))
    latent = Latent().eval()

    first = latent(logits)
    second = latent(logits)

    assert torch.equal(first, torch.nn.functional.one_hot(logits.argmax(-1), 26).float())
    assert torch.equal(first, second)


def test_latent_stochastic_eval_varies():
    torch.manual_seed(0)
    logits = torch.zeros(32, 3, 26)
    latent = Latent(stochastic_eval=True).eval()

    first = latent(logits)
    second = latent(logits)

    assert torch.equal(first.sum(-1), torch.ones(32, 3))
    assert not torch.equal(first, second)


def test_latent_training_uses_temperature():
    latent = Latent(temperature=0.5).train()
    latent.temperature = 0.0
    with pytest.raises(ValueError, match="temperature"):
        latent(torch.zeros(1, 3, 26))


def test_elbo_terms_units(digits):
    model = CategoricalVAE().eval()
    output = model(digits)

    terms = elbo_terms(digits, output)

    per_image = torch.nn.functional.binary_cross_entropy_with_logits(
        output.reconstruction_logits, digits, reduction="sum"
    ) / len(digits)
    assert torch.allclose(terms.reconstruction, per_image)
    assert torch.allclose(terms.kl, kl_to_uniform(output.logits).mean())
    assert torch.allclose(terms.total, terms.reconstruction + terms.kl)
    # An untrained decoder outputs logits near 0, so BCE is near 784 * log 2 nats.
    assert 300 < terms.reconstruction.item() < 1500


def test_activations_not_in_place(digits):
    model = CategoricalVAE().eval()
    recorded = {}
    for name in ("conv1", "conv3", "fc"):
        module = getattr(model.encoder, name)
        module.register_forward_hook(lambda _module, _inputs, output, name=name: recorded.__setitem__(name, output))

    model(digits)

    # A ReLU applied in place would have zeroed the negative pre-activations.
    for name, output in recorded.items():
        assert (output < 0).any(), name
