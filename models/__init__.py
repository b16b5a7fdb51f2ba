"""Reference model, data and training code for probe.

- CategoricalVAE: categorical VAE with N x K Gumbel-Softmax latents (default 3 x 26).
- Encoder: convolutional encoder from 28x28 images to logits [B, N, K].
- Latent: bottleneck that samples one-hot codes in training and takes the argmax in eval.
- Decoder: decoder from one-hot codes [B, N, K] to pixel logits [B, 1, 28, 28].
- VAEOutput: named tuple (reconstruction_logits, logits, code) that the VAE returns.
- ELBOTerms: named tuple (reconstruction, kl) of negative ELBO terms in nats per image.
- elbo_terms: compute ELBOTerms for a batch and a VAEOutput.
- gumbel_softmax: relaxed or straight-through one-hot sample from logits.
- kl_to_uniform: KL from categorical posteriors to the uniform prior, per sample.
- ARCHITECTURE: name of the layer layout, stored in checkpoints.
- ImageData: images, labels and where they came from.
- load_dataset: load mnist, mnist-sample or idx:PATH data by split.
- read_idx: read one IDX file into a numpy array.
- as_float_batch: convert uint8 images [B, H, W] to float32 [B, 1, H, W] in [0, 1].
- DatasetError, IDXError: errors for unloadable data and malformed IDX files.
- save_checkpoint, load_checkpoint, load_state_into: write and read model checkpoints.
- CheckpointError: error for missing, invalid or mismatched checkpoints.
- TrainConfig: settings of a training run. The loop itself is ``models.train.train``,
  not exported here because the name ``models.train`` is the training module.
- temperature_at: Gumbel-Softmax temperature schedule.
- resolve_device: turn "auto", "cpu" or "cuda" into a torch.device.
- TrainConfigError, DeviceError: errors for invalid training settings and devices.
"""

from models.checkpoint import CheckpointError, load_checkpoint, load_state_into, save_checkpoint
from models.data import DatasetError, IDXError, ImageData, as_float_batch, load_dataset, read_idx
from models.vae import (
    ARCHITECTURE,
    CategoricalVAE,
    Decoder,
    ELBOTerms,
    Encoder,
    Latent,
    VAEOutput,
    elbo_terms,
    gumbel_softmax,
    kl_to_uniform,
)

# models.train is imported on first use, so that `python -m models.train` does not find it
# already imported (runpy warns about that) and importing models stays light.
_TRAIN_NAMES = ("DeviceError", "TrainConfig", "TrainConfigError", "resolve_device", "temperature_at")


def __getattr__(name: str):
    if name in _TRAIN_NAMES:
        import models.train

        return getattr(models.train, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_TRAIN_NAMES))


__all__ = [
    "ARCHITECTURE",
    "CategoricalVAE",
    "CheckpointError",
    "DatasetError",
    "Decoder",
    "DeviceError",
    "ELBOTerms",
    "Encoder",
    "IDXError",
    "ImageData",
    "Latent",
    "TrainConfig",
    "TrainConfigError",
    "VAEOutput",
    "as_float_batch",
    "elbo_terms",
    "gumbel_softmax",
    "kl_to_uniform",
    "load_checkpoint",
    "load_dataset",
    "load_state_into",
    "read_idx",
    "resolve_device",
    "save_checkpoint",
    "temperature_at",
]
