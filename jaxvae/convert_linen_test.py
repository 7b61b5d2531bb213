"""Flax Linen params trees in: `jaxvae.convert.linen_to_canonical` / `load_linen_file` and
`scripts/convert.py` on a `flax.serialization` msgpack file and on an Orbax checkpoint folder.

The reference is a Linen module written here with the structure of google/flax
examples/vae/models.py (Encoder: Dense(500, 'fc1') -> relu -> Dense(latents, 'fc2_mean') and
Dense(latents, 'fc2_logvar'); Decoder: Dense(500, 'fc1') -> relu -> Dense(784, 'fc2'); VAE.setup
makes `encoder` and `decoder`; z = mean + eps * exp(0.5 * logvar)). Both models run the same
float32 operations in the same order (dot_general + bias, relu, exp, multiply, add) on the same
numbers, so the converted NNX model must return the Linen model's outputs bit for bit (atol 0).
"""

from __future__ import annotations

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import linen as nn
from flax import serialization

from jaxvae import convert
from vaecommon import presets, runinfo
from vaecommon.commands import convert as convert_cmd
from vaecommon.weights import WeightsFileError, WeightsMismatchError

jax.config.update("jax_default_matmul_precision", "highest")


# ---- google/flax examples/vae's model (structure as in examples/vae/models.py) -----------------

class Encoder(nn.Module):
    latents: int

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(500, name="fc1")(x)
        x = nn.relu(x)
        mean_x = nn.Dense(self.latents, name="fc2_mean")(x)
        logvar_x = nn.Dense(self.latents, name="fc2_logvar")(x)
        return mean_x, logvar_x


class Decoder(nn.Module):
    @nn.compact
    def __call__(self, z):
        z = nn.Dense(500, name="fc1")(z)
        z = nn.relu(z)
        return nn.Dense(784, name="fc2")(z)


class VAE(nn.Module):
    latents: int = 20

    def setup(self):
        self.encoder = Encoder(self.latents)
        self.decoder = Decoder()

    def __call__(self, x, z_rng):
        mean, logvar = self.encoder(x)
        z = reparameterize(z_rng, mean, logvar)
        return self.decoder(z), mean, logvar

    def generate(self, z):
        return nn.sigmoid(self.decoder(z))


def reparameterize(rng, mean, logvar):
    std = jnp.exp(0.5 * logvar)
    eps = jax.random.normal(rng, logvar.shape)
    return mean + eps * std


LATENTS = 20  # the example's default (and flax_examples')


@pytest.fixture(scope="module")
def linen():
    """(params, x, z_rng): the Linen VAE initialised as the example does, and a batch."""
    key, z_rng = jax.random.split(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (8, 784))
    params = VAE(LATENTS).init(key, jnp.ones((2, 784)), z_rng)["params"]
    return jax.device_get(params), x, jax.random.key(3)


def _assert_same_outputs(canonical, params, x, z_rng, latents=LATENTS):
    """The converted NNX model and the Linen module: same logits, mean, logvar, z, samples."""
    model = convert.from_canonical("flax_examples", canonical, latent_dim=latents)
    model.eval()
    recon, mean, logvar = VAE(latents).apply({"params": params}, x, z_rng)
    eps = jax.random.normal(z_rng, logvar.shape)  # the eps the example's reparameterize drew
    out = model(x, eps=eps)
    np.testing.assert_array_equal(np.asarray(out.mean), np.asarray(mean))
    np.testing.assert_array_equal(np.asarray(out.logvar), np.asarray(logvar))
    np.testing.assert_array_equal(np.asarray(out.z), np.asarray(mean + eps * jnp.exp(0.5 * logvar)))
    np.testing.assert_array_equal(np.asarray(out.logits), np.asarray(recon))
    z = jax.random.normal(jax.random.key(4), (5, latents))
    np.testing.assert_array_equal(np.asarray(model.generate(z)),
                                  np.asarray(VAE(latents).apply({"params": params}, z,
                                                                method=VAE.generate)))


def _save_orbax(path, tree, how):
    if how == "standard":
        c = ocp.StandardCheckpointer()
        c.save(path.absolute(), tree)
        c.wait_until_finished()
    else:
        ocp.PyTreeCheckpointer().save(path.absolute(), tree)
    return path


# ---- the mapping -----------------------------------------------------------------------------------

def test_mapping_is_the_dense_transpose(linen):
    """Hand-stated: encoder/fc1/kernel (784, 500) -> encoder.fc1.weight (500, 784), its
    transpose; biases unchanged; exactly the canonical names of flax_examples."""
    params, _, _ = linen
    w = convert.linen_to_canonical(params, "flax_examples")
    assert sorted(w) == sorted(f"{m}.{leaf}" for m in ("encoder.fc1", "encoder.fc2_mean",
                                                         "encoder.fc2_logvar", "decoder.fc1",
                                                         "decoder.fc2") for leaf in ("weight", "bias"))
    for path in ("encoder/fc1", "encoder/fc2_mean", "encoder/fc2_logvar", "decoder/fc1", "decoder/fc2"):
        enc = params
        for k in path.split("/"):
            enc = enc[k]
        name = path.replace("/", ".")
        np.testing.assert_array_equal(w[f"{name}.weight"], np.asarray(enc["kernel"]).T)
        np.testing.assert_array_equal(w[f"{name}.bias"], np.asarray(enc["bias"]))
        assert w[f"{name}.weight"].dtype == np.float32 and w[f"{name}.weight"].flags.c_contiguous
    assert w["encoder.fc1.weight"].shape == (500, 784)
    # the {'params': ...} wrapper gives the same weights
    w2 = convert.linen_to_canonical({"params": params}, "flax_examples")
    assert all(np.array_equal(w[k], w2[k]) for k in w)


def test_linen_and_converted_model_agree_bit_for_bit(linen):
    params, x, z_rng = linen
    _assert_same_outputs(convert.linen_to_canonical(params, "flax_examples"), params, x, z_rng)


def test_latent_override():
    """--override latent_dim=2 sets the expected shapes (the example's `latents` field)."""
    key = jax.random.key(5)
    params = jax.device_get(VAE(2).init(key, jnp.ones((1, 784)), key)["params"])
    with pytest.raises(WeightsMismatchError,
                       match=r"encoder/fc2_mean/kernel: preset needs \(500, 20\), got \(500, 2\)"):
        convert.linen_to_canonical(params, "flax_examples")
    w = convert.linen_to_canonical(params, "flax_examples", latent_dim=2)
    _assert_same_outputs(w, params, jnp.full((3, 784), 0.5), jax.random.key(6), latents=2)


# ---- files: msgpack and Orbax -------------------------------------------------------------------

@pytest.mark.parametrize("wrapped", [False, True], ids=["params", "variables"])
def test_msgpack_file(linen, tmp_path, wrapped):
    params, x, z_rng = linen
    f = tmp_path / "variables.msgpack"
    f.write_bytes(serialization.to_bytes({"params": params} if wrapped else params))
    w = convert.load_linen_file(f, "flax_examples")
    _assert_same_outputs(w, params, x, z_rng)


@pytest.mark.parametrize("how", ["standard", "pytree"])
@pytest.mark.parametrize("wrapped", [False, True], ids=["params", "variables"])
def test_orbax_checkpoint(linen, tmp_path, how, wrapped):
    params, x, z_rng = linen
    d = _save_orbax(tmp_path / "ckpt", {"params": params} if wrapped else params, how)
    w = convert.load_linen_file(d, "flax_examples")
    _assert_same_outputs(w, params, x, z_rng)


def test_orbax_checkpoint_manager_step_with_one_item(linen, tmp_path):
    """A CheckpointManager step folder (<step>/default) is read through its one item."""
    params, x, z_rng = linen
    mgr = ocp.CheckpointManager((tmp_path / "mgr").absolute())
    mgr.save(7, args=ocp.args.StandardSave(params))
    mgr.wait_until_finished()
    mgr.close()
    _assert_same_outputs(convert.load_linen_file(tmp_path / "mgr" / "7", "flax_examples"),
                         params, x, z_rng)


# ---- bad trees and bad files ----------------------------------------------------------------------

def _one_error_line(capsys, *argv) -> str:
    os.environ.pop("JAXVAE_TRACEBACK", None)
    with pytest.raises(SystemExit) as e:
        convert_cmd.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def _bad_trees(params):
    p = jax.tree.map(np.asarray, params)
    missing = jax.tree.map(lambda a: a, p)
    del missing["decoder"]["fc2"]["bias"]
    extra = jax.tree.map(lambda a: a, p)
    extra["encoder"]["fc3"] = {"kernel": np.zeros((500, 20), np.float32)}
    shaped = jax.tree.map(lambda a: a, p)
    shaped["encoder"]["fc2_logvar"]["kernel"] = np.zeros((500, 10), np.float32)
    return {
        "missing": (missing, r"missing leaves \[{pre}decoder/fc2/bias\]"),
        "extra": (extra, r"unexpected leaves \[{pre}encoder/fc3/kernel\]"),
        "shape": (shaped, r"shape mismatches: {pre}encoder/fc2_logvar/kernel: preset needs "
                          r"\(500, 20\), got \(500, 10\)"),
    }


@pytest.mark.parametrize("case", ["missing", "extra", "shape"])
@pytest.mark.parametrize("fmt", ["msgpack", "orbax"])
@pytest.mark.parametrize("wrapped", [False, True], ids=["params", "variables"])
def test_bad_trees_name_the_leaf_and_the_file(linen, tmp_path, capsys, case, fmt, wrapped):
    tree, pattern = _bad_trees(linen[0])[case]
    pattern = pattern.format(pre="params/" if wrapped else "")
    tree = {"params": tree} if wrapped else tree
    if fmt == "msgpack":
        src = tmp_path / "v.msgpack"
        src.write_bytes(serialization.to_bytes(tree))
    else:
        src = _save_orbax(tmp_path / "ckpt", tree, "standard")
    with pytest.raises(WeightsMismatchError, match=rf"^{src}: the Linen params tree does not fit "
                                                   rf"preset 'flax_examples': {pattern}$"):
        convert.load_linen_file(src, "flax_examples")
    # the command: one line on stderr, exit 2, nothing written
    err = _one_error_line(capsys, src, "--model", "flax_examples")
    assert err.startswith("convert: error: ") and str(src) in err
    assert not list(tmp_path.glob("*.safetensors"))


def test_a_training_state_is_refused_with_a_hint(linen, tmp_path):
    params = linen[0]
    f = tmp_path / "state.msgpack"
    f.write_bytes(serialization.to_bytes({"step": 3, "params": params,
                                          "opt_state": {"mu": params, "nu": params}}))
    with pytest.raises(WeightsMismatchError, match=r"unexpected leaves \[.*\.\.\. and \d+ more\] "
                                                   r"\(the tree holds more than the params: save "
                                                   r"state.params"):
        convert.load_linen_file(f, "flax_examples")


def test_integer_leaf_is_refused(linen):
    p = jax.tree.map(np.asarray, linen[0])
    p["decoder"]["fc1"]["bias"] = np.zeros(500, np.int32)
    with pytest.raises(WeightsMismatchError, match=r"decoder/fc1/bias is int32, expected a floating"):
        convert.linen_to_canonical(p, "flax_examples")


def test_preset_without_linen_layout(linen, tmp_path):
    f = tmp_path / "v.msgpack"
    f.write_bytes(serialization.to_bytes(linen[0]))
    with pytest.raises(WeightsMismatchError, match="no Linen layout for preset 'pytorch_examples'"):
        convert.load_linen_file(f, "pytorch_examples")


@pytest.mark.parametrize("content,message", [
    (b"this is a text file", r"is not a flax.serialization msgpack file \(ExtraData"),
    (b"", r"is not a flax.serialization msgpack file \(ValueError: Unpack failed"),
    (serialization.msgpack_serialize([1, 2, 3]), r"does not hold a Linen params tree: its top level "
                                                 r"is a list, not a dict"),
])
def test_not_a_msgpack_file(tmp_path, capsys, content, message):
    f = tmp_path / "v.msgpack"
    f.write_bytes(content)
    with pytest.raises(WeightsFileError, match=message):
        convert.load_linen_file(f, "flax_examples")
    assert str(f) in _one_error_line(capsys, f, "--model", "flax_examples")


def test_not_an_orbax_checkpoint_nor_a_known_file(tmp_path, capsys):
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "_CHECKPOINT_METADATA").write_text("{}")  # looks like one, holds no tree
    err = _one_error_line(capsys, d, "--model", "flax_examples")
    assert re.search(r"ckpt is not an Orbax checkpoint of a params tree \(no _METADATA\)", err), err
    (tmp_path / "w.bin").write_bytes(b"x")
    err = _one_error_line(capsys, tmp_path / "w.bin", "--model", "flax_examples")
    assert re.search(r"unknown weights file type '.bin'; .*a Flax Linen params msgpack", err), err


def test_damaged_orbax_data_is_one_line(linen, tmp_path, capsys):
    d = _save_orbax(tmp_path / "ckpt", linen[0], "standard")
    data = [f for f in d.glob("ocdbt.process_*/d/*") if f.is_file()]
    assert data
    for f in data:  # the arrays' bytes gone, the metadata intact
        f.write_bytes(b"")
    err = _one_error_line(capsys, d, "--model", "flax_examples")
    assert "ckpt: cannot read the Orbax checkpoint (" in err, err


# ---- the command: canonical weights and run folders ------------------------------------------------

def test_command_writes_canonical_weights_and_a_run_folder(linen, tmp_path, capsys):
    params, x, z_rng = linen
    f = tmp_path / "variables.msgpack"
    f.write_bytes(serialization.to_bytes({"params": params}))
    assert convert_cmd.main([str(f), "--model", "flax_examples"]) == 0
    out = json.loads(capsys.readouterr().out)
    st = tmp_path / "variables.safetensors"
    assert out["out"] == str(st) and out["input_kind"] == "linen" and out["model"] == "flax_examples"
    assert out["values"] == presets.PRESETS["flax_examples"].params
    w, meta = runinfo.read_canonical_weights(st)
    assert meta["model"] == "flax_examples" and meta["converted_from"] == str(f)
    _assert_same_outputs(w, params, x, z_rng)
    # the same tree from Orbax, into a JAX run folder: the commands' loader gives the same model
    d = _save_orbax(tmp_path / "linen_ckpt", params, "standard")
    assert convert_cmd.main([str(d), "--model", "flax_examples", "--to-run-folder",
                             str(tmp_path / "run")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["framework"] == "jax" and "out" not in out
    from jaxvae import api

    model, cfg, _ = api.load_run(tmp_path / "run")
    assert cfg.model == "flax_examples"
    run_w = api.canonical_weights(model)
    assert all(np.array_equal(run_w[k], w[k]) for k in w)
