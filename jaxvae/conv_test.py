"""Tests of jaxvae.conv: the conv, the transposed conv and both gradients of each against float64
NumPy oracles written from torch's Conv2d / ConvTranspose2d definitions; the layers against
nnx.Conv / nnx.ConvTranspose; and that a scanned training step compiles to canonical convs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvae import conv

jax.config.update("jax_default_matmul_precision", "highest")


def _oracle(x, w, s, lo, hi, g):
    """y, dL/dx, dL/dw for L = sum(y * g), by the definition (float64 loops).

    torch's ConvTranspose2d: y[o] = sum_{i, t: o = i*s - p + t} x[i] w[t], p = k - 1 - lo,
    output size (H - 1) * s + lo + hi - k + 2; w here is (kH, kW, O, I).
    """
    b, h, wd, ci = x.shape
    k, _, co, _ = w.shape
    p = k - 1 - lo
    ho, wo = (h - 1) * s + lo + hi - k + 2, (wd - 1) * s + lo + hi - k + 2
    y = np.zeros((b, ho, wo, co))
    dx = np.zeros_like(x)
    dw = np.zeros_like(w)
    for ih in range(h):
        for iw in range(wd):
            for th in range(k):
                for tw in range(k):
                    oh, ow = ih * s - p + th, iw * s - p + tw
                    if 0 <= oh < ho and 0 <= ow < wo:
                        y[:, oh, ow] += x[:, ih, iw] @ w[th, tw].T
                        dx[:, ih, iw] += g[:, oh, ow] @ w[th, tw]
                        dw[th, tw] += g[:, oh, ow].T @ x[:, ih, iw]
    return y, dx, dw


# (H, W, I, O, k, s, lo, hi): conv_vae's two layers, manning_glasses_vae's three (k3 s2 with
# torch padding 0 / 1 and output_padding 1), and odd cases (k < s, k not a multiple of s, H != W).
CASES = [
    (7, 7, 6, 5, 4, 2, 2, 2),
    (14, 14, 5, 1, 4, 2, 2, 2),
    (3, 3, 4, 3, 3, 2, 2, 3),
    (4, 4, 3, 2, 3, 2, 1, 2),
    (7, 7, 2, 1, 3, 2, 1, 2),
    (5, 6, 3, 4, 5, 3, 1, 4),
    (3, 4, 2, 2, 1, 2, 0, 1),
    (4, 4, 2, 3, 3, 1, 0, 0),
]


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_conv_transpose_and_its_gradients_match_float64_oracle(case):
    h, wd, ci, co, k, s, lo, hi = case
    rng = np.random.default_rng(sum(case))
    x = rng.normal(size=(2, h, wd, ci)).astype(np.float32)
    w = rng.normal(size=(k, k, co, ci)).astype(np.float32)
    y, vjp = jax.vjp(lambda a, b: conv.conv_transpose(a, b, (s, s), ((lo, hi), (lo, hi))),
                     jnp.asarray(x), jnp.asarray(w))
    g = rng.normal(size=y.shape)
    y_want, dx_want, dw_want = _oracle(x.astype(np.float64), w.astype(np.float64), s, lo, hi, g)
    assert y.shape == y_want.shape
    np.testing.assert_allclose(np.asarray(y), y_want, rtol=1e-5, atol=1e-5)
    dx, dw = vjp(jnp.asarray(g, jnp.float32))
    np.testing.assert_allclose(np.asarray(dx), dx_want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(dw), dw_want, rtol=1e-5, atol=1e-4)


def _conv_oracle(x, w, s, p0, p1, g):
    """y, dL/dx, dL/dw of y = conv(x, w) (stride s, padding (p0, p1)), L = sum(y * g), float64."""
    b, h, wd, ci = x.shape
    k, _, _, co = w.shape
    xp = np.pad(x, ((0, 0), (p0, p1), (p0, p1), (0, 0)))
    ho, wo = (h + p0 + p1 - k) // s + 1, (wd + p0 + p1 - k) // s + 1
    y = np.zeros((b, ho, wo, co))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for m in range(ho):
        for n in range(wo):
            for a in range(k):
                for c in range(k):
                    y[:, m, n] += xp[:, s * m + a, s * n + c] @ w[a, c]
                    dxp[:, s * m + a, s * n + c] += g[:, m, n] @ w[a, c].T
                    dw[a, c] += xp[:, s * m + a, s * n + c].T @ g[:, m, n]
    return y, dxp[:, p0:p0 + h, p0:p0 + wd], dw


# (H, I, O, k, s, p0, p1): conv_vae's two convs, manning_glasses_vae's three (one where the
# stride skips the last row: (8 + 2 - 3) % 2 = 1), a ResBlock 3x3, asymmetric padding
CONV_CASES = [
    (28, 1, 4, 4, 2, 1, 1),
    (14, 4, 6, 4, 2, 1, 1),
    (8, 2, 3, 3, 2, 1, 1),
    (7, 3, 4, 3, 2, 0, 0),
    (7, 3, 3, 3, 1, 1, 1),
    (6, 2, 3, 3, 2, 0, 2),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[str(c) for c in CONV_CASES])
def test_conv2d_and_its_gradients_match_float64_oracle(case):
    h, ci, co, k, s, p0, p1 = case
    rng = np.random.default_rng(sum(case))
    x = rng.normal(size=(2, h, h, ci)).astype(np.float32)
    w = rng.normal(size=(k, k, ci, co)).astype(np.float32)
    pad = ((p0, p1), (p0, p1))
    y, vjp = jax.vjp(lambda a, b: conv.conv2d(a, b, (s, s), pad), jnp.asarray(x), jnp.asarray(w))
    g = rng.normal(size=y.shape)
    y_want, dx_want, dw_want = _conv_oracle(x.astype(np.float64), w.astype(np.float64), s, p0, p1, g)
    np.testing.assert_allclose(np.asarray(y), y_want, rtol=1e-5, atol=1e-5)
    dx, dw = vjp(jnp.asarray(g, jnp.float32))
    np.testing.assert_allclose(np.asarray(dx), dx_want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(dw), dw_want, rtol=1e-5, atol=1e-4)


def test_nnx_conv_with_our_conv_equals_plain_nnx_conv():
    kw = dict(strides=(2, 2), padding=((1, 1), (1, 1)))
    ours = nnx.Conv(3, 5, (4, 4), conv_general_dilated=conv.conv_general_dilated,
                    rngs=nnx.Rngs(0), **kw)
    ref = nnx.Conv(3, 5, (4, 4), rngs=nnx.Rngs(0), **kw)
    x = jax.random.normal(jax.random.key(3), (4, 14, 14, 3))

    def loss(m, x):
        return jnp.sum(jnp.sin(m(x)))

    np.testing.assert_allclose(ours(x), ref(x), rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(nnx.grad(loss, argnums=(0, 1))(ours, x)),
                    jax.tree.leaves(nnx.grad(loss, argnums=(0, 1))(ref, x))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # what conv2d does not cover goes to lax unchanged: "SAME" padding, dilation, groups
    for extra in ({"padding": "SAME"}, {"kernel_dilation": (2, 2)}):
        m = nnx.Conv(3, 6, (3, 3), conv_general_dilated=conv.conv_general_dilated,
                     rngs=nnx.Rngs(0), **extra)
        r = nnx.Conv(3, 6, (3, 3), rngs=nnx.Rngs(0), **extra)
        np.testing.assert_allclose(m(x), r(x), rtol=1e-6, atol=1e-6)


def test_scanned_training_step_compiles_to_canonical_convolutions():
    """The point of the module: inside a lax.scan body (as the trainer runs), every convolution
    of a conv_vae step, forward and both gradients, is in XLA's canonical NHWC/HWIO layout
    (dim_labels b01f_01io->b01f). JAX's own rules leave f01b_i01o->01bf / 01oi forms there,
    which XLA:CPU runs 10-50x slower."""
    import re

    from jaxvae import models

    model = models.build_model("conv_vae", key=0)
    graphdef, params = nnx.split(model)

    def loss(params, x):
        out = nnx.merge(graphdef, params)(x, eps=jnp.zeros((x.shape[0], model.spec.latent_dim)))
        return jnp.sum(out.logits ** 2) + jnp.sum(out.mean)

    def body(params, x):
        g = jax.grad(loss)(params, x)
        return jax.tree.map(lambda p, d: p - 1e-3 * d, params, g), None

    xs = jnp.zeros((2, 8, 28, 28, 1))
    hlo = jax.jit(lambda p, xs: jax.lax.scan(body, p, xs)[0]).lower(params, xs).compile().as_text()
    labels = re.findall(r"convolution\(.*?dim_labels=([\w>-]+)", hlo)
    assert len(labels) >= 10, labels  # 2 convs + 2 transposed convs, forward and backward
    assert set(labels) == {"b01f_01io->b01f"}, labels


def test_layer_equals_nnx_conv_transpose_values_and_gradients():
    """Same parameters as nnx.ConvTranspose; same outputs and parameter gradients (float32)."""
    kw = dict(strides=(2, 2), padding=((2, 2), (2, 2)), transpose_kernel=True)
    ours = conv.ConvTranspose(6, 3, (4, 4), rngs=nnx.Rngs(0), **kw)
    ref = nnx.ConvTranspose(6, 3, (4, 4), rngs=nnx.Rngs(0), **kw)
    ref.kernel[...] = jax.random.normal(jax.random.key(1), ref.kernel.shape)
    ref.bias[...] = jax.random.normal(jax.random.key(2), ref.bias.shape)
    nnx.update(ours, nnx.state(ref))
    x = jax.random.normal(jax.random.key(3), (5, 7, 7, 6))

    def loss(m, x):
        return jnp.sum(jnp.sin(m(x)))

    np.testing.assert_allclose(ours(x), ref(x), rtol=1e-6, atol=1e-6)
    g_ours = nnx.grad(loss, argnums=(0, 1))(ours, x)
    g_ref = nnx.grad(loss, argnums=(0, 1))(ref, x)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # extra leading batch dims are flattened and restored, as nnx.ConvTranspose does
    x2 = x.reshape(1, 5, 7, 7, 6)
    assert ours(x2).shape == (1, 5, 14, 14, 3)
    assert ours(x[0]).shape == (14, 14, 3)


def test_layer_rejects_what_it_does_not_implement():
    with pytest.raises(ValueError, match="explicit padding"):
        conv.ConvTranspose(2, 2, (3, 3), padding="SAME", transpose_kernel=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="transpose_kernel=True"):
        conv.ConvTranspose(2, 2, (3, 3), padding=((1, 1), (1, 1)), rngs=nnx.Rngs(0))


def _backward_convs(f, w):
    """lhs_dilation of every convolution in the backward pass of f at w (the forward pass of a
    custom_vjp function is inside its custom_vjp_call equation, not at the top level)."""
    eqns = jax.make_jaxpr(jax.grad(f))(w).jaxpr.eqns
    return [tuple(e.params["lhs_dilation"]) for e in eqns if e.primitive.name == "conv_general_dilated"]


def test_backward_pass_has_no_lhs_dilated_convolution():
    """The point of the module: both gradients are strided convs / their backward-filter
    (rhs-dilated), never a convolution over a zero-stuffed (lhs-dilated) operand, which is what
    JAX's own transpose rule for lax.conv_transpose produces (the slow path on XLA:CPU)."""
    x = jnp.ones((2, 7, 7, 4))
    w = jnp.ones((4, 4, 3, 4))
    ours = _backward_convs(
        lambda w: jnp.sum(conv.conv_transpose(x, w, (2, 2), ((2, 2), (2, 2)))), w)
    assert ours and all(d == (1, 1) for d in ours), ours
    theirs = _backward_convs(
        lambda w: jnp.sum(jax.lax.conv_transpose(x, w, (2, 2), ((2, 2), (2, 2)),
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                 transpose_kernel=True)), w)
    assert any(d != (1, 1) for d in theirs), theirs
