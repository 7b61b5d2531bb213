"""`parity_tests.pairs` on model pairs defined here (no presets): a small VAE pair agrees in every
check, and deliberately wrong pairs fail with the report naming the tensor at fault."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from flax import nnx
from torch import nn

from jaxvae.models import BatchNorm
from parity_tests.pairs import check_pair, assert_pair_agrees

D, H, Z, B = 16, 12, 3, 8


# ---- a small VAE, written once per framework as a user would ---------------------------------

class TorchVAE(nn.Module):
    def __init__(self, *, bias: bool = True):
        super().__init__()
        # no bias before the BatchNorm: its gradient is exactly 0 in train mode, and Adam turns
        # the float noise around 0 into lr-sized steps (see "Adam" in parity_tests/README.md)
        self.enc = nn.Sequential(nn.Linear(D, H, bias=False), nn.BatchNorm1d(H), nn.ReLU())
        self.hidden = nn.Linear(H, H, bias=bias)      # square: a transposed kernel fits its shape
        self.mean = nn.Linear(H, Z)
        self.logvar = nn.Linear(H, Z)
        self.dec = nn.Sequential(nn.Linear(Z, H), nn.ReLU(), nn.Linear(H, D))

    def forward(self, x, eps):
        h = torch.relu(self.hidden(self.enc(x)))
        mean, logvar = self.mean(h), self.logvar(h)
        z = mean + torch.exp(0.5 * logvar) * eps
        return self.dec(z), mean, logvar


class JaxVAE(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs, bias: bool = True):
        self.enc = nnx.Sequential(nnx.Linear(D, H, use_bias=False, rngs=rngs), BatchNorm(H), nnx.relu)
        self.hidden = nnx.Linear(H, H, use_bias=bias, rngs=rngs)
        self.mean = nnx.Linear(H, Z, rngs=rngs)
        self.logvar = nnx.Linear(H, Z, rngs=rngs)
        self.dec = nnx.Sequential(nnx.Linear(Z, H, rngs=rngs), nnx.relu, nnx.Linear(H, D, rngs=rngs))

    def __call__(self, x, eps):
        h = jax.nn.relu(self.hidden(self.enc(x)))
        mean, logvar = self.mean(h), self.logvar(h)
        z = mean + jnp.exp(0.5 * logvar) * eps
        return self.dec(z), mean, logvar


def torch_elbo(model, x, eps):
    logits, mean, logvar = model(x, eps)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
    kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum(1)
    return (recon + kl).mean()


def jax_elbo(model, x, eps):
    logits, mean, logvar = model(x, eps)
    recon = optax.sigmoid_binary_cross_entropy(logits, x).sum(1)
    kl = 0.5 * (mean ** 2 + jnp.exp(logvar) - 1 - logvar).sum(1)
    return (recon + kl).mean()


LOSS = (torch_elbo, jax_elbo)
ADAM = (lambda ps: torch.optim.Adam(ps, lr=1e-2), optax.adam(1e-2))


def vae_pair(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return TorchVAE(**kw), JaxVAE(rngs=nnx.Rngs(seed + 1), **kw)


def inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(size=(B, D)).astype(np.float32),
            rng.normal(size=(B, Z)).astype(np.float32))


def failed(report, check: str | None = None) -> set[str]:
    return {n for c, n in report.failed_names if check is None or c == check}


# ---- an agreeing pair -------------------------------------------------------------------------------

def test_custom_vae_pair_agrees_in_forward_loss_gradients_and_adam_steps(tmp_path):
    tm, jm = vae_pair()
    r = assert_pair_agrees(tm, jm, inputs(), loss=LOSS, optimizer=ADAM, steps=3, name="my_vae")
    checks = list(dict.fromkeys(row["check"] for row in r.rows()))
    assert checks == ["weights", "forward", "forward_train", "loss", "gradients",
                      "optimizer_steps"], checks
    names = {m.name for m in r.measurements}
    # every parameter's gradient, every buffer after the train pass, every tensor after 3 steps
    assert {n for n, _ in tm.named_parameters()} <= names
    assert {"enc.1.running_mean", "enc.1.running_var", "enc.1.num_batches_tracked"} <= names
    assert "after 3 steps: enc.1.running_var" in names and "loss at step 2" in names
    # the user's torch model is untouched (the checks trained copies); the NNX one holds its weights
    assert int(tm.enc[1].num_batches_tracked) == 0
    np.testing.assert_array_equal(np.asarray(jm.hidden.kernel[...]), tm.hidden.weight.detach().numpy().T)
    # the parity report's format: table, Markdown and JSON
    out = io.StringIO()
    assert r.write(out=out, json_path=tmp_path / "p.json", markdown_path=tmp_path / "p.md")
    text = out.getvalue()
    assert re.search(r"my_vae\s+gradients\s+gradients\s+\d+", text), text
    assert "0 failed" in text
    doc = json.loads((tmp_path / "p.json").read_text())
    assert set(doc) == {"ok", "wall_s", "environment", "rows", "failures", "items", "measurements"}
    assert doc["ok"] is True and doc == json.loads(json.dumps(r.to_json()))
    assert (tmp_path / "p.md").read_text().startswith("| preset | check |")


def test_sgd_steps_use_the_sgd_row():
    tm, jm = vae_pair(1)
    r = assert_pair_agrees(tm, jm, inputs(1), loss=LOSS, steps=2,
                           optimizer=(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
                                      optax.sgd(0.1, momentum=0.9)))
    assert {m.tol for m in r.measurements if m.check == "optimizer_steps"} == {
        "sgd_steps", "model_loss_terms"}


class TorchConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1)), self.conv(x)


class JaxConv(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(2, 4, (3, 3), strides=2, padding=1, rngs=rngs)
        self.bn = BatchNorm(4)
        self.fc = nnx.Linear(4 * 3 * 3, 5, rngs=rngs)

    def __call__(self, x):                      # NHWC
        h = jax.nn.relu(self.bn(self.conv(x)))
        h = h.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)   # flatten in torch's (C, H, W) order
        return self.fc(h), self.conv(x)


def test_conv_pair_with_nchw_inputs_agrees():
    torch.manual_seed(7)
    x = np.random.default_rng(7).uniform(size=(B, 2, 6, 6)).astype(np.float32)
    loss = (lambda m, x: m(x)[0].square().mean(), lambda m, x: jnp.square(m(x)[0]).mean())
    r = assert_pair_agrees(TorchConv(), JaxConv(nnx.Rngs(0)), x, loss=loss,
                           optimizer=(lambda ps: torch.optim.SGD(ps, lr=0.1), optax.sgd(0.1)))
    # the rank-4 output came back from NHWC and matched in torch's layout
    assert any(m.name == "output[1]" and m.passed for m in r.measurements if m.check == "forward")


# ---- deliberately wrong pairs ------------------------------------------------------------------------

def explicit_mapping(model: nn.Module, **overrides):
    """The canonical rules written out as an explicit mapping (so a test can break one entry)."""
    out = {}
    for name, t in model.state_dict().items():
        mod, leaf = name.rsplit(".", 1)
        parts = mod.split(".")
        path = ".".join(f"layers.{p}" if p.isdigit() else p for p in parts)
        jleaf = {"weight": "kernel" if t.ndim == 2 else "scale", "running_mean": "mean",
                 "running_var": "var"}.get(leaf, leaf)
        out[name] = (f"{path}.{jleaf}", "linear" if t.ndim == 2 else "same")
    out.update(overrides)
    return out


def test_the_explicit_mapping_of_the_canonical_rules_agrees():
    tm, jm = vae_pair(2)
    assert_pair_agrees(tm, jm, inputs(2), mapping=explicit_mapping(tm), loss=LOSS)


def test_a_transposed_kernel_is_named():
    tm, jm = vae_pair(3)
    mapping = explicit_mapping(tm, **{"hidden.weight": ("hidden.kernel", "same")})  # no transpose
    r = check_pair(tm, jm, inputs(3), mapping=mapping, loss=LOSS)
    assert not r.ok
    # the forward fails, and run alone only the square layer disagrees
    assert "output[0]" in failed(r, "forward")
    assert failed(r, "layers") == {"layer hidden (hidden.weight, hidden.bias)"}, r.table()
    layers = {m.name for m in r.measurements if m.check == "layers"}
    assert "layer mean (mean.weight, mean.bias)" in layers and len(layers) == 7
    assert failed(r, "layers_train") == failed(r, "layers")


@pytest.mark.parametrize("torch_bias", [True, False], ids=["torch_has_bias", "nnx_has_bias"])
def test_a_missing_bias_is_named(torch_bias):
    torch.manual_seed(4)
    tm = TorchVAE(bias=torch_bias)
    jm = JaxVAE(rngs=nnx.Rngs(5), bias=not torch_bias)
    r = check_pair(tm, jm, inputs(4), loss=LOSS)
    assert failed(r) == {"hidden.bias"}, r.table()
    assert {row["check"] for row in r.rows()} == {"weights"}  # nothing else runs
    with pytest.raises(AssertionError, match=r"hidden\.bias"):
        assert_pair_agrees(tm, jm, inputs(4), loss=LOSS)


# BatchNorm pairs: torch BatchNorm1d against jaxvae.models.BatchNorm (torch's conventions) and
# against nnx.BatchNorm (Flax's: momentum is the weight of the OLD statistic, and the running
# variance is updated with the biased batch variance).

class TorchBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(D, H)
        self.bn = nn.BatchNorm1d(H, momentum=0.1)

    def forward(self, x):
        return self.bn(self.fc(x))


class JaxBN(nnx.Module):
    def __init__(self, bn):
        self.fc = nnx.Linear(D, H, rngs=nnx.Rngs(0))
        self.bn = bn

    def __call__(self, x):
        return self.bn(self.fc(x))


FLAX_BN_MAPPING = {"fc.weight": ("fc.kernel", "linear"), "fc.bias": "fc.bias",
                   "bn.weight": "bn.scale", "bn.bias": "bn.bias", "bn.running_mean": "bn.mean",
                   "bn.running_var": "bn.var", "bn.num_batches_tracked": None}


def bn_check(jax_bn, mapping=None):
    """(report, the batch's float64 mean and biased variance per channel, the batch size)."""
    torch.manual_seed(6)
    tm = TorchBN()
    x = np.random.default_rng(6).normal(size=(B, D)).astype(np.float32)
    h = x.astype(np.float64) @ tm.fc.weight.detach().numpy().T.astype(np.float64) \
        + tm.fc.bias.detach().numpy()                                  # (B, H), float64
    return check_pair(tm, JaxBN(jax_bn), x, mapping=mapping), h.mean(0), h.var(0), B


def max_abs(report, name: str, check: str = "forward_train") -> float:
    return next(m.max_abs for m in report.measurements if m.check == check and m.name == name)


# Hand-derived: both sides start at mean 0, var 1; after one train-mode batch torch holds
# 0.1 * mean and 0.9 + 0.1 * var * n / (n - 1) (unbiased), so each wrong convention leaves a
# known difference (rtol 1e-4: float32 statistics against the float64 ones here).

def test_batchnorm_with_torch_conventions_agrees():
    r, *_ = bn_check(BatchNorm(H, momentum=0.1))
    assert r.ok, r.table() + "\n" + "\n".join(r.failures)


def test_batchnorm_momentum_of_the_wrong_convention_is_named():
    # torch 0.1 == jaxvae.models.BatchNorm 0.1 (torch's convention); jaxvae 0.9 is the wrong pair:
    # it holds 0.9 * mean and 0.1 + 0.9 * unbiased var
    r, mean, var, n = bn_check(BatchNorm(H, momentum=0.9))
    assert failed(r) == {"bn.running_mean", "bn.running_var"}, r.table()
    np.testing.assert_allclose(max_abs(r, "bn.running_mean"), np.max(0.8 * np.abs(mean)), rtol=1e-4)
    np.testing.assert_allclose(max_abs(r, "bn.running_var"),
                               np.max(0.8 * np.abs(1 - var * n / (n - 1))), rtol=1e-4)
    # torch 0.1 == nnx.BatchNorm 0.9 (Flax's convention: the weight of the old value); nnx 0.1
    # holds 0.9 * mean
    r, mean, _, _ = bn_check(nnx.BatchNorm(H, momentum=0.1, use_fast_variance=False,
                                           rngs=nnx.Rngs(0)), FLAX_BN_MAPPING)
    assert "bn.running_mean" in failed(r, "forward_train"), r.table()
    np.testing.assert_allclose(max_abs(r, "bn.running_mean"), np.max(0.8 * np.abs(mean)), rtol=1e-4)


def test_biased_running_variance_is_named():
    # nnx.BatchNorm at the right momentum (0.9): the mean agrees; the variance is updated with the
    # biased batch variance, 0.9 + 0.1 * var, short of torch's by 0.1 * var / (n - 1)
    r, _, var, n = bn_check(nnx.BatchNorm(H, momentum=0.9, use_fast_variance=False,
                                          rngs=nnx.Rngs(0)), FLAX_BN_MAPPING)
    assert failed(r) == {"bn.running_var"}, r.table()
    m = next(m for m in r.measurements if m.name == "bn.running_var" and not m.passed)
    assert m.check == "forward_train" and "bn.running_var" in m.message
    np.testing.assert_allclose(m.max_abs, np.max(0.1 * var / (n - 1)), rtol=1e-4)


def test_bad_arguments_are_one_line_errors():
    tm, jm = vae_pair()
    with pytest.raises(ValueError, match="needs a loss pair"):
        check_pair(tm, jm, inputs(), optimizer=ADAM)
    with pytest.raises(ValueError, match="unknown rule 'transpose'"):
        check_pair(tm, jm, inputs(), mapping={"hidden.weight": ("hidden.kernel", "transpose")})
    with pytest.raises(ValueError, match=r"mapping\['hidden.weight'\]: expected an NNX path"):
        check_pair(tm, jm, inputs(), mapping={"hidden.weight": ("hidden", "kernel", "linear")})
    r = check_pair(tm, jm, inputs(), mapping=explicit_mapping(tm, **{"mean.bias": "mean"}))
    assert failed(r) == {"mapping"} and "no variable at mean" in r.failures[0]  # a module
    r = check_pair(tm, jm, inputs(), mapping=explicit_mapping(tm, **{"mean.bias": "means.bias"}))
    assert failed(r) == {"mapping"} and "no variable at means.bias" in r.failures[0]
    # a torch tensor left out of the mapping: named on both sides
    mapping = explicit_mapping(tm)
    del mapping["mean.bias"]
    r = check_pair(tm, jm, inputs(), mapping=mapping)
    assert failed(r) == {"mean.bias"}, r.failures
    assert any("torch tensor mean.bias (3,) has no NNX variable" in f for f in r.failures)
    assert any("NNX variable mean.bias has no torch tensor" in f for f in r.failures)


def test_a_layer_without_a_canonical_rule_asks_for_a_mapping():
    r, *_ = bn_check(nnx.BatchNorm(H, momentum=0.9, rngs=nnx.Rngs(0)))  # default mapping
    assert failed(r) == {"mapping"}, r.failures
    assert "no conversion rule for variable bn." in r.failures[0]
    assert r.failures[0].endswith("or pass an explicit mapping")


# ---- the README example ------------------------------------------------------------------------------

README = Path(__file__).with_name("README.md")


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Your own model pair", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, f"expected one python block in the README section, found {len(blocks)}"
    return blocks[0]


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # it writes my_vae_parity.json into the working directory
    namespace = {"__name__": "__main__"}
    exec(compile(readme_example(), str(README), "exec"), namespace)
    assert namespace["report"].ok
    out = capsys.readouterr().out
    assert re.search(r"my_vae\s+optimizer_steps\s+adam_steps\s+10 ", out), out
    assert json.loads((tmp_path / "my_vae_parity.json").read_text())["ok"] is True
