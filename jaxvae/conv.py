"""2-D convolutions whose gradients XLA:CPU runs on its fast convolution path.

A Conv2d's gradients are convolutions too; JAX's transpose rules emit them in operand layouts
(dim_labels f01b_i01o->01bf for the kernel gradient, an 01oi kernel for the input gradient) that
XLA:CPU rewrites to its canonical NHWC/HWIO form for a lone jitted step, but not inside the
`lax.scan` body the trainer compiles, where they fall to a slow generic emitter. Measured on the
2-core Xeon of scripts/README.md's benchmark, conv_vae, batch 128: 582 ms per scanned step against 40
ms for the same step jitted alone; kernel gradients took 250-270 ms each. Here both gradients
are spelled out as convolutions already in canonical layout (custom VJPs), so the scanned step
runs at the lone step's speed (40 ms):

  * `kernel_grad`: d/dK <cot, conv(x, K)> = a stride-1 conv of x (batch <-> channels swapped)
    with the cotangent as an s-dilated kernel.
  * `conv2d` (used by `nnx.Conv` through `conv_general_dilated`): forward unchanged; input
    gradient = `conv_transpose` (an HWIO kernel); kernel gradient = `kernel_grad`.
  * `conv_transpose` / `ConvTranspose` (nnx.ConvTranspose with the same parameters, names and
    layout, so conversion and checkpoints are unchanged): a transposed conv is the input gradient
    of the strided conv with the same kernel, so its input gradient is that strided conv
    (`conv2d`) and its kernel gradient that conv's `kernel_grad`.

Values and both gradients are the same linear maps as JAX's rules (tested against a float64 NumPy
oracle), and the canonical forms are what GPU/TPU backends use too, so this runs on every backend.

JAX only, no twin in torchvae: torch's Conv2d / ConvTranspose2d gradients are oneDNN kernels.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")
Pairs = tuple[tuple[int, int], ...]


def _forward_conv_padding(kernel_shape: Sequence[int], padding: Pairs) -> Pairs:
    """Padding of the strided conv whose input-gradient is the transposed conv."""
    return tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(kernel_shape[:2], padding))


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_transpose(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...], padding: Pairs,
                   precision: Any = None) -> jax.Array:
    """`lax.conv_transpose(x, kernel, strides, padding, dimension_numbers=NHWC/HWIO/NHWC,
    transpose_kernel=True, precision=precision)`, with the gradient described in the module doc.

    x: (B, H, W, I); kernel: (kH, kW, O, I) (torch's ConvTranspose2d weight (I, O, kH, kW) with
    axes (2, 3, 1, 0)); strides: (sH, sW); padding: explicit ((lo, hi), (lo, hi)) as
    `nnx.ConvTranspose` takes it (torch's p and output_padding: lo = k-1-p, hi = lo + op).
    """
    return lax.conv_transpose(x, kernel, strides, padding, dimension_numbers=_NHWC,
                              transpose_kernel=True, precision=precision)


def _conv_transpose_fwd(x, kernel, strides, padding, precision):
    return conv_transpose(x, kernel, strides, padding, precision), (x, kernel)


def kernel_grad(x: jax.Array, cot: jax.Array, kernel_hw: tuple[int, int], strides, padding: Pairs,
                precision: Any = None) -> jax.Array:
    """d/dK <cot, conv(x, K, strides, padding)> as one convolution in XLA's canonical layout.

    dK[a, b, i, o] = sum_{n, m, l} xpad[n, s*m + a, s*l + b, i] * cot[n, m, l, o]: a stride-1
    convolution of xpad (batch <-> channels swapped) with cot as an `s`-dilated kernel. Spelled
    out like this (NHWC/HWIO/NHWC operands) it is the form XLA:CPU runs on its fast convolution
    path; the form JAX's transpose rule emits (f01b_i01o->01bf) is canonicalized for a lone
    jitted step but not inside a `lax.scan` body, where it ran 10-50x slower.
    """
    lhs = jnp.transpose(x, (3, 1, 2, 0))        # (I, H, W, B): batch is the contraction
    rhs = jnp.transpose(cot, (1, 2, 0, 3))      # (M, L, B, O)
    out = lax.conv_general_dilated(lhs, rhs, (1, 1), padding, rhs_dilation=tuple(strides),
                                   dimension_numbers=_NHWC, precision=precision)  # (I, >=kh, >=kw, O)
    return jnp.transpose(out[:, :kernel_hw[0], :kernel_hw[1], :], (1, 2, 0, 3))


def _conv_transpose_bwd(strides, padding, precision, residuals, g):
    x, kernel = residuals
    conv_padding = _forward_conv_padding(kernel.shape, padding)
    dx = conv2d(g, kernel, strides, conv_padding, precision)
    return dx, kernel_grad(g, x, kernel.shape[:2], strides, conv_padding, precision)


conv_transpose.defvjp(_conv_transpose_fwd, _conv_transpose_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...], padding: Pairs,
           precision: Any = None) -> jax.Array:
    """`lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC/HWIO/NHWC)`
    with both gradients spelled out in XLA:CPU's canonical layout: the kernel gradient is
    `kernel_grad`, the input gradient a transposed conv with an HWIO kernel (JAX's own rule
    emits an 01oi kernel layout). Padding must be explicit and >= 0 with P <= k - 1."""
    return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC,
                                    precision=precision)


def _conv2d_fwd(x, kernel, strides, padding, precision):
    return conv2d(x, kernel, strides, padding, precision), (x, kernel)


def _input_grad(x_shape, kernel, g, strides, padding: Pairs, precision):
    """d/dx <g, conv(x, K)>: `conv_transpose` of g, with the rows/columns the strided conv never
    read (r = (H + P + P' - k) mod s) added back as zero padding at the end."""
    ct_pad = []
    for size, k, s, (p_lo, p_hi) in zip(x_shape[1:3], kernel.shape[:2], strides, padding):
        r = (size + p_lo + p_hi - k) % s
        ct_pad.append((k - 1 - p_lo, k - 1 - p_hi + r))
    return conv_transpose(g, kernel, strides, tuple(ct_pad), precision)


def _conv2d_bwd(strides, padding, precision, residuals, g):
    x, kernel = residuals
    dx = _input_grad(x.shape, kernel, g, strides, padding, precision)
    return dx, kernel_grad(x, g, kernel.shape[:2], strides, padding, precision)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None, **kwargs):
    """`lax.conv_general_dilated`'s signature, for `nnx.Conv(conv_general_dilated=...)`: plain 2-D
    NHWC convolutions (explicit padding, no dilation or groups) go to `conv2d`, all else to lax."""
    pairs = _explicit_pairs(padding) if lhs.ndim == 4 else None
    plain = (pairs is not None and feature_group_count == 1
             and batch_group_count == 1 and preferred_element_type is None
             and kwargs.get("out_sharding") is None
             and all(d == 1 for d in (lhs_dilation or (1, 1)))
             and all(d == 1 for d in (rhs_dilation or (1, 1)))
             and dimension_numbers is not None
             and all(0 <= p <= k - 1 for pair, k in zip(pairs, rhs.shape[:2]) for p in pair)
             and tuple(lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers))
             == tuple(lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)))
    if not plain:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
            batch_group_count=batch_group_count, precision=precision,
            preferred_element_type=preferred_element_type, **kwargs)
    return conv2d(lhs, rhs, tuple(window_strides), pairs, precision)


def _pair(v: Any) -> tuple[int, int]:
    if v is None:
        return (1, 1)
    return (v, v) if isinstance(v, int) else tuple(v)


def _explicit_pairs(padding: Any) -> Pairs | None:
    """((lo, hi), (lo, hi)) for explicit integer padding of two spatial dims, else None."""
    if isinstance(padding, str):
        return None
    try:
        pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
    except (TypeError, ValueError):
        return None
    return pairs if len(pairs) == 2 else None


class ConvTranspose(nnx.ConvTranspose):
    """`nnx.ConvTranspose` (2-D, explicit padding, transpose_kernel=True) computed by
    `conv_transpose`. Parameters are nnx.ConvTranspose's."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        pairs = _explicit_pairs(self.padding)
        if (len(self.kernel_size) != 2 or pairs is None or not self.transpose_kernel
                or self.mask is not None or _pair(self.kernel_dilation) != (1, 1)):
            raise ValueError("jaxvae.conv.ConvTranspose supports 2-D kernels with explicit padding, "
                             "transpose_kernel=True, no mask and no kernel dilation; got "
                             f"kernel_size={self.kernel_size}, padding={self.padding!r}, "
                             f"transpose_kernel={self.transpose_kernel}, "
                             f"kernel_dilation={self.kernel_dilation}")

    def __call__(self, inputs: jax.Array) -> jax.Array:
        lead = inputs.shape[:-3]
        x = inputs.reshape((math.prod(lead),) + inputs.shape[-3:]) if len(lead) != 1 else inputs
        kernel = self.kernel[...]
        bias = self.bias[...] if self.use_bias else None
        x, kernel, bias = self.promote_dtype((x, kernel, bias), dtype=self.dtype)
        y = conv_transpose(x, kernel, _pair(self.strides), _explicit_pairs(self.padding),
                           self.precision)
        if bias is not None:
            y = y + bias
        return y.reshape(lead + y.shape[1:]) if len(lead) != 1 else y
