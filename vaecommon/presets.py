"""The one table of model presets, shared by `jaxvae.models` and `torchvae.models`.

Each preset names a model from the source notebooks (see README, "Presets"). The table holds
hyperparameters only; each framework builds its own modules from a `ModelSpec`, so the two
twins cannot drift apart on a layer size or a default. Framework-free (NumPy only).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ModelSpec", "PRESETS", "get_spec", "list_models", "flatten_size_glasses"]


@dataclass(frozen=True)
class ModelSpec:
    """Hyperparameters of one model preset (framework independent).

    Attributes:
      name: preset name, identical in both packages.
      family: which module class builds it (one class per family in each framework).
      source: where the architecture comes from.
      kind: "vae" (encoder outputs mean and log-variance) or "ae" (deterministic code).
      input_shape: (C, H, W) of one example, in PyTorch order.
      latent_dim: size of z (or of the AE code).
      hidden: hidden layer widths, family specific (documented per family in the README).
      output: what `decode` returns, as the source does: "probs" (sigmoid applied) or "logits".
        `decode_logits` always returns the pre-sigmoid values; `generate` always returns [0, 1].
      likelihood: default reconstruction term (name in `losses.RECONSTRUCTION`).
      objective: default objective (name in `losses.OBJECTIVES`).
      reparam: "logvar" (z = mean + exp(logvar/2) * eps, the correct form) or
        "logvar_as_scale" (z = mean + logvar * eps, the leaky_vae notebook's quirk, kept as an
        option for faithful reproduction only).
      negative_slope: LeakyReLU slope for the leaky families.
      lr, batch_size, epochs, weight_decay: the source's training settings.
      binarization: the source's data treatment ("none", "static", "dynamic").
      params: parameter count of the default build (pinned by tests in both frameworks).
    """

    name: str
    family: str
    source: str
    kind: str
    input_shape: tuple[int, int, int]
    latent_dim: int
    hidden: tuple[int, ...]
    output: str
    likelihood: str
    objective: str = "elbo"
    reparam: str = "logvar"
    negative_slope: float = 0.0
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 10
    weight_decay: float = 0.0
    binarization: str = "none"
    params: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def input_dim(self) -> int:
        c, h, w = self.input_shape
        return c * h * w

    @property
    def is_vae(self) -> bool:
        return self.kind == "vae"


def flatten_size_glasses(image_size: int) -> tuple[int, int]:
    """Spatial size and flatten size after the glasses encoder's conv stack.

    conv1/conv2 (k3 s2 p1): n -> floor((n - 1) / 2) + 1; conv3 (k3 s2 p0): n -> floor((n - 3) / 2) + 1.
    For 256 this gives 31 (31*31*32 = 30752 features), as in the book.
    """
    n = image_size
    n = (n + 2 - 3) // 2 + 1
    n = (n + 2 - 3) // 2 + 1
    n = (n - 3) // 2 + 1
    return n, n * n * 32


_MNIST = (1, 28, 28)

PRESETS: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        ModelSpec(
            name="pytorch_examples", family="mlp_vae", source="pytorch/examples vae/main.py",
            kind="vae", input_shape=_MNIST, latent_dim=20, hidden=(400,), output="probs",
            likelihood="bce_probs", lr=1e-3, batch_size=128, epochs=10,
        ),
        ModelSpec(
            name="flax_examples", family="flax_vae", source="google/flax examples/vae",
            kind="vae", input_shape=_MNIST, latent_dim=20, hidden=(500,), output="logits",
            likelihood="bernoulli", lr=1e-3, batch_size=128, epochs=30, binarization="static",
        ),
        ModelSpec(
            name="pytorch_mnist_vae", family="lyeoni_vae", source="lyeoni/pytorch-mnist-VAE",
            kind="vae", input_shape=_MNIST, latent_dim=2, hidden=(512, 256), output="probs",
            likelihood="bce_probs", lr=1e-3, batch_size=100, epochs=50,
        ),
        ModelSpec(
            name="leaky_vae", family="leaky_vae",
            source='"VAE for MNIST" notebook (first example of the comparison notes)',
            kind="vae", input_shape=_MNIST, latent_dim=2, hidden=(400, 200), output="probs",
            likelihood="bce_probs", negative_slope=0.2, lr=1e-3, batch_size=100, epochs=50,
        ),
        ModelSpec(
            name="leaky_vae_256", family="leaky_vae_256", source="the follow-up notebook",
            kind="vae", input_shape=_MNIST, latent_dim=2, hidden=(256, 2), output="logits",
            likelihood="bernoulli", negative_slope=0.2, lr=1e-3, batch_size=100, epochs=50,
        ),
        ModelSpec(
            name="manning_ae", family="manning_ae",
            source="Learn Generative AI with PyTorch (Manning 2024), ch. 7 AE",
            kind="ae", input_shape=_MNIST, latent_dim=20, hidden=(200,), output="probs",
            likelihood="mse_sum", objective="reconstruction", lr=2.5e-4, batch_size=32, epochs=10,
        ),
        ModelSpec(
            name="manning_glasses_vae", family="glasses_vae",
            source="Learn Generative AI with PyTorch (Manning 2024), ch. 7 glasses VAE",
            kind="vae", input_shape=(3, 256, 256), latent_dim=100, hidden=(1024,), output="probs",
            likelihood="mse_sum", objective="elbo", lr=1e-4, batch_size=16, epochs=10,
            weight_decay=1e-5,
        ),
        ModelSpec(
            name="simple_ae", family="simple_ae", source="teaching notebook SimpleAutoencoder",
            kind="ae", input_shape=_MNIST, latent_dim=32, hidden=(128,), output="probs",
            likelihood="mse_mean", objective="reconstruction", lr=1e-3, batch_size=128, epochs=5,
        ),
        ModelSpec(
            name="simple_vae", family="simple_vae", source="teaching notebook SimpleVAE",
            kind="vae", input_shape=_MNIST, latent_dim=32, hidden=(512, 256), output="probs",
            likelihood="bce_probs", lr=1e-3, batch_size=128, epochs=10,
        ),
        ModelSpec(
            name="conv_vae", family="conv_vae",
            source="teaching notebook's convolutional VAE (designed here)",
            kind="vae", input_shape=_MNIST, latent_dim=16, hidden=(32, 64), output="logits",
            likelihood="bernoulli", lr=1e-3, batch_size=128, epochs=10,
        ),
        ModelSpec(
            name="resnet_vae", family="resnet_vae",
            source='follow-up notebook idea: "squeeze a ResNet structure inside"',
            kind="vae", input_shape=_MNIST, latent_dim=16, hidden=(32, 64), output="logits",
            likelihood="bernoulli", lr=1e-3, batch_size=128, epochs=10,
        ),
    ]
}

# Overrides a user may pass to build_model(name, **overrides); anything else is refused with the
# list of valid keys, so a typo cannot silently build the default model.
OVERRIDABLE = ("latent_dim", "hidden", "reparam", "negative_slope", "input_shape", "image_size")


def list_models() -> list[str]:
    """Names of all presets, in table order."""
    return list(PRESETS)


def get_spec(name: str, **overrides: Any) -> ModelSpec:
    """The spec of preset `name` with `overrides` applied.

    `image_size=N` is shorthand for input_shape=(C, N, N) (the glasses VAE at 64 px for CPU demos).
    `params` of an overridden spec is set to 0 (unknown until built).

    Raises:
      KeyError: unknown preset (the message lists the valid names).
      TypeError: unknown override key (the message lists the valid keys).
      ValueError: an invalid override value.
    """
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; valid presets: {', '.join(PRESETS)}")
    spec = PRESETS[name]
    bad = [k for k in overrides if k not in OVERRIDABLE]
    if bad:
        raise TypeError(
            f"unknown override(s) {bad} for preset {name!r}; valid overrides: {', '.join(OVERRIDABLE)}"
        )
    if not overrides:
        return spec
    ov = dict(overrides)
    if "image_size" in ov:
        size = int(ov.pop("image_size"))
        ov["input_shape"] = (spec.input_shape[0], size, size)
    if "hidden" in ov:
        ov["hidden"] = tuple(int(h) for h in ov["hidden"])
    if "input_shape" in ov:
        ov["input_shape"] = tuple(int(v) for v in ov["input_shape"])
    if "reparam" in ov and ov["reparam"] not in ("logvar", "logvar_as_scale"):
        raise ValueError(f"reparam must be 'logvar' or 'logvar_as_scale', got {ov['reparam']!r}")
    if "latent_dim" in ov and int(ov["latent_dim"]) < 1:
        raise ValueError(f"latent_dim must be >= 1, got {ov['latent_dim']}")
    if spec.family == "glasses_vae" and "input_shape" in ov:
        n, _ = flatten_size_glasses(ov["input_shape"][1])
        if n < 1:
            raise ValueError(f"image_size {ov['input_shape'][1]} is too small for the glasses VAE")
    new = dataclasses.replace(spec, **ov)
    return dataclasses.replace(new, params=0) if new != spec else spec
