"""`summary.md` of a run folder: what data was used, the final numbers, wall time, versions.

Framework-free; both trainers call `render_summary` with plain dicts.
"""

from __future__ import annotations

from typing import Any

from vaecommon.objectives import nll_meaning_of

__all__ = ["render_summary"]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def render_summary(*, framework: str, cfg: dict, spec: dict, data: dict, train: dict,
                   test: dict, wall_s: float, versions: dict,
                   seconds: dict[str, float] | None = None) -> str:
    """Markdown text of a run summary."""
    lines = [
        f"# Run summary: `{cfg['model']}` ({framework})",
        "",
        f"- source model: {spec.get('source', '?')}",
        f"- objective: `{cfg['objective']}` {cfg.get('objective_params') or ''}, "
        f"likelihood `{cfg['likelihood']}`, reduction `{cfg['reduction']}`",
        f"- data: `{data.get('dataset')}` from source `{data.get('source')}` "
        f"({data.get('path')}), {data.get('n', '?')} training examples, "
        f"binarization `{cfg['binarization']}`",
    ]
    if data.get("note"):
        lines.append(f"- data note: {data['note']}")
    lines += [
        f"- optimizer: {cfg['optimizer']} lr {cfg['lr']} wd {cfg['weight_decay']}, "
        f"batch {cfg['batch_size']}, {cfg['epochs']} epochs, seed {cfg['seed']}",
        f"- wall time: {wall_s:.1f} s"
        + (" (" + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items() if v >= 0.05) + ")"
           if seconds else ""),
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for k in ("epoch", "loss", "recon", "kl", "examples_per_s"):
        if k in train:
            lines.append(f"| train {k} | {_fmt(train[k])} |")
    for k in ("best_epoch", "epochs_trained", "loss", "recon", "kl", "bits_per_dim", "nll",
              "nll_stderr", "nll_samples", "nll_bits_per_dim", "active_units"):
        if k in test:
            name = "test -ELBO (nats/example)" if k == "loss" else f"test {k}"
            if k == "nll":
                name += f" ({nll_meaning_of(cfg)[1]})"
            lines.append(f"| {name} | {_fmt(test[k])} |")
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())), ""]
    return "\n".join(lines)
