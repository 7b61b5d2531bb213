"""The trainers' optional logvar clamp (`TrainConfig.logvar_clamp`) computes the same in both.

The clamp acts before the reparameterization (`jaxvae.train.forward` / `torchvae.train.forward`),
so z, the logits and the KL all change; both twins must agree on each, with clamped and
unclamped entries present in the batch.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxvae import convert as jconvert
from jaxvae import train as jtrain
from parity_tests.asserts import TOL, assert_close
from parity_tests.twins import draw_inputs, make_pair, to_nchw, to_nhwc, to_torch
from torchvae import convert as tconvert
from torchvae import train as ttrain


@pytest.mark.parametrize("name", ["pytorch_examples", "simple_vae", "conv_vae"])
def test_logvar_clamp_forward_matches(name):
    pair = make_pair(name, seed=3)
    spec = pair.spec
    rng = np.random.default_rng(0)
    x, eps, _ = draw_inputs(spec, 8, rng)
    with torch.no_grad():  # push the logvar head so that part of the batch is clamped
        head = {"pytorch_examples": "fc22", "simple_vae": "fc_logvar", "conv_vae": "fc_logvar"}[name]
        getattr(pair.torch_model, head).bias.add_(torch.linspace(-8, 8, spec.latent_dim))
    jmodel = jconvert.from_canonical(name, tconvert.to_canonical(pair.torch_model))
    pair.torch_model.eval()
    jmodel.eval()
    with torch.no_grad():
        t_out = ttrain.forward(pair.torch_model, to_torch(x), to_torch(eps), 2.0)
    j_out = jtrain.forward(jmodel, jnp.asarray(to_nhwc(x)), eps, 2.0)
    lv = t_out.logvar.numpy()
    assert lv.min() == -2.0 and lv.max() == 2.0, "the batch must reach both clamp bounds"
    assert ((lv > -2) & (lv < 2)).any(), "and keep some unclamped entries"
    for field in ("mean", "logvar", "z", "logits"):
        assert_close(to_nchw(getattr(j_out, field)),
                     getattr(t_out, field).numpy(), name=f"{name}.{field}", **TOL["forward"])
