"""Every model preset as a Flax NNX module. Twin: `torchvae/models.py` (same class and method names).

Each class mirrors the PyTorch source class of its preset (see `vaecommon.presets`): the same
submodule names in the same nesting, so `jaxvae.convert` maps a PyTorch `state_dict` onto it
with one rename/transpose table. `nnx.Sequential` stands for `torch.nn.Sequential`; its children
live under `layers`, so torch's `encoder.2.weight` is `('encoder', 'layers', 2, 'kernel')` here.
Activation functions hold no parameters and keep their torch index inside a `Sequential`; a
final `Sigmoid` of the source is left out of the `Sequential` and applied by `decode` instead,
so `decode_logits` is available for every model.

Model contract (same in both packages):
  `encode(x) -> (mean, logvar)` (AE: `(code, None)`), `decode_logits(z)`, `decode(z)` (the
  source's output: sigmoid for "probs" presets), `generate(z) = sigmoid(decode_logits(z))`,
  `reparameterize(mean, logvar, eps)`, `__call__(x, *, eps=None, key=None) -> ModelOutput`,
  `sample(n, key)` -> images in [0, 1], NHWC.

Layout: inputs are NHWC `(B, H, W, C)` images (MLP models also take flat `(B, 784)`); conv
decoders return NHWC images, MLP decoders flat `(B, 784)` (the torch twin: NCHW).

All trainable arrays are `nnx.Param`; BatchNorm running statistics (and torch's
`num_batches_tracked` counter) are `nnx.BatchStat`, so `nnx.split(model, nnx.Param, ...)` separates
what the optimizer updates from the rest. `model.train()` / `model.eval()` switch BatchNorm
between batch statistics (updating the running ones) and running statistics, as in torch.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvae import losses
from jaxvae.conv import ConvTranspose, conv_general_dilated
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
      logits: decoder output before the sigmoid; (B, 784) for MLP models, (B, H, W, C) for conv.
      mean: (B, D) posterior mean (AE: the code).
      logvar: (B, D) posterior log-variance (AE: None).
      z: (B, D) the latent that was decoded (AE: the code).
    """

    logits: jax.Array
    mean: jax.Array
    logvar: jax.Array | None
    z: jax.Array


# ---- layers ------------------------------------------------------------------------------------

def _torch_uniform(fan_in: int) -> Callable:
    """PyTorch's default init for Linear/Conv weights and biases: U(-1/sqrt(fan_in), +1/sqrt(fan_in)).

    (torch: kaiming_uniform_(a=sqrt(5)) for the weight has bound sqrt(6 / (1 + 5)) * sqrt(3 / fan_in)
    = 1/sqrt(fan_in); the bias uses the same bound.)
    """
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        # drawn flat and reshaped: same numbers, and XLA compiles a 1-D draw much faster on CPU
        return jax.random.uniform(key, (math.prod(shape),), dtype, -bound, bound).reshape(shape)

    return init


def _as_2d(init: Callable) -> Callable:
    """Run a (kH, kW, I, O) kernel initializer on (kH*kW*I, O) and reshape.

    Bitwise the same values as `init` on the 4-D shape (threefry lays the draws out flat and the
    fan-in, kH*kW*I, is unchanged; `models_test` checks it against `nnx.Conv`'s own init), but XLA
    on CPU compiles the 2-D draw several times faster than a 4-D one (~0.3 s vs ~2 s per shape).
    """

    def init2d(key, shape, dtype=jnp.float32):
        return init(key, (math.prod(shape[:-1]), shape[-1]), dtype).reshape(shape)

    return init2d


_FLAX_CONV_INIT = _as_2d(nnx.initializers.lecun_normal())


def _check_init(init: str) -> None:
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")


def _linear(din: int, dout: int, *, rngs: nnx.Rngs, init: str) -> nnx.Linear:
    if init == "torch":
        u = _torch_uniform(din)
        return nnx.Linear(din, dout, kernel_init=u, bias_init=u, rngs=rngs)
    return nnx.Linear(din, dout, rngs=rngs)


def _conv(cin: int, cout: int, k: int, stride: int, padding: int, *, use_bias: bool = True,
          rngs: nnx.Rngs, init: str) -> nnx.Conv:
    """torch.nn.Conv2d(cin, cout, k, stride, padding) on NHWC; kernel (k, k, cin, cout)."""
    kw: dict[str, Any] = {"kernel_init": _FLAX_CONV_INIT}
    if init == "torch":
        kw = {"kernel_init": _torch_uniform(cin * k * k), "bias_init": _torch_uniform(cin * k * k)}
    return nnx.Conv(cin, cout, (k, k), strides=(stride, stride),
                    padding=((padding, padding), (padding, padding)), use_bias=use_bias,
                    conv_general_dilated=conv_general_dilated, rngs=rngs, **kw)


def _conv_transpose(cin: int, cout: int, k: int, stride: int, padding: int,
                    output_padding: int = 0, *, rngs: nnx.Rngs, init: str) -> ConvTranspose:
    """torch.nn.ConvTranspose2d(cin, cout, k, stride, padding, output_padding) on NHWC.

    `lax.conv_transpose` pads the stride-dilated input explicitly; torch's output size
    (i - 1) * s - 2p + k + op is reached with (k - 1 - p) before and (k - 1 - p + op) after.
    `transpose_kernel=True` makes it the exact gradient of a forward conv (flipped spatially,
    in/out swapped), which is what torch computes; the kernel is then (k, k, cout, cin), i.e. the
    torch weight (cin, cout, k, k) transposed like a Conv weight (see jaxvae.convert).
    `jaxvae.conv.ConvTranspose` is nnx.ConvTranspose with a kernel gradient XLA:CPU runs fast.
    """
    if k - 1 - padding < 0:
        raise ValueError(f"padding {padding} > kernel_size - 1 = {k - 1} is not supported")
    kw: dict[str, Any] = {"kernel_init": _FLAX_CONV_INIT}
    if init == "torch":
        # torch computes fan_in from weight.size(1) * k * k, which for ConvTranspose2d is
        # out_channels * k * k (its weight is (in, out, k, k)): reproduced on purpose.
        kw = {"kernel_init": _torch_uniform(cout * k * k), "bias_init": _torch_uniform(cout * k * k)}
    lo, hi = k - 1 - padding, k - 1 - padding + output_padding
    return ConvTranspose(cin, cout, (k, k), strides=(stride, stride),
                         padding=((lo, hi), (lo, hi)), transpose_kernel=True, rngs=rngs, **kw)


class BatchNorm(nnx.Module):
    """BatchNorm over all axes but the last (channels), reproducing `torch.nn.BatchNorm2d` exactly.

    Differences from `nnx.BatchNorm`, all on purpose (torch parity):
      * the running variance is updated with the UNBIASED batch variance (sum / (n - 1)), while
        the batch itself is normalised with the biased one (sum / n), as torch does;
      * `momentum` uses torch's convention: the weight of the new batch statistic,
        running = (1 - momentum) * running + momentum * batch. torch momentum 0.1 == Flax 0.9;
      * a `num_batches_tracked` counter (int32 `BatchStat`), exported as torch's int64 buffer so
        a converted state_dict loads with strict=True.

    Attributes: scale/bias (`nnx.Param`, torch weight/bias), mean/var/num_batches_tracked
    (`nnx.BatchStat`, torch running_mean/running_var/num_batches_tracked).
    """

    def __init__(self, num_features: int, *, momentum: float = 0.1, epsilon: float = 1e-5,
                 use_running_average: bool = False, param_dtype=jnp.float32):
        self.num_features = num_features
        self.momentum = momentum
        self.epsilon = epsilon
        self.use_running_average = use_running_average
        self.scale = nnx.Param(jnp.ones((num_features,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))
        self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), jnp.int32))

    def __call__(self, x: jax.Array) -> jax.Array:
        """(..., C) -> (..., C)."""
        if self.use_running_average:
            mean, var = self.mean[...], self.var[...]
        else:
            axes = tuple(range(x.ndim - 1))
            n = math.prod(x.shape[:-1])
            if n < 2:
                raise ValueError(
                    f"BatchNorm in train mode needs more than 1 value per channel, got input {x.shape}"
                )
            # statistics in (at least) float32 even when x is bfloat16
            xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
            mean = jnp.mean(xf, axis=axes)
            var_sum = jnp.sum(jnp.square(xf - mean), axis=axes)
            var = var_sum / n
            m = self.momentum
            self.mean[...] = m * mean + (1 - m) * self.mean[...]
            self.var[...] = m * (var_sum / (n - 1)) + (1 - m) * self.var[...]
            self.num_batches_tracked[...] = self.num_batches_tracked[...] + 1
        inv = jax.lax.rsqrt(var + self.epsilon)
        y = (x - mean.astype(x.dtype)) * (inv * self.scale[...]).astype(x.dtype)
        return y + self.bias[...].astype(x.dtype)


class _LeakyReLU(nnx.Module):
    """torch.nn.LeakyReLU(negative_slope) as a parameter-free Sequential entry."""

    def __init__(self, negative_slope: float):
        self.negative_slope = float(negative_slope)

    def __call__(self, x):
        return jax.nn.leaky_relu(x, self.negative_slope)


class ResBlock(nnx.Module):
    """relu(x + bn2(conv2(relu(bn1(conv1(x)))))) with 3x3 stride-1 convs without bias (ResNet basic block)."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs, init: str = "default"):
        self.conv1 = _conv(channels, channels, 3, 1, 1, use_bias=False, rngs=rngs, init=init)
        self.bn1 = BatchNorm(channels)
        self.conv2 = _conv(channels, channels, 3, 1, 1, use_bias=False, rngs=rngs, init=init)
        self.bn2 = BatchNorm(channels)

    def __call__(self, x):
        h = jax.nn.relu(self.bn1(self.conv1(x)))
        return jax.nn.relu(x + self.bn2(self.conv2(h)))


# ---- the model contract --------------------------------------------------------------------------

class AutoencoderBase(nnx.Module):
    """Shared methods; subclasses define `encode` and `decode_logits` (and `spec`)."""

    spec: ModelSpec

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """x (B, H, W, C) or (B, 784) -> (mean, logvar), each (B, D); AE: (code, None)."""
        raise NotImplementedError

    def decode_logits(self, z: jax.Array) -> jax.Array:
        """z (B, D) -> pre-sigmoid output: (B, 784) for MLP models, (B, H, W, C) for conv models."""
        raise NotImplementedError

    def decode(self, z: jax.Array) -> jax.Array:
        """The source's decoder output: sigmoid(logits) for "probs" presets, logits otherwise."""
        logits = self.decode_logits(z)
        return jax.nn.sigmoid(logits) if self.spec.output == "probs" else logits

    def generate(self, z: jax.Array) -> jax.Array:
        """sigmoid(decode_logits(z)), in [0, 1], same shape as `decode_logits`."""
        return jax.nn.sigmoid(self.decode_logits(z))

    def reparameterize(self, mean: jax.Array, logvar: jax.Array, eps: jax.Array) -> jax.Array:
        """z = mean + exp(logvar / 2) * eps; with spec.reparam == "logvar_as_scale" the
        leaky_vae notebook's quirk z = mean + logvar * eps (reproduction only)."""
        if self.spec.reparam == "logvar_as_scale":
            return mean + logvar * eps
        return mean + jnp.exp(0.5 * logvar) * eps

    def __call__(self, x: jax.Array, *, eps: jax.Array | None = None,
                 key: jax.Array | None = None) -> ModelOutput:
        """Encode, reparameterize with `eps` (or eps ~ N(0, I) drawn from `key`), decode.

        Args:
          x: (B, H, W, C) images (MLP models: also (B, 784)).
          eps: (B, D) standard normal noise; wins over `key`.
          key: PRNG key used when `eps` is None (VAEs need one of the two; AEs neither).
        Returns:
          ModelOutput(logits, mean, logvar, z); AE: logvar None, z = mean = code.
        """
        mean, logvar = self.encode(x)
        if not self.spec.is_vae:
            return ModelOutput(self.decode_logits(mean), mean, None, mean)
        if eps is None:
            if key is None:
                raise ValueError("a VAE forward pass needs `eps` or `key` (no hidden RNG)")
            eps = jax.random.normal(key, mean.shape, mean.dtype)
        z = self.reparameterize(mean, logvar, eps)
        return ModelOutput(self.decode_logits(z), mean, logvar, z)

    def prior_components(self) -> tuple[jax.Array, jax.Array]:
        """The VampPrior's components: (means, logvars), each (K, D), of q(z | u_k) for the K
        pseudo-inputs u_k = hardtanh_[0,1](means.linear.kernel) (the reference feeds an identity
        matrix through a bias-free Linear; its output is the kernel itself)."""
        u = jnp.clip(self.means.linear.kernel[...], 0.0, 1.0)  # (K, C*H*W)
        return self.encode(self._image(u))

    def log_prior(self, z: jax.Array) -> jax.Array:
        """log p(z) summed over latent dimensions; z (..., D) -> (...). The standard normal, or
        the VampPrior mixture (1/K) sum_k N(z; mean_k, exp(logvar_k)) (`losses.log_mixture`)."""
        if self.spec.prior == "vampprior":
            return losses.log_mixture(z, *self.prior_components())
        return losses.log_standard_normal(z)

    def sample_prior(self, n: int, key: jax.Array) -> jax.Array:
        """(n, D) draws from the prior (VampPrior: a uniformly chosen component each)."""
        k_comp, k_eps = jax.random.split(key)
        eps = jax.random.normal(k_eps, (n, self.spec.latent_dim), jnp.float32)
        if self.spec.prior != "vampprior":
            return eps
        means, logvars = self.prior_components()
        idx = jax.random.randint(k_comp, (n,), 0, means.shape[0])
        return means[idx] + jnp.exp(0.5 * logvars[idx]) * eps

    def sample(self, n: int, key: jax.Array) -> jax.Array:
        """n images generated from z drawn from the prior: (n, H, W, C) in [0, 1].

        BatchNorm models should be in eval mode (`model.eval()`); in train mode the batch
        statistics of the n samples are used and the running ones updated, as in torch.
        """
        z = (jax.random.normal(key, (n, self.spec.latent_dim), jnp.float32)
             if self.spec.prior == "standard" else self.sample_prior(n, key))
        c, h, w = self.spec.input_shape
        return self.generate(z).reshape(n, h, w, c)  # NHWC (torch twin: NCHW)

    # helpers
    def _flat(self, x: jax.Array) -> jax.Array:
        # (B, H, W, C) -> (B, H*W*C); for C = 1 this is the same order as torch's (B, C, H, W) flatten
        return x.reshape(x.shape[0], -1)

    def _image(self, x: jax.Array) -> jax.Array:
        c, h, w = self.spec.input_shape
        return x.reshape(x.shape[0], h, w, c) if x.ndim == 2 else x  # NHWC


# ---- MLP families ---------------------------------------------------------------------------------

class PytorchExamplesVAE(AutoencoderBase):
    """pytorch/examples VAE: fc1 -> relu -> (fc21, fc22); fc3 -> relu -> fc4 (-> sigmoid)."""

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, init: str = "default"):
        self.spec = spec
        d, (h,), k = spec.input_dim, spec.hidden, spec.latent_dim
        self.fc1 = _linear(d, h, rngs=rngs, init=init)
        self.fc21 = _linear(h, k, rngs=rngs, init=init)
        self.fc22 = _linear(h, k, rngs=rngs, init=init)
        self.fc3 = _linear(k, h, rngs=rngs, init=init)
        self.fc4 = _linear(h, d, rngs=rngs, init=init)

    def encode(self, x):
        h1 = jax.nn.relu(self.fc1(self._flat(x)))
        return self.fc21(h1), self.fc22(h1)

    def decode_logits(self, z):
        return self.fc4(jax.nn.relu(self.fc3(z)))


class FlaxExamplesEncoder(nnx.Module):
    """google/flax examples/vae Encoder: fc1 -> relu -> (fc2_mean, fc2_logvar)."""

    def __init__(self, din: int, hidden: int, latents: int, *, rngs: nnx.Rngs, init: str = "default"):
        self.fc1 = _linear(din, hidden, rngs=rngs, init=init)
        self.fc2_mean = _linear(hidden, latents, rngs=rngs, init=init)
        self.fc2_logvar = _linear(hidden, latents, rngs=rngs, init=init)

    def __call__(self, x):
        h = jax.nn.relu(self.fc1(x))
        return self.fc2_mean(h), self.fc2_logvar(h)


class FlaxExamplesDecoder(nnx.Module):
    """google/flax examples/vae Decoder: fc1 -> relu -> fc2 (logits)."""

    def __init__(self, latents: int, hidden: int, dout: int, *, rngs: nnx.Rngs, init: str = "default"):
        self.fc1 = _linear(latents, hidden, rngs=rngs, init=init)
        self.fc2 = _linear(hidden, dout, rngs=rngs, init=init)

    def __call__(self, z):
        return self.fc2(jax.nn.relu(self.fc1(z)))


class FlaxExamplesVAE(AutoencoderBase):
    """google/flax examples/vae: encoder (FlaxExamplesEncoder), decoder (FlaxExamplesDecoder); logits output."""

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, init: str = "default"):
        self.spec = spec
        d, (h,), k = spec.input_dim, spec.hidden, spec.latent_dim
        self.encoder = FlaxExamplesEncoder(d, h, k, rngs=rngs, init=init)
        self.decoder = FlaxExamplesDecoder(k, h, d, rngs=rngs, init=init)

    def encode(self, x):
        return self.encoder(self._flat(x))

    def decode_logits(self, z):
        return self.decoder(z)


class PytorchMnistVAE(AutoencoderBase):
    """lyeoni/pytorch-mnist-VAE: fc1, fc2 (relu) -> (fc31, fc32); fc4, fc5 (relu) -> fc6 (-> sigmoid)."""

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, init: str = "default"):
        self.spec = spec
        d, (h1, h2), k = spec.input_dim, spec.hidden, spec.latent_dim
        self.fc1 = _linear(d, h1, rngs=rngs, init=init)
        self.fc2 = _linear(h1, h2, rngs=rngs, init=init)
        self.fc31 = _linear(h2, k, rngs=rngs, init=init)
        self.fc32 = _linear(h2, k, rngs=rngs, init=init)
        self.fc4 = _linear(k, h2, rngs=rngs, init=init)
        self.fc5 = _linear(h2, h1, rngs=rngs, init=init)
        self.fc6 = _linear(h1, d, rngs=rngs, init=init)

    def encode(self, x):
        h = jax.nn.relu(self.fc1(self._flat(x)))
        h = jax.nn.relu(self.fc2(h))
        return self.fc31(h), self.fc32(h)

    def decode_logits(self, z):
        h = jax.nn.relu(self.fc4(z))
        h = jax.nn.relu(self.fc5(h))
        return self.fc6(h)


class LeakyVAE(AutoencoderBase):
    """leaky_vae and leaky_vae_256: encoder Sequential(Linear, LeakyReLU, Linear, LeakyReLU),
    heads mean_layer / logvar_layer, decoder Sequential(Linear, LeakyReLU, Linear, LeakyReLU,
    Linear) (+ Sigmoid at index 5 in the torch twin when spec.output == "probs")."""

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, init: str = "default"):
        self.spec = spec
        d, (h1, h2), k, s = spec.input_dim, spec.hidden, spec.latent_dim, spec.negative_slope
        self.encoder = nnx.Sequential(
            _linear(d, h1, rngs=rngs, init=init), _LeakyReLU(s),
            _linear(h1, h2, rngs=rngs, init=init), _LeakyReLU(s),
        )
        self.mean_layer = _linear(h2, k, rngs=rngs, init=init)
        self.logvar_layer = _linear(h2, k, rngs=rngs, init=init)
        self.decoder = nnx.Sequential(
            _linear(k, h2, rngs=rngs, init=init), _LeakyReLU(s),
            _linear(h2, h1, rngs=rngs, init=init), _LeakyReLU(s),
            _linear(h1, d, rngs=rngs, init=init),
        )

    def encode(self, x):
        h = self.encoder(self._flat(x))
        return self.mean_layer(h), self.logvar_layer(h)

    def decode_logits(self, z):
        return self.decoder(z)


class ManningAE(AutoencoderBase):
    """The Manning book's AE: common -> relu -> encoded (code); l1 -> relu -> decode (-> sigmoid).

    The torch parameter `decode` is `decode_layer` here: an NNX attribute named `decode` would
    shadow the contract's `decode()` method (`jaxvae.convert` holds the rename).
    """

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, init: str = "default"):
        self.spec = spec
        d, (h,), k = spec.input_dim, spec.hidden, spec.latent_dim
        self.common = _linear(d, h, rngs=rngs, init=init)
        self.encoded = _linear(h, k, rngs=rngs, init=init)
        self.l1 = _linear(k, h, rngs=rngs, init=init)
        self.decode_layer = _linear(h, d, rngs=rngs, init=init)

    def encode(self, x):
        return self.encoded(jax.nn.relu(self.common(self._flat(x)))), None

    def decode_logits(self, z):
        return self.decode_layer(jax.nn.relu(self.l1(z)))


class SimpleAE(AutoencoderBase):
    """Teaching notebook SimpleAutoencoder: encoder Sequential(Linear, ReLU, Linear, ReLU) (the
    code is ReLU'd, as in the source), decoder Sequential(Linear, ReLU, Linear) (+ Sigmoid)."""

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, init: str = "default"):
        self.spec = spec
        d, (h,), k = spec.input_dim, spec.hidden, spec.latent_dim
        self.encoder = nnx.Sequential(
            _linear(d, h, rngs=rngs, init=init), jax.nn.relu,
            _linear(h, k, rngs=rngs, init=init), jax.nn.relu,
        )
        self.decoder = nnx.Sequential(
            _linear(k, h, rngs=rngs, init=init), jax.nn.relu,
            _linear(h, d, rngs=rngs, init=init),
        )

    def encode(self, x):
        return self.encoder(self._flat(x)), None

    def decode_logits(self, z):
        return self.decoder(z)


class SimpleVAE(AutoencoderBase):
    """Teaching notebook SimpleVAE: encoder Sequential(Linear, ReLU, Linear, ReLU), fc_mean,
    fc_logvar, decoder Sequential(Linear, ReLU, Linear, ReLU, Linear) (+ Sigmoid)."""

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, init: str = "default"):
        self.spec = spec
        d, (h1, h2), k = spec.input_dim, spec.hidden, spec.latent_dim
        self.encoder = nnx.Sequential(
            _linear(d, h1, rngs=rngs, init=init), jax.nn.relu,
            _linear(h1, h2, rngs=rngs, init=init), jax.nn.relu,
        )
        self.fc_mean = _linear(h2, k, rngs=rngs, init=init)
        self.fc_logvar = _linear(h2, k, rngs=rngs, init=init)
        self.decoder = nnx.Sequential(
            _linear(k, h2, rngs=rngs, init=init), jax.nn.relu,
            _linear(h2, h1, rngs=rngs, init=init), jax.nn.relu,
            _linear(h1, d, rngs=rngs, init=init),
        )

    def encode(self, x):
        h = self.encoder(self._flat(x))
        return self.fc_mean(h), self.fc_logvar(h)

    def decode_logits(self, z):
        return self.decoder(z)


# ---- conv families ---------------------------------------------------------------------------------

class ManningGlassesEncoder(nnx.Module):
    """The Manning book's Encoder: conv1, conv2 -> batch2, conv3, linear1, linear2 (mu),
    linear3 (log std). Returns (mu, log_std); the book's own sampling moved to the VAE."""

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, init: str = "default"):
        c = spec.input_shape[0]
        (h,), k = spec.hidden, spec.latent_dim
        feat = math.prod(presets.feature_shape(spec))
        self.conv1 = _conv(c, 8, 3, 2, 1, rngs=rngs, init=init)
        self.conv2 = _conv(8, 16, 3, 2, 1, rngs=rngs, init=init)
        self.batch2 = BatchNorm(16)
        self.conv3 = _conv(16, 32, 3, 2, 0, rngs=rngs, init=init)
        self.linear1 = _linear(feat, h, rngs=rngs, init=init)
        self.linear2 = _linear(h, k, rngs=rngs, init=init)
        self.linear3 = _linear(h, k, rngs=rngs, init=init)

    def __call__(self, x):
        x = jax.nn.relu(self.conv1(x))
        x = jax.nn.relu(self.batch2(self.conv2(x)))
        x = jax.nn.relu(self.conv3(x))               # (B, n, n, 32)
        x = x.reshape(x.shape[0], -1)                # (B, n*n*32) in H, W, C order (torch: C, H, W)
        x = jax.nn.relu(self.linear1(x))
        return self.linear2(x), self.linear3(x)


class ManningGlassesDecoder(nnx.Module):
    """The Manning book's Decoder: decoder_lin Sequential(Linear, ReLU, Linear, ReLU), unflatten to
    (n, n, 32), decoder_conv Sequential(ConvT, BN, ReLU, ConvT, BN, ReLU, ConvT). Returns logits
    (the book applies the sigmoid inside; here `ManningGlassesVAE.decode` does)."""

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, init: str = "default"):
        c = spec.input_shape[0]
        (h,), k = spec.hidden, spec.latent_dim
        self.feature_shape = presets.feature_shape(spec)  # (C, H, W) = (32, n, n)
        feat = math.prod(self.feature_shape)
        self.decoder_lin = nnx.Sequential(
            _linear(k, h, rngs=rngs, init=init), jax.nn.relu,
            _linear(h, feat, rngs=rngs, init=init), jax.nn.relu,  # the book's final ReLU
        )
        self.decoder_conv = nnx.Sequential(
            _conv_transpose(32, 16, 3, 2, 0, 1, rngs=rngs, init=init), BatchNorm(16), jax.nn.relu,
            _conv_transpose(16, 8, 3, 2, 1, 1, rngs=rngs, init=init), BatchNorm(8), jax.nn.relu,
            _conv_transpose(8, c, 3, 2, 1, 1, rngs=rngs, init=init),
        )

    def __call__(self, z):
        ch, hh, ww = self.feature_shape
        x = self.decoder_lin(z).reshape(z.shape[0], hh, ww, ch)  # NHWC (torch: unflatten to C, H, W)
        return self.decoder_conv(x)


class ManningGlassesVAE(AutoencoderBase):
    """The Manning book's glasses VAE (std parameterised): encoder, decoder; sigmoid output.

    The book's encoder outputs std = exp(linear3(h)); the contract's log-variance is
    logvar = 2 * linear3(h), so mean + exp(logvar / 2) * eps is the book's mu + std * eps.
    """

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, init: str = "default"):
        self.spec = spec
        self.encoder = ManningGlassesEncoder(spec, rngs=rngs, init=init)
        self.decoder = ManningGlassesDecoder(spec, rngs=rngs, init=init)

    def encode(self, x):
        mean, log_std = self.encoder(self._image(x))
        return mean, 2.0 * log_std

    def encode_std(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The book's parameterisation: (mean, std) with std = exp(linear3(h)), each (B, D)."""
        mean, log_std = self.encoder(self._image(x))
        return mean, jnp.exp(log_std)

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

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, init: str = "default"):
        self.spec = spec
        c = spec.input_shape[0]
        c1, c2 = spec.hidden
        k = spec.latent_dim
        residual = spec.family == "resnet_vae"
        self.feature_shape = presets.feature_shape(spec)  # (C2, H/4, W/4)
        feat = math.prod(self.feature_shape)
        enc: list[Any] = [_conv(c, c1, 4, 2, 1, rngs=rngs, init=init), jax.nn.relu]
        if residual:
            enc.append(ResBlock(c1, rngs=rngs, init=init))
        enc += [_conv(c1, c2, 4, 2, 1, rngs=rngs, init=init), jax.nn.relu]
        if residual:
            enc.append(ResBlock(c2, rngs=rngs, init=init))
        self.encoder = nnx.Sequential(*enc)
        self.fc_mean = _linear(feat, k, rngs=rngs, init=init)
        self.fc_logvar = _linear(feat, k, rngs=rngs, init=init)
        self.decoder_fc = _linear(k, feat, rngs=rngs, init=init)
        dec: list[Any] = [ResBlock(c2, rngs=rngs, init=init)] if residual else []
        dec += [_conv_transpose(c2, c1, 4, 2, 1, 0, rngs=rngs, init=init), jax.nn.relu]
        if residual:
            dec.append(ResBlock(c1, rngs=rngs, init=init))
        dec.append(_conv_transpose(c1, c, 4, 2, 1, 0, rngs=rngs, init=init))
        self.decoder = nnx.Sequential(*dec)

    def encode(self, x):
        h = self.encoder(self._image(x))             # (B, H/4, W/4, C2)
        h = h.reshape(h.shape[0], -1)                # H, W, C order (torch: C, H, W)
        return self.fc_mean(h), self.fc_logvar(h)

    def decode_logits(self, z):
        ch, hh, ww = self.feature_shape
        h = jax.nn.relu(self.decoder_fc(z)).reshape(z.shape[0], hh, ww, ch)  # NHWC
        return self.decoder(h)                       # (B, H, W, C)


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

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, init: str = "default"):
        self.spec = spec
        c_in = spec.input_shape[0]
        c, f = spec.hidden
        k = spec.latent_dim
        self.feature_shape = presets.feature_shape(spec)  # (C, H/16, W/16)
        feat = math.prod(self.feature_shape)
        enc: list[Any] = []
        for cin in (c_in, c, c, c):
            enc += [_conv(cin, c, 4, 2, 1, rngs=rngs, init=init), jax.nn.relu]
        self.encoder = nnx.Sequential(*enc)
        self.encoder_fc = nnx.Sequential(_linear(feat, f, rngs=rngs, init=init), jax.nn.relu,
                                         _linear(f, f, rngs=rngs, init=init), jax.nn.relu)
        self.fc_mean = _linear(f, k, rngs=rngs, init=init)
        self.fc_logvar = _linear(f, k, rngs=rngs, init=init)
        self.decoder_fc = nnx.Sequential(_linear(k, f, rngs=rngs, init=init), jax.nn.relu,
                                         _linear(f, f, rngs=rngs, init=init), jax.nn.relu,
                                         _linear(f, feat, rngs=rngs, init=init), jax.nn.relu)
        dec: list[Any] = []
        for _ in range(3):
            dec += [_conv_transpose(c, c, 4, 2, 1, 0, rngs=rngs, init=init), jax.nn.relu]
        dec.append(_conv_transpose(c, c_in, 4, 2, 1, 0, rngs=rngs, init=init))
        self.decoder = nnx.Sequential(*dec)

    def encode(self, x):
        h = self.encoder(self._image(x))             # (B, H/16, W/16, C)
        h = self.encoder_fc(h.reshape(h.shape[0], -1))  # H, W, C order (torch: C, H, W)
        return self.fc_mean(h), self.fc_logvar(h)

    def decode_logits(self, z):
        ch, hh, ww = self.feature_shape
        h = self.decoder_fc(z).reshape(z.shape[0], hh, ww, ch)  # NHWC
        return self.decoder(h)                       # (B, H, W, C)


# ---- the VampPrior code's MLP (Exemplar VAE, NeurIPS 2020) -------------------------------------------

def _he_normal(key, shape, dtype=jnp.float32):
    """The reference's `he_init`: N(0, sqrt(2 / fan_in)) for Linear kernels (in, out)."""
    return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / shape[0])


def _reference_linear(din: int, dout: int, *, rngs: nnx.Rngs, use_bias: bool = True) -> nnx.Linear:
    # the reference applies he_init to every nn.Linear weight after torch's default init, so the
    # biases keep torch's U(+-1/sqrt(fan_in))
    return nnx.Linear(din, dout, use_bias=use_bias, kernel_init=_he_normal,
                      bias_init=_torch_uniform(din), rngs=rngs)


class NonLinear(nnx.Module):
    """utils/nn.py NonLinear: `linear`, then an optional activation (a function here)."""

    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs, use_bias: bool = True,
                 activation: Callable | None = None):
        self.linear = _reference_linear(din, dout, rngs=rngs, use_bias=use_bias)
        self.activation = activation

    def __call__(self, x):
        h = self.linear(x)
        return h if self.activation is None else self.activation(h)


class GatedDense(nnx.Module):
    """utils/nn.py GatedDense: h(x) * sigmoid(g(x)) (no activation on h, as the VAE builds it)."""

    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs):
        self.h = _reference_linear(din, dout, rngs=rngs)
        self.g = _reference_linear(din, dout, rngs=rngs)

    def __call__(self, x):
        return self.h(x) * jax.nn.sigmoid(self.g(x))


class ExemplarVAE(AutoencoderBase):
    """sajadn/Exemplar-VAE models/VAE.py (jmtomczak/vae_vampprior's "vae"): two GatedDense(300)
    layers each way, logvar through Hardtanh(-6, 2), a sigmoid Bernoulli decoder (p_x_mean).
    Parameter names follow the reference, so its state_dict loads unchanged."""

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, init: str = "default"):
        # init: the reference's own (he-normal weights, torch-uniform biases) for both values
        self.spec = spec
        d, (h,), k = spec.input_dim, spec.hidden, spec.latent_dim
        self.q_z_layers = nnx.Sequential(GatedDense(d, h, rngs=rngs), GatedDense(h, h, rngs=rngs))
        self.q_z_mean = _reference_linear(h, k, rngs=rngs)
        self.q_z_logvar = NonLinear(h, k, rngs=rngs, activation=lambda v: jnp.clip(v, -6.0, 2.0))
        self.p_x_layers = nnx.Sequential(GatedDense(k, h, rngs=rngs), GatedDense(h, h, rngs=rngs))
        self.p_x_mean = NonLinear(h, d, rngs=rngs)  # the sigmoid is `decode`'s (logits here)

    def encode(self, x):
        hid = self.q_z_layers(self._flat(x))
        return self.q_z_mean(hid), self.q_z_logvar(hid)

    def decode_logits(self, z):
        return self.p_x_mean(self.p_x_layers(z))


def _attach_prior(model: AutoencoderBase, *, rngs: nnx.Rngs) -> None:
    """Add the VampPrior's pseudo-inputs (`means`, a bias-free Linear K -> C*H*W whose kernel
    rows are the pseudo-inputs before Hardtanh(0, 1)), after every other layer so the other
    layers' init is unchanged. Init: the reference's he_init, N(0, sqrt(2 / K)), which overwrites
    its configured N(pseudoinputs_mean, pseudoinputs_std) draw."""
    spec = model.spec
    model.means = NonLinear(spec.pseudo_inputs, spec.input_dim, rngs=rngs, use_bias=False)


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


def build_model(name: str, *, rngs: nnx.Rngs | None = None, key: jax.Array | int | None = None,
                init: str = "default", **overrides: Any) -> AutoencoderBase:
    """Build preset `name` (see `list_models()`), in train mode.

    Args:
      name: preset name.
      rngs: `nnx.Rngs` for parameter init; or
      key: a PRNG key (or int seed) for parameter init (exactly one of rngs/key).
      init: "default" (Flax's initializers: lecun_normal kernels, zero biases) or "torch"
        (PyTorch's defaults: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases, with
        ConvTranspose's fan_in = out_channels * k * k; BatchNorm scale 1, bias 0 in both).
      **overrides: spec overrides (latent_dim, hidden, reparam, negative_slope, input_shape,
        image_size), validated by `vaecommon.presets.get_spec`.
    Returns:
      The model; `model.spec` is the resolved `ModelSpec`.
    """
    _check_init(init)
    if (rngs is None) == (key is None):
        raise ValueError("pass exactly one of `rngs` (nnx.Rngs) or `key` (PRNG key or int seed)")
    if rngs is None:
        rngs = nnx.Rngs(params=key)
    spec = presets.get_spec(name, **overrides)
    model = FAMILIES[spec.family](spec, rngs=rngs, init=init)
    if spec.prior == "vampprior":
        _attach_prior(model, rngs=rngs)
    return model


def list_models() -> list[str]:
    """All preset names, in table order."""
    return presets.list_models()


def num_params(model: nnx.Module) -> int:
    """Number of trainable parameters (`nnx.Param` entries; BatchNorm running stats excluded)."""
    return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
