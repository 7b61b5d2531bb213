"""The one table of model presets, shared by `jaxvae.models` and `torchvae.models`.

Each preset names a model from the source notebooks (see README, "Presets"). The table holds
hyperparameters only; each framework builds its own modules from a `ModelSpec`, so the two
twins cannot drift apart on a layer size or a default. Framework-free (NumPy only).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ModelSpec", "PRESETS", "PRIORS", "get_spec", "list_models", "flatten_size_glasses",
    "feature_shape", "HIDDEN_LEN",
]


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
      hidden: hidden layer widths, family specific (`HIDDEN_LEN` gives the length per family):
        pytorch_examples (H,): 784-H-latent; flax_examples (H,); pytorch_mnist_vae (H1, H2); leaky_vae (H1, H2):
        encoder 784-H1-H2, heads H2->latent; leaky_vae_256 (H, z_space): the follow-up
        notebook's hidden_size and z_space_size; manning_ae (H,); manning_glasses_vae (H,): width of
        linear1 / decoder_lin.0; simple_ae (H,); simple_vae (H, H2) with H2 = H // 2 in the
        source; conv_vae / resnet_vae (C1, C2): channels of the two stride-2 conv stages;
        burgess_vae (C, F): channels of its four stride-2 convs and width of its dense layers.
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
      params: trainable parameter count of the default build (BatchNorm running statistics
        are buffers, not counted); pinned by tests in both frameworks. The arithmetic is
        written out next to each preset below.
      prior: "standard" (N(0, I)) or "vampprior" (Tomczak & Welling 2018: the mixture
        (1/K) sum_k q(z | u_k) over K learned pseudo-inputs u_k, passed through the encoder).
      pseudo_inputs: K, the number of VampPrior pseudo-inputs (500 as in the VampPrior paper).
      optimizer: the source's optimizer ("adam", or "adam_norm_grad" for the VampPrior code's
        Adam on per-tensor normalised gradients); TrainConfig.optimizer None takes it.
      kl_warmup_epochs: the source's linear KL warm-up in epochs (0: none).
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
    prior: str = "standard"
    pseudo_inputs: int = 500
    optimizer: str = "adam"
    kl_warmup_epochs: int = 0

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
    For 256 this gives 31 (31*31*32 = 30752 features), as in the book. The decoder maps n back
    to 8n + 8, so only image sizes that are multiples of 8 round-trip (`get_spec` checks).
    """
    n = image_size
    n = (n + 2 - 3) // 2 + 1
    n = (n + 2 - 3) // 2 + 1
    n = (n - 3) // 2 + 1
    return n, n * n * 32


def feature_shape(spec: "ModelSpec") -> tuple[int, int, int] | None:
    """(C, H, W) at the conv <-> linear boundary of a conv family, None for MLP families.

    This is the shape PyTorch flattens (C, H, W order) before the first Linear of the encoder and
    unflattens after the last Linear of the decoder; NHWC flattens the same features in (H, W, C)
    order, which `jaxvae.convert` accounts for by permuting that Linear's rows/columns.
    """
    if spec.family == "manning_glasses_vae":
        n, _ = flatten_size_glasses(spec.input_shape[1])
        return (32, n, n)
    if spec.family in ("conv_vae", "resnet_vae"):
        _, h, w = spec.input_shape
        return (spec.hidden[-1], h // 4, w // 4)
    if spec.family == "burgess_vae":
        _, h, w = spec.input_shape
        return (spec.hidden[0], h // 16, w // 16)
    return None


# Length of `hidden` per family (overrides of another length are refused).
HIDDEN_LEN = {
    "pytorch_examples": 1, "flax_examples": 1, "pytorch_mnist_vae": 2, "leaky_vae": 2, "leaky_vae_256": 2,
    "manning_ae": 1, "manning_glasses_vae": 1, "simple_ae": 1, "simple_vae": 2, "conv_vae": 2,
    "resnet_vae": 2, "exemplar_vae": 1, "burgess_vae": 2,
}

_MNIST = (1, 28, 28)

# Parameter counts (weights + biases; Linear(i, o) has i*o + o, Conv(ci, co, k) co*ci*k*k + co,
# ConvTranspose(ci, co, k) ci*co*k*k + co, BatchNorm(c) 2c trainable):
#   pytorch_examples   fc1 784*400+400=314000, fc21 400*20+20=8020, fc22 8020,
#                      fc3 20*400+400=8400, fc4 400*784+784=314384            -> 652824
#   flax_examples      enc fc1 784*500+500=392500, fc2_mean 500*20+20=10020, fc2_logvar 10020,
#                      dec fc1 20*500+500=10500, fc2 500*784+784=392784        -> 815824
#   pytorch_mnist_vae  fc1 784*512+512=401920, fc2 512*256+256=131328, fc31 256*2+2=514,
#                      fc32 514, fc4 2*256+256=768, fc5 256*512+512=131584,
#                      fc6 512*784+784=402192                                  -> 1068820
#   leaky_vae          enc.0 784*400+400=314000, enc.2 400*200+200=80200, mean 200*2+2=402,
#                      logvar 402, dec.0 2*200+200=600, dec.2 200*400+400=80400,
#                      dec.4 400*784+784=314384                                -> 790388
#   leaky_vae_256      enc.0 784*256+256=200960, enc.2 256*2+2=514, mean 2*2+2=6, logvar 6,
#                      dec.0 2*2+2=6, dec.2 2*256+256=768, dec.4 256*784+784=201488 -> 403748
#   manning_ae         common 784*200+200=157000, encoded 200*20+20=4020, l1 20*200+200=4200,
#                      decode 200*784+784=157584                               -> 322804
#   manning_glasses_vae (256 px; flatten 31*31*32=30752)
#                      encoder: conv1 8*3*9+8=224, conv2 16*8*9+16=1168, batch2 2*16=32,
#                      conv3 32*16*9+32=4640, linear1 30752*1024+1024=31491072,
#                      linear2 1024*100+100=102500, linear3 102500        -> 31702136
#                      decoder: decoder_lin.0 100*1024+1024=103424,
#                      decoder_lin.2 1024*30752+30752=31520800, decoder_conv.0 32*16*9+16=4624,
#                      .1 BN 32, .3 16*8*9+8=1160, .4 BN 16, .6 8*3*9+3=219 -> 31630275
#                                                                              -> 63332411
#                      (at image_size=64: flatten 7*7*32=1568, linear1 1606656,
#                      decoder_lin.2 1607200 -> 3534395)
#   simple_ae          enc.0 784*128+128=100480, enc.2 128*32+32=4128, dec.0 32*128+128=4224,
#                      dec.2 128*784+784=101136                                -> 209968
#   simple_vae         enc.0 784*512+512=401920, enc.2 512*256+256=131328,
#                      fc_mean 256*32+32=8224, fc_logvar 8224, dec.0 32*256+256=8448,
#                      dec.2 256*512+512=131584, dec.4 512*784+784=402192      -> 1091920
#   conv_vae           encoder.0 32*1*16+32=544, encoder.2 64*32*16+64=32832,
#                      fc_mean 3136*16+16=50192, fc_logvar 50192, decoder_fc 16*3136+3136=53312,
#                      decoder.0 64*32*16+32=32800, decoder.2 32*1*16+1=513   -> 220385
#   resnet_vae         conv_vae's layers (220385) + four ResBlocks (two 3x3 convs without bias
#                      + two BatchNorms each): ResBlock(32) 2*32*32*9+2*2*32=18560,
#                      ResBlock(64) 2*64*64*9+2*2*64=73984; 220385+2*18560+2*73984 -> 405473
#   exemplar_vae       gated layers h and g each: q_z_layers.0 2*(784*300+300)=471000,
#                      q_z_layers.1 2*(300*300+300)=180600, q_z_mean 300*40+40=12040,
#                      q_z_logvar.linear 12040, p_x_layers.0 2*(40*300+300)=24600,
#                      p_x_layers.1 180600, p_x_mean.linear 300*784+784=235984      -> 1116864
#                      (VampPrior: + means.linear 784*K, 392000 for K = 500)
#   burgess_vae        encoder.0 32*1*16+32=544, encoder.2/4/6 3*(32*32*16+32)=49248,
#                      encoder_fc.0 512*256+256=131328, encoder_fc.2 256*256+256=65792,
#                      fc_mean 256*10+10=2570, fc_logvar 2570, decoder_fc.0 10*256+256=2816,
#                      decoder_fc.2 65792, decoder_fc.4 256*512+512=131584,
#                      decoder.0/2/4 3*(32*32*16+32)=49248, decoder.6 32*1*16+1=513 -> 502005

PRESETS: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        ModelSpec(
            name="pytorch_examples", family="pytorch_examples", source="pytorch/examples vae/main.py",
            kind="vae", input_shape=_MNIST, latent_dim=20, hidden=(400,), output="probs",
            likelihood="bce_probs", lr=1e-3, batch_size=128, epochs=10, params=652824,
        ),
        ModelSpec(
            name="flax_examples", family="flax_examples", source="google/flax examples/vae",
            kind="vae", input_shape=_MNIST, latent_dim=20, hidden=(500,), output="logits",
            likelihood="bernoulli", lr=1e-3, batch_size=128, epochs=10, binarization="static",
            params=815824,
        ),
        ModelSpec(
            name="pytorch_mnist_vae", family="pytorch_mnist_vae", source="lyeoni/pytorch-mnist-VAE",
            kind="vae", input_shape=_MNIST, latent_dim=2, hidden=(512, 256), output="probs",
            likelihood="bce_probs", lr=1e-3, batch_size=100, epochs=50,
            params=1068820,
        ),
        ModelSpec(
            name="leaky_vae", family="leaky_vae",
            source='"VAE for MNIST" notebook (first example of the comparison notes)',
            kind="vae", input_shape=_MNIST, latent_dim=2, hidden=(400, 200), output="probs",
            likelihood="bce_probs", negative_slope=0.2, lr=1e-3, batch_size=100, epochs=50,
            params=790388,
        ),
        ModelSpec(
            name="leaky_vae_256", family="leaky_vae_256", source="the follow-up notebook",
            kind="vae", input_shape=_MNIST, latent_dim=2, hidden=(256, 2), output="logits",
            likelihood="bernoulli", negative_slope=0.2, lr=1e-3, batch_size=100, epochs=50,
            params=403748,
        ),
        ModelSpec(
            name="manning_ae", family="manning_ae",
            source="Learn Generative AI with PyTorch (Manning 2024), ch. 7 AE",
            kind="ae", input_shape=_MNIST, latent_dim=20, hidden=(200,), output="probs",
            likelihood="mse_sum", objective="reconstruction", lr=2.5e-4, batch_size=32, epochs=10,
            params=322804,
        ),
        ModelSpec(
            name="manning_glasses_vae", family="manning_glasses_vae",
            source="Learn Generative AI with PyTorch (Manning 2024), ch. 7 glasses VAE",
            kind="vae", input_shape=(3, 256, 256), latent_dim=100, hidden=(1024,), output="probs",
            likelihood="mse_sum", objective="elbo", lr=1e-4, batch_size=16, epochs=10,
            weight_decay=1e-5,
            params=63332411,
        ),
        ModelSpec(
            name="simple_ae", family="simple_ae", source="teaching notebook SimpleAutoencoder",
            kind="ae", input_shape=_MNIST, latent_dim=32, hidden=(128,), output="probs",
            likelihood="mse_mean", objective="reconstruction", lr=1e-3, batch_size=128, epochs=5,
            params=209968,
        ),
        ModelSpec(
            name="simple_vae", family="simple_vae", source="teaching notebook SimpleVAE",
            kind="vae", input_shape=_MNIST, latent_dim=32, hidden=(512, 256), output="probs",
            likelihood="bce_probs", lr=1e-3, batch_size=128, epochs=10,
            params=1091920,
        ),
        ModelSpec(
            name="conv_vae", family="conv_vae",
            source="teaching notebook's convolutional VAE (designed here)",
            kind="vae", input_shape=_MNIST, latent_dim=16, hidden=(32, 64), output="logits",
            likelihood="bernoulli", lr=1e-3, batch_size=128, epochs=10,
            params=220385,
        ),
        ModelSpec(
            name="resnet_vae", family="resnet_vae",
            source='follow-up notebook idea: "squeeze a ResNet structure inside"',
            kind="vae", input_shape=_MNIST, latent_dim=16, hidden=(32, 64), output="logits",
            likelihood="bernoulli", lr=1e-3, batch_size=128, epochs=10,
            params=405473,
        ),
        ModelSpec(
            name="exemplar_vae", family="exemplar_vae",
            source="sajadn/Exemplar-VAE models/VAE.py (from jmtomczak/vae_vampprior)",
            kind="vae", input_shape=_MNIST, latent_dim=40, hidden=(300,), output="probs",
            likelihood="bernoulli", objective="elbo", lr=5e-4, batch_size=100, epochs=2000,
            binarization="dynamic", optimizer="adam_norm_grad", kl_warmup_epochs=100,
            params=1116864,
        ),
        ModelSpec(
            name="burgess_vae", family="burgess_vae",
            source='Burgess et al. 2018, "Understanding disentangling in beta-VAE", appendix A.1',
            kind="vae", input_shape=(1, 64, 64), latent_dim=10, hidden=(32, 256), output="logits",
            likelihood="bernoulli", lr=5e-4, batch_size=64, epochs=10,
            params=502005,
        ),
    ]
}

# Overrides a user may pass to build_model(name, **overrides); anything else is refused with the
# list of valid keys, so a typo cannot silently build the default model.
OVERRIDABLE = ("latent_dim", "hidden", "reparam", "negative_slope", "input_shape", "image_size",
               "prior", "pseudo_inputs")
PRIORS = ("standard", "vampprior")


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
    if "prior" in ov and ov["prior"] not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {ov['prior']!r}")
    if ov.get("prior") == "vampprior" and (spec.kind != "vae" or spec.family == "resnet_vae"):
        raise ValueError(f"the VampPrior needs a VAE without BatchNorm (its pseudo-inputs pass "
                         f"through the encoder); preset {name!r} is not one")
    if "pseudo_inputs" in ov and int(ov["pseudo_inputs"]) < 1:
        raise ValueError(f"pseudo_inputs must be >= 1, got {ov['pseudo_inputs']}")
    if "latent_dim" in ov and int(ov["latent_dim"]) < 1:
        raise ValueError(f"latent_dim must be >= 1, got {ov['latent_dim']}")
    if "hidden" in ov and len(ov["hidden"]) != HIDDEN_LEN[spec.family]:
        raise ValueError(
            f"hidden for preset {name!r} (family {spec.family}) has {HIDDEN_LEN[spec.family]} "
            f"entries, got {ov['hidden']}"
        )
    if "hidden" in ov and min(ov["hidden"]) < 1:
        raise ValueError(f"hidden widths must be >= 1, got {ov['hidden']}")
    if "input_shape" in ov:
        if len(ov["input_shape"]) != 3 or min(ov["input_shape"]) < 1:
            raise ValueError(f"input_shape must be (C, H, W) with sizes >= 1, got {ov['input_shape']}")
        c, h, w = ov["input_shape"]
        if spec.family == "manning_glasses_vae":
            # conv1/conv2/conv3 take n to m - 1 and the decoder takes m - 1 back to 8m only for
            # n = 8m, so other sizes would decode to a different size than they encode.
            if h != w or h % 8 or h < 16:
                raise ValueError(
                    f"the glasses VAE needs a square image_size that is a multiple of 8 and >= 16 "
                    f"(its decoder maps the 3-conv encoder's output back to 8k pixels), got {h}x{w}"
                )
        elif spec.family in ("conv_vae", "resnet_vae"):
            if h % 4 or w % 4 or h < 4 or w < 4:
                raise ValueError(
                    f"{spec.family} halves the image twice and doubles it back; height and width "
                    f"must be multiples of 4, got {h}x{w}"
                )
        elif spec.family == "burgess_vae":
            if h % 16 or w % 16 or h < 16 or w < 16:
                raise ValueError(
                    f"{spec.family} halves the image four times and doubles it back; height and "
                    f"width must be multiples of 16, got {h}x{w}"
                )
    new = dataclasses.replace(spec, **ov)
    return dataclasses.replace(new, params=0) if new != spec else spec
