"""Teaching diagrams, hand-placed and drawn from the preset actually trained.

Not data plots: each lays out boxes, arrows and formulas on a blank canvas, with the shapes,
likelihood and KL form of the run's `ModelSpec` and config, so the pictures always describe
the model built. Writes one PNG each (see `vaecommon.plot_style`) and returns its path.

| figure                        | function                                                       |
|-------------------------------|----------------------------------------------------------------|
| reparameterization trick      | `plot_reparameterization_trick`                                |
| loss composition              | `plot_loss_composition`                                        |
| architecture boxes            | `plot_architecture` (+ `vaecommon.architecture.describe_spec`) |
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch, Rectangle

from vaecommon import plot_style
from vaecommon.architecture import describe_spec, layer_units
from vaecommon.plot_style import PathLike
from vaecommon.presets import ModelSpec

__all__ = [
    "plot_reparameterization_trick",
    "plot_loss_composition",
    "plot_architecture",
]


def _box(ax: Any, x: float, y: float, w: float, h: float, text: str, color: str, *,
         fontsize: float = 11, weight: str = "normal") -> tuple[float, float, float, float]:
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.008,rounding_size=0.015",
                                facecolor=color, edgecolor="0.2", alpha=0.9, lw=1.2))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize,
            weight=weight)
    return x, y, w, h


def _arrow(ax: Any, start: tuple[float, float], end: tuple[float, float], *, color: str = "0.1",
           ls: str = "-", lw: float = 1.6, rad: float = 0.0) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, color=color,
                                 ls=ls, lw=lw, connectionstyle=f"arc3,rad={rad}",
                                 shrinkA=2, shrinkB=2))


def _canvas(fig: Figure) -> Any:
    ax = fig.subplots()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    return ax


@plot_style.styled
def plot_reparameterization_trick(path: PathLike, *, latent_dim: int, input_dim: int = 784,
                                  reparam: str = "logvar", title: str | None = None) -> Path:
    """Diagram of the reparameterization trick with the model's shapes.

    The randomness enters as eps ~ N(0, I), outside the network, so z = mean + sigma * eps is a
    differentiable function of the encoder outputs (dz/dmean = 1, dz/dsigma = eps).

    Args:
      latent_dim: D, the size of mean, log-variance, eps and z.
      input_dim: flattened input size (784 for MNIST; C*H*W in general).
      reparam: "logvar" (sigma = exp(logvar / 2)), "std" (the encoder predicts log sigma, the
        glasses VAE) or "logvar_as_scale" (the leaky_vae notebook's quirk z = mean + logvar * eps,
        drawn with a warning).
      title: figure title.

    Returns:
      path. 12 x 6.5 inches.
    """
    forms = {
        "logvar": ("log \u03c3\u00b2", "\u03c3 = exp(\u00bd log \u03c3\u00b2)",
                   "z = \u03bc + \u03c3 \u2299 \u03b5"),
        "std": ("log \u03c3", "\u03c3 = exp(log \u03c3)", "z = \u03bc + \u03c3 \u2299 \u03b5"),
        "logvar_as_scale": ("log \u03c3\u00b2", "scale = log \u03c3\u00b2 (quirk)",
                            "z = \u03bc + log \u03c3\u00b2 \u2299 \u03b5"),
    }
    if reparam not in forms:
        raise ValueError(f"reparam must be one of {tuple(forms)}, got {reparam!r}")
    if latent_dim < 1 or input_dim < 1:
        raise ValueError(f"latent_dim and input_dim must be >= 1, got {latent_dim}, {input_dim}")
    scale_name, sigma_text, z_text = forms[reparam]
    shp = f"(B, {latent_dim})"
    fig = plot_style.figure(12.0, 6.5)
    ax = _canvas(fig)
    x_in = _box(ax, 0.01, 0.50, 0.09, 0.14, f"x\n(B, {input_dim})", "skyblue")
    enc = _box(ax, 0.14, 0.45, 0.14, 0.24, "Encoder\nq\u03c6(z | x)\nparameters \u03c6",
               "lightgreen")
    mu = _box(ax, 0.33, 0.63, 0.11, 0.12, f"\u03bc\n{shp}", "coral")
    lv = _box(ax, 0.33, 0.38, 0.11, 0.12, f"{scale_name}\n{shp}", "coral")
    sg = _box(ax, 0.49, 0.38, 0.14, 0.12, sigma_text, "mistyrose", fontsize=10)
    eps = _box(ax, 0.655, 0.13, 0.15, 0.14, f"\u03b5 ~ N(0, I)\n{shp}\nsampled, no gradient",
               "gold", fontsize=10)
    z = _box(ax, 0.67, 0.50, 0.12, 0.14, f"{z_text}\n{shp}", "lightskyblue", fontsize=10)
    dec = _box(ax, 0.83, 0.45, 0.14, 0.24, "Decoder\np\u03b8(x | z)\n\u2192 logits "
               f"(B, {input_dim})", "lightgreen", fontsize=10)

    def right(b): return (b[0] + b[2], b[1] + b[3] / 2)
    def left(b): return (b[0], b[1] + b[3] / 2)
    def top(b): return (b[0] + b[2] / 2, b[1] + b[3])

    _arrow(ax, right(x_in), left(enc))
    _arrow(ax, right(enc), left(mu))
    _arrow(ax, right(enc), left(lv))
    _arrow(ax, right(lv), left(sg))
    _arrow(ax, right(mu), left(z))
    _arrow(ax, right(sg), left(z))
    _arrow(ax, top(eps), (z[0] + z[2] / 2, z[1]), color="darkgoldenrod", ls="--")
    _arrow(ax, right(z), left(dec))
    # Backward pass: gradients reach mean and sigma through z; eps is a constant input.
    _arrow(ax, (z[0] + 0.03, z[1] + z[3]), (mu[0] + mu[2] * 0.6, mu[1] + mu[3]), color="firebrick",
           ls=(0, (4, 3)), lw=1.4, rad=0.35)
    ax.text(0.56, 0.84, "\u2202z/\u2202\u03bc = 1", color="firebrick", ha="center", fontsize=10)
    grad_sigma = "\u2202z/\u2202\u03c3 = \u03b5" if reparam != "logvar_as_scale" else \
        "\u2202z/\u2202 log \u03c3\u00b2 = \u03b5"
    _arrow(ax, (z[0] + 0.015, z[1]), (sg[0] + sg[2] * 0.7, sg[1]), color="firebrick",
           ls=(0, (4, 3)), lw=1.4, rad=-0.45)
    ax.text(0.60, 0.31, grad_sigma, color="firebrick", ha="center", fontsize=10)
    ax.legend(handles=[Line2D([], [], color="0.1", lw=1.6, label="forward, differentiable"),
                       Line2D([], [], color="darkgoldenrod", ls="--", lw=1.6,
                              label="random input (no gradient)"),
                       Line2D([], [], color="firebrick", ls=(0, (4, 3)), lw=1.4,
                              label="gradient path")],
              loc="upper right", bbox_to_anchor=(1.0, 0.97), frameon=False, fontsize=9)
    notes = [
        "Sampling z ~ N(\u03bc, \u03c3\u00b2) directly has no gradient with respect to \u03bc "
        "and \u03c3.",
        "Writing z = \u03bc + \u03c3 \u2299 \u03b5 moves the randomness into \u03b5, drawn "
        "outside the network:",
        "z becomes a differentiable function of the encoder outputs, so backpropagation reaches "
        "the encoder.",
    ]
    if reparam == "logvar_as_scale":
        notes = ["Reproduced quirk (leaky_vae notebook): the log-variance is used as the scale.",
                 "It can be negative and is not \u03c3 = exp(\u00bd log \u03c3\u00b2); the KL term "
                 "still assumes log \u03c3\u00b2.",
                 "Kept only for faithful reproduction; reparam='logvar' is the correct form."]
    ax.text(0.02, 0.03, "\n".join(notes), ha="left", va="bottom", fontsize=10,
            bbox=dict(facecolor="white", edgecolor="0.6", boxstyle="round,pad=0.5"))
    ax.set_title(title or f"The reparameterization trick (latent_dim D = {latent_dim}, "
                 f"batch B)", fontsize=14, weight="bold")
    return plot_style.save(fig, path)


_RECON = {
    "bernoulli": (
        r"$-\sum_{i=1}^{%(n)d}\left[x_i \log \sigma(\ell_i)"
        r" + (1 - x_i)\log(1 - \sigma(\ell_i))\right]$",
        "Bernoulli log-likelihood (binary cross-entropy) on the decoder's logits \u2113,\n"
        "computed stably from \u2113 "
        "(max(\u2113, 0) \u2212 \u2113x + log(1 + exp(\u2212|\u2113|)))",
    ),
    "continuous_bernoulli": (
        r"$\mathrm{BCE}(x, \ell) - \sum_{i=1}^{%(n)d} \log C(\sigma(\ell_i))$",
        "continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): the BCE plus\n"
        "the log-normaliser C(\u03bb) that makes it a density on [0, 1]",
    ),
    "bce_probs": (
        r"$-\sum_{i=1}^{%(n)d}\left[x_i \log p_i + (1 - x_i)\log(1 - p_i)\right]$",
        "binary cross-entropy on probabilities p = sigmoid output\n"
        "(the source's form, as F.binary_cross_entropy; logs clamped at \u2212100)",
    ),
    "mse_sum": (
        r"$\sum_{i=1}^{%(n)d} (x_i - \hat{x}_i)^2$",
        "squared error summed over pixels\n(not a normalised log-likelihood: squared intensity, "
        "not nats)",
    ),
    "mse_mean": (
        r"$\frac{1}{%(n)d}\sum_{i=1}^{%(n)d} (x_i - \hat{x}_i)^2$",
        "squared error averaged over pixels (nn.MSELoss default):\n1/%(n)d of mse_sum, "
        "so tiny next to any summed term",
    ),
    "gaussian": (
        r"$\frac{1}{2}\sum_{i=1}^{%(n)d}"
        r"\left[\frac{(x_i - \hat{x}_i)^2}{s^2} + \log 2\pi s^2\right]$",
        "Gaussian negative log-likelihood with scale s",
    ),
}
_KL = {
    "logvar": (
        r"$-\frac{1}{2}\sum_{j=1}^{%(d)s}\left(1 + \log\sigma_j^2 - \mu_j^2 - \sigma_j^2\right)$",
        "KL(N(\u03bc, \u03c3\u00b2) \u2016 N(0, I)) from the encoder's log-variance\n"
        "pulls \u03bc towards 0 and \u03c3 towards 1; regularises the latent space",
    ),
    "std": (
        r"$\sum_{j=1}^{%(d)s}"
        r"\left(\frac{\sigma_j^2 + \mu_j^2}{2} - \log\sigma_j - \frac{1}{2}\right)$",
        "KL(N(\u03bc, \u03c3\u00b2) \u2016 N(0, I)) from the encoder's standard deviation\n"
        "(the same quantity as the log-variance form, log \u03c3\u00b2 = 2 log \u03c3)",
    ),
}


@plot_style.styled
def plot_loss_composition(path: PathLike, *, likelihood: str, beta: float = 1.0,
                          kl_form: str = "logvar", input_dim: int = 784,
                          latent_dim: int | None = None, title: str | None = None) -> Path:
    """Diagram of the objective actually trained: reconstruction term + beta * KL.

    Args:
      likelihood: reconstruction term name (`losses.RECONSTRUCTION`: bernoulli,
        continuous_bernoulli, bce_probs, mse_sum, mse_mean, gaussian*); other names are drawn
        as a generic -log p(x|z).
      beta: KL weight (1 gives the negative ELBO when the reconstruction term is a NLL).
      kl_form: "logvar", "std" (encoder predicts sigma) or "none" (autoencoder: no KL term).
      input_dim: pixels summed over (784 for MNIST).
      latent_dim: D, shown in the KL sum (None: "D").
      title: figure title.

    Returns:
      path. 12 x 5.2 inches.
    """
    if kl_form not in ("logvar", "std", "none"):
        raise ValueError(f"kl_form must be 'logvar', 'std' or 'none', got {kl_form!r}")
    if not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    key = "gaussian" if likelihood.startswith("gaussian") else likelihood
    formula, what = _RECON.get(key, (r"$-\log p_\theta(x \mid z)$",
                                     f"reconstruction term {likelihood!r}"))
    formula, what = formula % {"n": input_dim}, what % {"n": input_dim}
    fig = plot_style.figure(12.0, 5.2)
    ax = _canvas(fig)
    ax.set_ylim(0.09, 0.91)
    ax.add_patch(Rectangle((0.02, 0.52), 0.56, 0.36, facecolor="lightblue", alpha=0.35, ec="0.5"))
    ax.text(0.30, 0.83, f"Reconstruction term  ({likelihood})", ha="center", fontsize=13,
            weight="bold")
    ax.text(0.30, 0.71, formula, ha="center", va="center", fontsize=14)
    ax.text(0.30, 0.58, what, ha="center", va="center", fontsize=10)
    if kl_form == "none":
        ax.add_patch(Rectangle((0.02, 0.12), 0.56, 0.36, facecolor="0.92", ec="0.6"))
        ax.text(0.30, 0.43, "No KL term", ha="center", fontsize=13, weight="bold")
        ax.text(0.30, 0.28, "an autoencoder has a deterministic code:\nno posterior, no prior, "
                "nothing to sample from", ha="center", va="center", fontsize=10)
        total = r"$\mathcal{L} = \mathrm{recon}$"
        sub = "autoencoder: the reconstruction\nterm alone"
    else:
        d = "D" if latent_dim is None else str(int(latent_dim))
        kf, kwhat = _KL[kl_form]
        ax.add_patch(Rectangle((0.02, 0.12), 0.56, 0.36, facecolor="lightgreen", alpha=0.35,
                               ec="0.5"))
        ax.text(0.30, 0.43, "KL divergence to the prior N(0, I)", ha="center", fontsize=13,
                weight="bold")
        ax.text(0.30, 0.31, kf % {"d": d}, ha="center", va="center", fontsize=14)
        ax.text(0.30, 0.18, kwhat, ha="center", va="center", fontsize=10)
        total = r"$\mathcal{L} = \mathrm{recon} + \beta \cdot \mathrm{KL}$"
        sub = f"\u03b2 = {beta:g}" + ("\n= \u2212ELBO (nats per example)\nwhen recon is a "
                                      "negative log-likelihood" if beta == 1.0 else
                                      "\n(\u03b2 \u2260 1: a weighted objective,\nnot the ELBO)")
    ax.add_patch(Rectangle((0.64, 0.12), 0.34, 0.76, facecolor="lightsalmon", alpha=0.35, ec="0.5"))
    ax.text(0.81, 0.83, "Total loss", ha="center", fontsize=13, weight="bold")
    ax.text(0.81, 0.66, total, ha="center", va="center", fontsize=16)
    ax.text(0.81, 0.48, sub, ha="center", va="center", fontsize=11)
    ax.text(0.81, 0.24, "each term is a per-example value\n(the sums above), averaged\n"
            "over the batch", ha="center", va="center", fontsize=10, color="0.3")
    _arrow(ax, (0.58, 0.70), (0.64, 0.62))
    if kl_form != "none":
        _arrow(ax, (0.58, 0.30), (0.64, 0.38))
    ax.set_title(title or "Loss composition", fontsize=14, weight="bold")
    return plot_style.save(fig, path)


def _role(label: str, i: int, n: int) -> str:
    low = label.lower()
    if i == 0:
        return "input"
    if i == n - 1:
        return "output"
    if any(k in low for k in ("mean", "logvar", "latent", "code", "std")) or low == "z":
        return "latent"
    return "hidden"


_ROLE_COLOR = {"input": "skyblue", "hidden": "lightgreen", "latent": "coral",
               "output": "lightsalmon"}


@plot_style.styled
def plot_architecture(layers: Sequence[tuple] | ModelSpec, path: PathLike, *,
                      title: str | None = None) -> Path:
    """Boxes for each stage of a model, heights on a log scale of the stage's size.

    Args:
      layers: `(label, size)` or `(label, size, role)` per stage, input first (e.g. from
        `describe_spec(spec)`); size is an int or a "CxHxW" string; role is input / hidden /
        latent / output (default: first, last, labels naming mean/logvar/code, else hidden).
        A `ModelSpec` is accepted and described with `describe_spec`.
      title: figure title (default names the spec when one is given).

    Returns:
      path. max(7, 1.5 + 1.3 * stages) x 5 inches.

    Raises:
      ValueError: fewer than 2 stages or a bad size.
    """
    if isinstance(layers, ModelSpec):
        spec = layers
        layers = describe_spec(spec)
        title = title or (f"{spec.name} ({spec.family}, {spec.kind.upper()}): "
                          f"latent_dim = {spec.latent_dim}")
    stages = [tuple(s) for s in layers]
    if len(stages) < 2:
        raise ValueError(f"an architecture needs at least 2 stages, got {len(stages)}")
    for s in stages:
        if len(s) not in (2, 3):
            raise ValueError(f"each stage must be (label, size) or (label, size, role), got {s!r}")
    n = len(stages)
    units = [layer_units(s[1]) for s in stages]
    roles = [s[2] if len(s) == 3 else _role(str(s[0]), i, n) for i, s in enumerate(stages)]
    bad = [r for r in roles if r not in _ROLE_COLOR]
    if bad:
        raise ValueError(f"unknown role {bad[0]!r}; use one of {tuple(_ROLE_COLOR)}")
    top = math.log10(max(units) + 1)
    heights = [0.6 + 3.4 * math.log10(u + 1) / top for u in units]
    fig = plot_style.figure(max(7.0, 1.5 + 1.3 * n), 5.0)
    ax = fig.subplots()
    ax.axis("off")
    gap, width = 1.0, 0.46
    for i, ((label, size, *_), h, role) in enumerate(zip(stages, heights, roles)):
        x = i * gap
        ax.add_patch(FancyBboxPatch((x - width / 2, -h / 2), width, h,
                                    boxstyle="round,pad=0.02,rounding_size=0.05",
                                    facecolor=_ROLE_COLOR[role], edgecolor="0.25", lw=1.1))
        ax.text(x, h / 2 + 0.15, str(label), ha="center", va="bottom", fontsize=10,
                weight="bold")
        size_text = str(size).replace("x", "\u00d7") if isinstance(size, str) else f"{size}"
        if isinstance(size, str) and "x" in size:
            size_text += f"\n= {units[i]:,}"
        ax.text(x, -h / 2 - 0.15, size_text, ha="center", va="top", fontsize=9)
        if i:
            ax.add_patch(FancyArrowPatch(((i - 1) * gap + width / 2 + 0.03, 0),
                                         (x - width / 2 - 0.03, 0), arrowstyle="-|>",
                                         mutation_scale=12, color="0.2", lw=1.2))
    lat = [i for i, r in enumerate(roles) if r == "latent"]
    if lat:
        y = -max(heights) / 2 - 0.95
        for a, b, name in ((0, lat[0], "encoder"), (lat[-1], n - 1, "decoder")):
            if b > a:
                ax.plot([a * gap, a * gap, b * gap, b * gap], [y + 0.12, y, y, y + 0.12],
                        color="0.45", lw=1.1)
                ax.text((a + b) * gap / 2, y - 0.1, name, ha="center", va="top", fontsize=10,
                        color="0.3", style="italic")
    ax.set_xlim(-0.7, (n - 1) * gap + 0.7)
    ax.set_ylim(-max(heights) / 2 - 1.45, max(heights) / 2 + 0.6)
    fig.legend(handles=[Patch(facecolor=c, edgecolor="0.25", label=r) for r, c in
                        _ROLE_COLOR.items()], loc="outside lower center", ncol=4, frameon=False,
               fontsize=9)
    ax.set_title(title or "Architecture", fontsize=12, weight="bold")
    return plot_style.save(fig, path)
