"""Every model preset as a PyTorch module. Twin: `jaxvae/models.py` (same class and method names).

Each class reproduces the source class of its preset (see `vaecommon.presets`): the same
parameter names, shapes and registration order, so the notebooks' own `state_dict`s load with
`strict=True`, and `build_model(name, generator=g)` with `g.manual_seed(s)` gives the same
weights as `torch.manual_seed(s); SourceClass()`. What differs from the sources, on purpose:
no device in constructors, no global RNG (noise comes in as `eps` or from a `torch.Generator`),
and the decoders expose their pre-sigmoid output as `decode_logits`.

Model contract (same in both packages):
  `encode(x) -> (mean, logvar)` (AE: `(code, None)`), `decode_logits(z)`, `decode(z)` (the
  source's output: sigmoid for "probs" presets), `generate(z) = sigmoid(decode_logits(z))`,
  `reparameterize(mean, logvar, eps)`, `forward(x, *, eps=None, generator=None) -> ModelOutput`,
  `sample(n, generator=None)` -> images in [0, 1], NCHW.

Layout: inputs are NCHW `(B, C, H, W)` images (MLP models also take flat `(B, 784)`); conv
decoders return NCHW images, MLP decoders flat `(B, 784)` (the JAX twin: NHWC).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from torchvae import losses
from vaecommon import presets
from vaecommon.presets import ModelSpec

__all__ = [
    "ModelOutput", "BatchNorm", "ResBlock", "AutoencoderBase", "PytorchExamplesVAE", "FlaxExamplesEncoder", "FlaxExamplesDecoder",
    "FlaxExamplesVAE", "PytorchMnistVAE", "LeakyVAE", "ManningAE", "SimpleAE", "SimpleVAE", "ManningGlassesEncoder",
    "ManningGlassesDecoder", "ManningGlassesVAE", "ConvVAE", "BurgessVAE", "NonLinear", "GatedDense",
    "ExemplarVAE",
    "FAMILIES", "build_model", "list_models",
    "num_params",
]

INITS = ("default", "torch")


class ModelOutput(NamedTuple):
    """What a model's forward pass returns (same fields in both packages).

    Attributes:
      logits: decoder output before the sigmoid; (B, 784) for MLP models, (B, C, H, W) for conv.
      mean: (B, D) posterior mean (AE: the code).
      logvar: (B, D) posterior log-variance (AE: None).
      z: (B, D) the latent that was decoded (AE: the code).
    """

    logits: torch.Tensor
    mean: torch.Tensor
    logvar: torch.Tensor | None
    z: torch.Tensor


# ---- layers ------------------------------------------------------------------------------------

def _check_init(init: str) -> None:
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")


# torch.nn.BatchNorm2d is the reference the JAX twin's custom BatchNorm reproduces (momentum 0.1,
# eps 1e-5, running_var updated with the unbiased batch variance, num_batches_tracked).
BatchNorm = nn.BatchNorm2d


class ResBlock(nn.Module):
    """relu(x + bn2(conv2(relu(bn1(conv1(x)))))) with 3x3 stride-1 convs without bias (ResNet basic block)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = BatchNorm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = BatchNorm(channels)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(h)))


# ---- the model contract --------------------------------------------------------------------------

class AutoencoderBase(nn.Module):
    """Shared methods; subclasses define `encode` and `decode_logits` (and `spec`)."""

    spec: ModelSpec

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, C, H, W) or (B, 784) -> (mean, logvar), each (B, D); AE: (code, None)."""
        raise NotImplementedError

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D) -> pre-sigmoid output: (B, 784) for MLP models, (B, C, H, W) for conv models."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The source's decoder output: sigmoid(logits) for "probs" presets, logits otherwise."""
        logits = self.decode_logits(z)
        return torch.sigmoid(logits) if self.spec.output == "probs" else logits

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """sigmoid(decode_logits(z)), in [0, 1], same shape as `decode_logits`."""
        return torch.sigmoid(self.decode_logits(z))

    def reparameterize(self, mean: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """z = mean + exp(logvar / 2) * eps; with spec.reparam == "logvar_as_scale" the
        leaky_vae notebook's quirk z = mean + logvar * eps (reproduction only)."""
        if self.spec.reparam == "logvar_as_scale":
            return mean + logvar * eps
        return mean + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor, *, eps: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> ModelOutput:
        """Encode, reparameterize with `eps` (or eps ~ N(0, I) drawn from `generator`), decode.

        Args:
          x: (B, C, H, W) images (MLP models: also (B, 784)).
          eps: (B, D) standard normal noise; wins over `generator`.
          generator: torch.Generator used when `eps` is None (VAEs need one of the two; AEs neither).
        Returns:
          ModelOutput(logits, mean, logvar, z); AE: logvar None, z = mean = code.
        """
        mean, logvar = self.encode(x)
        if not self.spec.is_vae:
            return ModelOutput(self.decode_logits(mean), mean, None, mean)
        if eps is None:
            if generator is None:
                raise ValueError("a VAE forward pass needs `eps` or `generator` (no global RNG)")
            eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        z = self.reparameterize(mean, logvar, eps)
        return ModelOutput(self.decode_logits(z), mean, logvar, z)

    def prior_components(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The VampPrior's components: (means, logvars), each (K, D), of q(z | u_k) for the K
        pseudo-inputs u_k = hardtanh_[0,1](means.linear.weight.T) (the reference feeds an identity
        matrix through a bias-free Linear; its output is the weight, transposed)."""
        u = self.means.linear.weight.T.clamp(0.0, 1.0)  # (K, C*H*W)
        return self.encode(self._image(u))

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) summed over latent dimensions; z (..., D) -> (...). The standard normal, or
        the VampPrior mixture (1/K) sum_k N(z; mean_k, exp(logvar_k)) (`losses.log_mixture`)."""
        if self.spec.prior == "vampprior":
            return losses.log_mixture(z, *self.prior_components())
        return losses.log_standard_normal(z)

    def sample_prior(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, D) draws from the prior (VampPrior: a uniformly chosen component each)."""
        p = next(self.parameters())
        eps = torch.randn((n, self.spec.latent_dim), generator=generator, dtype=p.dtype,
                          device=p.device)
        if self.spec.prior != "vampprior":
            return eps
        means, logvars = self.prior_components()
        idx = torch.randint(0, means.shape[0], (n,), generator=generator, device=p.device)
        return means[idx] + torch.exp(0.5 * logvars[idx]) * eps

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images generated from z drawn from the prior: (n, C, H, W) in [0, 1].

        `generator=None` draws from a fresh generator seeded from OS entropy (not torch's global
        RNG, so nothing else's random stream moves); pass one for reproducible samples.
        BatchNorm models should be in eval mode (`model.eval()`).
        """
        p = next(self.parameters())
        if generator is None:
            generator = torch.Generator(device=p.device)
            generator.seed()
        z = (torch.randn((n, self.spec.latent_dim), generator=generator, dtype=p.dtype,
                         device=p.device)
             if self.spec.prior == "standard" else self.sample_prior(n, generator))
        c, h, w = self.spec.input_shape
        return self.generate(z).reshape(n, c, h, w)  # NCHW (JAX twin: NHWC)

    # helpers
    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, C*H*W); for C = 1 the same order as the JAX twin's NHWC flatten
        return x.reshape(x.shape[0], -1)

    def _image(self, x: torch.Tensor) -> torch.Tensor:
        c, h, w = self.spec.input_shape
        return x.reshape(x.shape[0], c, h, w) if x.dim() == 2 else x  # NCHW


def _logit_layers(seq: nn.Sequential) -> nn.Sequential:
    """The Sequential without a final Sigmoid (the pre-sigmoid part of a source decoder)."""
    return seq[:-1] if isinstance(seq[-1], nn.Sigmoid) else seq


# ---- MLP families ---------------------------------------------------------------------------------

class PytorchExamplesVAE(AutoencoderBase):
    """pytorch/examples VAE: fc1 -> relu -> (fc21, fc22); fc3 -> relu -> fc4 (-> sigmoid)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        d, (h,), k = spec.input_dim, spec.hidden, spec.latent_dim
        self.fc1 = nn.Linear(d, h)
        self.fc21 = nn.Linear(h, k)
        self.fc22 = nn.Linear(h, k)
        self.fc3 = nn.Linear(k, h)
        self.fc4 = nn.Linear(h, d)

    def encode(self, x):
        h1 = F.relu(self.fc1(self._flat(x)))
        return self.fc21(h1), self.fc22(h1)

    def decode_logits(self, z):
        return self.fc4(F.relu(self.fc3(z)))


class FlaxExamplesEncoder(nn.Module):
    """google/flax examples/vae Encoder: fc1 -> relu -> (fc2_mean, fc2_logvar)."""

    def __init__(self, din: int, hidden: int, latents: int):
        super().__init__()
        self.fc1 = nn.Linear(din, hidden)
        self.fc2_mean = nn.Linear(hidden, latents)
        self.fc2_logvar = nn.Linear(hidden, latents)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        return self.fc2_mean(h), self.fc2_logvar(h)


class FlaxExamplesDecoder(nn.Module):
    """google/flax examples/vae Decoder: fc1 -> relu -> fc2 (logits)."""

    def __init__(self, latents: int, hidden: int, dout: int):
        super().__init__()
        self.fc1 = nn.Linear(latents, hidden)
        self.fc2 = nn.Linear(hidden, dout)

    def forward(self, z):
        return self.fc2(F.relu(self.fc1(z)))


class FlaxExamplesVAE(AutoencoderBase):
    """google/flax examples/vae: encoder (FlaxExamplesEncoder), decoder (FlaxExamplesDecoder); logits output."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        d, (h,), k = spec.input_dim, spec.hidden, spec.latent_dim
        self.encoder = FlaxExamplesEncoder(d, h, k)
        self.decoder = FlaxExamplesDecoder(k, h, d)

    def encode(self, x):
        return self.encoder(self._flat(x))

    def decode_logits(self, z):
        return self.decoder(z)


class PytorchMnistVAE(AutoencoderBase):
    """lyeoni/pytorch-mnist-VAE: fc1, fc2 (relu) -> (fc31, fc32); fc4, fc5 (relu) -> fc6 (-> sigmoid)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        d, (h1, h2), k = spec.input_dim, spec.hidden, spec.latent_dim
        self.fc1 = nn.Linear(d, h1)
        self.fc2 = nn.Linear(h1, h2)
        self.fc31 = nn.Linear(h2, k)
        self.fc32 = nn.Linear(h2, k)
        self.fc4 = nn.Linear(k, h2)
        self.fc5 = nn.Linear(h2, h1)
        self.fc6 = nn.Linear(h1, d)

    def encode(self, x):
        h = F.relu(self.fc1(self._flat(x)))
        h = F.relu(self.fc2(h))
        return self.fc31(h), self.fc32(h)

    def decode_logits(self, z):
        h = F.relu(self.fc4(z))
        h = F.relu(self.fc5(h))
        return self.fc6(h)


class LeakyVAE(AutoencoderBase):
    """leaky_vae and leaky_vae_256: encoder Sequential(Linear, LeakyReLU, Linear, LeakyReLU),
    heads mean_layer / logvar_layer, decoder Sequential(Linear, LeakyReLU, Linear, LeakyReLU,
    Linear) (+ Sigmoid at index 5 when spec.output == "probs")."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        d, (h1, h2), k, s = spec.input_dim, spec.hidden, spec.latent_dim, spec.negative_slope
        self.encoder = nn.Sequential(
            nn.Linear(d, h1), nn.LeakyReLU(s),
            nn.Linear(h1, h2), nn.LeakyReLU(s),
        )
        self.mean_layer = nn.Linear(h2, k)
        self.logvar_layer = nn.Linear(h2, k)
        dec: list[nn.Module] = [
            nn.Linear(k, h2), nn.LeakyReLU(s),
            nn.Linear(h2, h1), nn.LeakyReLU(s),
            nn.Linear(h1, d),
        ]
        if spec.output == "probs":
            dec.append(nn.Sigmoid())
        self.decoder = nn.Sequential(*dec)

    def encode(self, x):
        h = self.encoder(self._flat(x))
        return self.mean_layer(h), self.logvar_layer(h)

    def decode_logits(self, z):
        return _logit_layers(self.decoder)(z)


class ManningAE(AutoencoderBase):
    """The Manning book's AE: common -> relu -> encoded (code); l1 -> relu -> decode (-> sigmoid).

    The source names its output Linear `decode`, which would clash with the contract's `decode()`
    method: the Linear is registered under that name (so `decode.weight` is in the state_dict)
    and reached through `self._modules["decode"]`; `model.decode` is the method. (The JAX twin
    calls the layer `decode_layer`; `jaxvae.convert` holds the rename.)
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        d, (h,), k = spec.input_dim, spec.hidden, spec.latent_dim
        self.common = nn.Linear(d, h)
        self.encoded = nn.Linear(h, k)
        self.l1 = nn.Linear(k, h)
        # nn.Module.__setattr__ puts it in _modules; the class method still wins attribute lookup
        self.decode = nn.Linear(h, d)

    def encode(self, x):
        return self.encoded(F.relu(self.common(self._flat(x)))), None

    def decode_logits(self, z):
        return self._modules["decode"](F.relu(self.l1(z)))


class SimpleAE(AutoencoderBase):
    """Teaching notebook SimpleAutoencoder: encoder Sequential(Linear, ReLU, Linear, ReLU) (the
    code is ReLU'd, as in the source), decoder Sequential(Linear, ReLU, Linear, Sigmoid)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        d, (h,), k = spec.input_dim, spec.hidden, spec.latent_dim
        self.encoder = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, k), nn.ReLU())
        self.decoder = nn.Sequential(nn.Linear(k, h), nn.ReLU(), nn.Linear(h, d), nn.Sigmoid())

    def encode(self, x):
        return self.encoder(self._flat(x)), None

    def decode_logits(self, z):
        return _logit_layers(self.decoder)(z)


class SimpleVAE(AutoencoderBase):
    """Teaching notebook SimpleVAE: encoder Sequential(Linear, ReLU, Linear, ReLU), fc_mean,
    fc_logvar, decoder Sequential(Linear, ReLU, Linear, ReLU, Linear, Sigmoid)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        d, (h1, h2), k = spec.input_dim, spec.hidden, spec.latent_dim
        self.encoder = nn.Sequential(nn.Linear(d, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU())
        self.fc_mean = nn.Linear(h2, k)
        self.fc_logvar = nn.Linear(h2, k)
        self.decoder = nn.Sequential(
            nn.Linear(k, h2), nn.ReLU(),
            nn.Linear(h2, h1), nn.ReLU(),
            nn.Linear(h1, d), nn.Sigmoid(),
        )

    def encode(self, x):
        h = self.encoder(self._flat(x))
        return self.fc_mean(h), self.fc_logvar(h)

    def decode_logits(self, z):
        return _logit_layers(self.decoder)(z)


# ---- conv families ---------------------------------------------------------------------------------

class ManningGlassesEncoder(nn.Module):
    """The Manning book's Encoder: conv1, conv2 -> batch2, conv3, linear1, linear2 (mu),
    linear3 (log std). Returns (mu, log_std); the book's own sampling moved to the VAE."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        c = spec.input_shape[0]
        (h,), k = spec.hidden, spec.latent_dim
        feat = math.prod(presets.feature_shape(spec))
        self.conv1 = nn.Conv2d(c, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.batch2 = BatchNorm(16)
        self.conv3 = nn.Conv2d(16, 32, 3, stride=2, padding=0)
        self.linear1 = nn.Linear(feat, h)
        self.linear2 = nn.Linear(h, k)
        self.linear3 = nn.Linear(h, k)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.batch2(self.conv2(x)))
        x = F.relu(self.conv3(x))                    # (B, 32, n, n)
        x = torch.flatten(x, start_dim=1)            # (B, 32*n*n) in C, H, W order (JAX: H, W, C)
        x = F.relu(self.linear1(x))
        return self.linear2(x), self.linear3(x)


class ManningGlassesDecoder(nn.Module):
    """The Manning book's Decoder: decoder_lin Sequential(Linear, ReLU, Linear, ReLU), unflatten to
    (32, n, n), decoder_conv Sequential(ConvT, BN, ReLU, ConvT, BN, ReLU, ConvT). Returns logits
    (the book applies the sigmoid inside; here `ManningGlassesVAE.decode` does)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        c = spec.input_shape[0]
        (h,), k = spec.hidden, spec.latent_dim
        self.feature_shape = presets.feature_shape(spec)  # (C, H, W) = (32, n, n)
        feat = math.prod(self.feature_shape)
        self.decoder_lin = nn.Sequential(
            nn.Linear(k, h), nn.ReLU(True),
            nn.Linear(h, feat), nn.ReLU(True),  # the book's final ReLU (Listing 7.5)
        )
        self.unflatten = nn.Unflatten(dim=1, unflattened_size=self.feature_shape)
        self.decoder_conv = nn.Sequential(
            nn.ConvTranspose2d(32, 16, 3, stride=2, output_padding=1), BatchNorm(16), nn.ReLU(True),
            nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1), BatchNorm(8), nn.ReLU(True),
            nn.ConvTranspose2d(8, c, 3, stride=2, padding=1, output_padding=1),
        )

    def forward(self, z):
        x = self.unflatten(self.decoder_lin(z))     # (B, 32, n, n) NCHW (JAX: reshape to n, n, 32)
        return self.decoder_conv(x)


class ManningGlassesVAE(AutoencoderBase):
    """The Manning book's glasses VAE (std parameterised): encoder, decoder; sigmoid output.

    The book's encoder outputs std = exp(linear3(h)); the contract's log-variance is
    logvar = 2 * linear3(h), so mean + exp(logvar / 2) * eps is the book's mu + std * eps.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.encoder = ManningGlassesEncoder(spec)
        self.decoder = ManningGlassesDecoder(spec)

    def encode(self, x):
        mean, log_std = self.encoder(self._image(x))
        return mean, 2.0 * log_std

    def encode_std(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The book's parameterisation: (mean, std) with std = exp(linear3(h)), each (B, D)."""
        mean, log_std = self.encoder(self._image(x))
        return mean, torch.exp(log_std)

    def decode_logits(self, z):
        return self.decoder(z)


class ConvVAE(AutoencoderBase):
    """conv_vae and resnet_vae for 1x28x28 (any H, W divisible by 4), logits output.

    encoder: Conv(C, C1, 4, s2, p1) -> ReLU [-> ResBlock(C1)] -> Conv(C1, C2, 4, s2, p1) -> ReLU
      [-> ResBlock(C2)]: 28 -> 14 -> 7; flatten C2*7*7 -> fc_mean, fc_logvar (-> D).
    decoder: decoder_fc (D -> C2*7*7) -> ReLU -> unflatten (C2, 7, 7) -> [ResBlock(C2) ->]
      ConvT(C2, C1, 4, s2, p1) -> ReLU [-> ResBlock(C1)] -> ConvT(C1, C, 4, s2, p1): 7 -> 14 -> 28.
    The bracketed ResBlocks (3x3 conv-BN-ReLU-conv-BN + identity, ReLU) are resnet_vae's.
    k4 s2 p1 halves exactly and its transpose doubles exactly (no output_padding needed).
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        c = spec.input_shape[0]
        c1, c2 = spec.hidden
        k = spec.latent_dim
        residual = spec.family == "resnet_vae"
        self.feature_shape = presets.feature_shape(spec)  # (C2, H/4, W/4)
        feat = math.prod(self.feature_shape)
        enc: list[nn.Module] = [nn.Conv2d(c, c1, 4, stride=2, padding=1), nn.ReLU()]
        if residual:
            enc.append(ResBlock(c1))
        enc += [nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU()]
        if residual:
            enc.append(ResBlock(c2))
        self.encoder = nn.Sequential(*enc)
        self.fc_mean = nn.Linear(feat, k)
        self.fc_logvar = nn.Linear(feat, k)
        self.decoder_fc = nn.Linear(k, feat)
        dec: list[nn.Module] = [ResBlock(c2)] if residual else []
        dec += [nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.ReLU()]
        if residual:
            dec.append(ResBlock(c1))
        dec.append(nn.ConvTranspose2d(c1, c, 4, stride=2, padding=1))
        self.decoder = nn.Sequential(*dec)

    def encode(self, x):
        h = self.encoder(self._image(x))             # (B, C2, H/4, W/4)
        h = torch.flatten(h, start_dim=1)            # C, H, W order (JAX: H, W, C)
        return self.fc_mean(h), self.fc_logvar(h)

    def decode_logits(self, z):
        h = F.relu(self.decoder_fc(z)).reshape(z.shape[0], *self.feature_shape)  # NCHW
        return self.decoder(h)                       # (B, C, H, W)


class BurgessVAE(AutoencoderBase):
    """burgess_vae: Burgess et al. 2018 ("Understanding disentangling in beta-VAE", appendix A.1)
    for 1x64x64 (any H, W divisible by 16), logits output (a Bernoulli decoder).

    encoder: 4 x [Conv(., C, 4, s2, p1) -> ReLU]: 64 -> 32 -> 16 -> 8 -> 4; flatten C*4*4 ->
      encoder_fc: Linear(C*4*4, F) -> ReLU -> Linear(F, F) -> ReLU; fc_mean, fc_logvar (F -> D).
    decoder: decoder_fc: Linear(D, F) -> ReLU -> Linear(F, F) -> ReLU -> Linear(F, C*4*4) -> ReLU;
      unflatten (C, 4, 4) -> decoder: 3 x [ConvT(C, C, 4, s2, p1) -> ReLU] -> ConvT(C, 1, 4, s2, p1).
    (C, F) = spec.hidden = (32, 256), D = 10. The paper's one 2D-unit layer of mean and log std
    is two D-unit heads here (mean, logvar: the same parameters, log std scaled by 2), as in
    every preset.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        c_in = spec.input_shape[0]
        c, f = spec.hidden
        k = spec.latent_dim
        self.feature_shape = presets.feature_shape(spec)  # (C, H/16, W/16)
        feat = math.prod(self.feature_shape)
        enc: list[nn.Module] = []
        for cin in (c_in, c, c, c):
            enc += [nn.Conv2d(cin, c, 4, stride=2, padding=1), nn.ReLU()]
        self.encoder = nn.Sequential(*enc)
        self.encoder_fc = nn.Sequential(nn.Linear(feat, f), nn.ReLU(), nn.Linear(f, f), nn.ReLU())
        self.fc_mean = nn.Linear(f, k)
        self.fc_logvar = nn.Linear(f, k)
        self.decoder_fc = nn.Sequential(nn.Linear(k, f), nn.ReLU(), nn.Linear(f, f), nn.ReLU(),
                                        nn.Linear(f, feat), nn.ReLU())
        dec: list[nn.Module] = []
        for _ in range(3):
            dec += [nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), nn.ReLU()]
        dec.append(nn.ConvTranspose2d(c, c_in, 4, stride=2, padding=1))
        self.decoder = nn.Sequential(*dec)

    def encode(self, x):
        h = self.encoder(self._image(x))             # (B, C, H/16, W/16)
        h = self.encoder_fc(torch.flatten(h, start_dim=1))  # C, H, W order (JAX: H, W, C)
        return self.fc_mean(h), self.fc_logvar(h)

    def decode_logits(self, z):
        h = self.decoder_fc(z).reshape(z.shape[0], *self.feature_shape)  # NCHW
        return self.decoder(h)                       # (B, C, H, W)


# ---- the VampPrior code's MLP (Exemplar VAE, NeurIPS 2020) -------------------------------------------

class NonLinear(nn.Module):
    """utils/nn.py NonLinear: `linear`, then an optional activation (a function here)."""

    def __init__(self, din: int, dout: int, *, use_bias: bool = True,
                 activation: Callable | None = None):
        super().__init__()
        self.linear = nn.Linear(din, dout, bias=use_bias)
        self.activation = activation

    def forward(self, x):
        h = self.linear(x)
        return h if self.activation is None else self.activation(h)


class GatedDense(nn.Module):
    """utils/nn.py GatedDense: h(x) * sigmoid(g(x)) (no activation on h, as the VAE builds it)."""

    def __init__(self, din: int, dout: int):
        super().__init__()
        self.h = nn.Linear(din, dout)
        self.g = nn.Linear(din, dout)

    def forward(self, x):
        return self.h(x) * torch.sigmoid(self.g(x))


class ExemplarVAE(AutoencoderBase):
    """sajadn/Exemplar-VAE models/VAE.py (jmtomczak/vae_vampprior's "vae"): two GatedDense(300)
    layers each way, logvar through Hardtanh(-6, 2), a sigmoid Bernoulli decoder (p_x_mean).
    Parameter names follow the reference, so its state_dict loads unchanged."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        d, (h,), k = spec.input_dim, spec.hidden, spec.latent_dim
        self.q_z_layers = nn.Sequential(GatedDense(d, h), GatedDense(h, h))
        self.q_z_mean = nn.Linear(h, k)
        self.q_z_logvar = NonLinear(h, k, activation=lambda v: v.clamp(-6.0, 2.0))
        self.p_x_layers = nn.Sequential(GatedDense(k, h), GatedDense(h, h))
        self.p_x_mean = NonLinear(h, d)  # the sigmoid is `decode`'s (logits here)

    def encode(self, x):
        hid = self.q_z_layers(self._flat(x))
        return self.q_z_mean(hid), self.q_z_logvar(hid)

    def decode_logits(self, z):
        return self.p_x_mean(self.p_x_layers(z))


def _attach_prior(model: AutoencoderBase) -> None:
    """Add the VampPrior's pseudo-inputs (`means`, a bias-free Linear K -> C*H*W whose weight
    columns are the pseudo-inputs before Hardtanh(0, 1)), after every other layer."""
    spec = model.spec
    model.means = NonLinear(spec.pseudo_inputs, spec.input_dim, use_bias=False)


def _reference_init_(model: nn.Module, generator: torch.Generator) -> None:
    """The VampPrior code's `he_init` after torch's default: every Linear weight N(0,
    sqrt(2 / fan_in)), biases left U(+-1/sqrt(fan_in)); the pseudo-inputs too (it overwrites their
    configured N(pseudoinputs_mean, pseudoinputs_std) draw)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / m.in_features), generator=generator)


# ---- registry --------------------------------------------------------------------------------------

FAMILIES: dict[str, type[AutoencoderBase]] = {
    "pytorch_examples": PytorchExamplesVAE,
    "flax_examples": FlaxExamplesVAE,
    "pytorch_mnist_vae": PytorchMnistVAE,
    "leaky_vae": LeakyVAE,
    "leaky_vae_256": LeakyVAE,
    "manning_ae": ManningAE,
    "manning_glasses_vae": ManningGlassesVAE,
    "simple_ae": SimpleAE,
    "simple_vae": SimpleVAE,
    "conv_vae": ConvVAE,
    "resnet_vae": ConvVAE,
    "burgess_vae": BurgessVAE,
    "exemplar_vae": ExemplarVAE,
}


def _init_like_torch_(model: nn.Module, generator: torch.Generator) -> None:
    """torch's own reset_parameters for every layer, in registration order, drawing from `generator`.

    Linear/Conv/ConvTranspose: kaiming_uniform_(a=sqrt(5)) weight, i.e. U(+-1/sqrt(fan_in)), and
    U(+-1/sqrt(fan_in)) bias with fan_in from weight.size(1) * k * k (for ConvTranspose that is
    out_channels * k * k); BatchNorm: weight 1, bias 0, running stats reset.
    """
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()


def build_model(name: str, *, generator: torch.Generator | None = None, init: str = "default",
                **overrides: Any) -> AutoencoderBase:
    """Build preset `name` (see `list_models()`) on the CPU, in train mode.

    Args:
      name: preset name.
      generator: torch.Generator for parameter init. The layers are created on the meta device and
        initialised with torch's own default rule from this generator, so torch's global RNG is
        neither read nor advanced; None: a fresh generator seeded from OS entropy.
      init: "default" or "torch": both are PyTorch's default init here (the names match the JAX
        twin, where "torch" selects this init and "default" Flax's).
      **overrides: spec overrides (latent_dim, hidden, reparam, negative_slope, input_shape,
        image_size), validated by `vaecommon.presets.get_spec`.
    Returns:
      The model; `model.spec` is the resolved `ModelSpec`.
    """
    _check_init(init)
    spec = presets.get_spec(name, **overrides)
    with torch.device("meta"):
        model = FAMILIES[spec.family](spec)
        if spec.prior == "vampprior":
            _attach_prior(model)
    model = model.to_empty(device="cpu")
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    with torch.no_grad():
        _init_like_torch_(model, generator)
        if spec.family == "exemplar_vae" or spec.prior == "vampprior":
            _reference_init_(model if spec.family == "exemplar_vae" else model.means, generator)
    return model


def list_models() -> list[str]:
    """All preset names, in table order."""
    return presets.list_models()


def num_params(model: nn.Module) -> int:
    """Number of trainable parameters (BatchNorm running stats are buffers, not counted)."""
    return int(sum(p.numel() for p in model.parameters()))
