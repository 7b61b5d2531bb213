"""Stage-by-stage sizes of a preset, derived from its `ModelSpec`. Framework-free, no matplotlib.

`describe_spec(spec)` lists what each stage of the model holds for one example, input to
output, so the architecture diagram (`vaecommon.diagrams.plot_architecture`), summaries and
READMEs show the preset actually built, never a hard-coded picture of one preset. Flat stages
have an `int` size; convolutional stages a "CxHxW" string (`layer_units` turns either into a
count).

Per family (widths from `spec.hidden`, D = `spec.latent_dim`):
  pytorch_examples, flax_examples, pytorch_mnist_vae, leaky_vae, leaky_vae_256, simple_vae: input -> enc1..encK ->
    mean/logvar (D) -> dec1..decK (mirror) -> output. leaky_vae_256's hidden (256, 2) is the
    notebook's hidden_size and z_space_size; its mean/logvar layers then map 2 -> D (= 2).
  manning_ae, simple_ae: the same with the deterministic "code" (D) in the middle.
  manning_glasses_vae: the book's conv stack, 3 stride-2 convs (8, 16, 32 channels; the third unpadded),
    fc1 (hidden[0]), mean/std (D: the book predicts log std), fc1, fc2 back to 32 channels, and
    3 transposed convs; spatial sizes follow the PyTorch conv arithmetic of the book's layers.
  conv_vae, resnet_vae: one stride-2 conv stage per entry of `hidden` (channels; kernel 4
    stride 2 padding 1 halves H and W exactly), a linear map to mean/logvar (D), a linear map
    back to the last stage's shape, and mirrored transposed convs (k4 s2 p1, doubling) up to
    the input shape (get_spec requires H and W divisible by 4). resnet_vae adds residual blocks
    after each stage, which keep the shapes.
  burgess_vae: four stride-2 convs of hidden[0] channels (k4 s2 p1, halving), two dense layers
    (hidden[1]), mean/logvar (D), three dense layers back (hidden[1], hidden[1], the deepest
    conv map), and four transposed convs (doubling) to the input shape (H, W divisible by 16).
"""

from __future__ import annotations

import math
from typing import Union

from vaecommon.presets import ModelSpec

__all__ = ["describe_spec", "layer_units", "FAMILIES", "Size"]

Size = Union[int, str]

_MLP_VAE = ("pytorch_examples", "flax_examples", "pytorch_mnist_vae", "leaky_vae", "leaky_vae_256", "simple_vae")
_MLP_AE = ("manning_ae", "simple_ae")
_CONV = ("conv_vae", "resnet_vae")
FAMILIES = _MLP_VAE + _MLP_AE + ("manning_glasses_vae",) + _CONV + ("exemplar_vae", "burgess_vae")


def layer_units(size: Size | tuple[int, ...]) -> int:
    """Number of units of one stage: an int, a "CxHxW" string, or a shape tuple.

    Raises:
      ValueError: a string that is not "AxBx..." with positive integers, or a size < 1.
    """
    if isinstance(size, str):
        try:
            dims = [int(p) for p in size.lower().replace("×", "x").split("x")]
        except ValueError:
            raise ValueError(f"stage size {size!r} is not an int or a 'CxHxW' string") from None
    elif isinstance(size, (tuple, list)):
        dims = [int(p) for p in size]
    else:
        dims = [int(size)]
    if not dims or min(dims) < 1:
        raise ValueError(f"stage size {size!r} must be positive")
    return math.prod(dims)


def _chw(c: int, h: int, w: int) -> str:
    return f"{c}x{h}x{w}"


def _mlp(spec: ModelSpec, latent_label: str) -> list[tuple[str, Size]]:
    hidden = [int(h) for h in spec.hidden]
    if spec.family == "exemplar_vae":  # two gated layers of the one width, each way
        hidden = hidden * 2
    enc = [(f"enc{i}", h) for i, h in enumerate(hidden, 1)]
    dec = [(f"dec{i}", h) for i, h in enumerate(reversed(hidden), 1)]
    return [("input", spec.input_dim), *enc, (latent_label, spec.latent_dim), *dec,
            ("output", spec.input_dim)]


def _glasses(spec: ModelSpec) -> list[tuple[str, Size]]:
    c, h, w = spec.input_shape
    conv_s2p1 = lambda n: (n + 2 - 3) // 2 + 1  # noqa: E731  conv k3 s2 p1
    conv_s2p0 = lambda n: (n - 3) // 2 + 1  # noqa: E731  conv k3 s2 p0 (the book's conv3)
    h1, w1 = conv_s2p1(h), conv_s2p1(w)
    h2, w2 = conv_s2p1(h1), conv_s2p1(w1)
    h3, w3 = conv_s2p0(h2), conv_s2p0(w2)
    # ConvTranspose2d: out = (n - 1) * stride - 2 * padding + kernel + output_padding.
    up_p0 = lambda n: (n - 1) * 2 + 3 + 1  # noqa: E731  deconv1: k3 s2 p0 op1
    up_p1 = lambda n: (n - 1) * 2 - 2 + 3 + 1  # noqa: E731  deconv2/3: k3 s2 p1 op1
    d1 = (up_p0(h3), up_p0(w3))
    d2 = (up_p1(d1[0]), up_p1(d1[1]))
    d3 = (up_p1(d2[0]), up_p1(d2[1]))
    fc = int(spec.hidden[0])
    return [
        ("input", _chw(c, h, w)),
        ("conv1", _chw(8, h1, w1)),
        ("conv2", _chw(16, h2, w2)),
        ("conv3", _chw(32, h3, w3)),
        ("enc fc1", fc),
        ("mean/std", spec.latent_dim),
        ("dec fc1", fc),
        ("dec fc2", _chw(32, h3, w3)),
        ("deconv1", _chw(16, *d1)),
        ("deconv2", _chw(8, *d2)),
        ("output", _chw(c, *d3)),
    ]


def _conv(spec: ModelSpec) -> list[tuple[str, Size]]:
    c, h, w = spec.input_shape
    stage = "res" if spec.family == "resnet_vae" else "conv"
    shapes = []
    for ch in spec.hidden:
        h, w = h // 2, w // 2  # Conv k4 s2 p1: (n + 2 - 4) // 2 + 1 = n // 2
        shapes.append((int(ch), h, w))
    enc = [(f"{stage}{i}", _chw(*s)) for i, s in enumerate(shapes, 1)]
    # The decoder mirrors the encoder: a linear map to the deepest stage's shape, then one
    # upsampling stage per remaining encoder stage, the last producing the input shape.
    # ConvTranspose k4 s2 p1 doubles: (n - 1) * 2 - 2 + 4 = 2n.
    dec = [("dec fc", _chw(*shapes[-1]))]
    dec += [(f"up{i}", _chw(s[0], s[1], s[2])) for i, s in enumerate(reversed(shapes[:-1]), 1)]
    scale = 2 ** len(shapes)
    out = _chw(c, shapes[-1][1] * scale, shapes[-1][2] * scale)
    return [("input", _chw(*spec.input_shape)), *enc, ("mean/logvar", spec.latent_dim), *dec,
            ("output", out)]


def _burgess(spec: ModelSpec) -> list[tuple[str, Size]]:
    c, h, w = spec.input_shape
    ch, width = (int(v) for v in spec.hidden)
    convs = [(ch, h >> i, w >> i) for i in range(1, 5)]  # k4 s2 p1 halves: n -> n // 2
    enc = [(f"conv{i}", _chw(*s)) for i, s in enumerate(convs, 1)]
    dec = [(f"up{i}", _chw(*s)) for i, s in enumerate(reversed(convs[:-1]), 1)]
    return [("input", _chw(c, h, w)), *enc, ("enc fc1", width), ("enc fc2", width),
            ("mean/logvar", spec.latent_dim), ("dec fc1", width), ("dec fc2", width),
            ("dec fc3", _chw(*convs[-1])), *dec, ("output", _chw(c, h, w))]


def describe_spec(spec: ModelSpec) -> list[tuple[str, Size]]:
    """Stages of the model a spec builds, input to output, as `(label, size)` pairs.

    Args:
      spec: a `vaecommon.presets.ModelSpec` (e.g. `get_spec("pytorch_examples")`).

    Returns:
      e.g. `[("input", 784), ("enc1", 400), ("mean/logvar", 20), ("dec1", 400), ("output", 784)]`
      for pytorch_examples; conv stages are "CxHxW" strings (`layer_units` counts them). The
      latent stage is labelled "mean/logvar" (VAE), "mean/std" (the std-parameterised glasses
      VAE) or "code" (AE).

    Raises:
      ValueError: a family this function does not know (the message lists the known ones).
    """
    family = spec.family
    if family in _MLP_VAE or family == "exemplar_vae":
        return _mlp(spec, "mean/logvar")
    if family in _MLP_AE:
        return _mlp(spec, "code")
    if family == "manning_glasses_vae":
        return _glasses(spec)
    if family in _CONV:
        return _conv(spec)
    if family == "burgess_vae":
        return _burgess(spec)
    raise ValueError(
        f"describe_spec does not know model family {family!r} (preset {spec.name!r}); "
        f"known families: {', '.join(FAMILIES)}"
    )
