"""`summary.md` of a run folder: what data was used, the final numbers, wall time, versions.

Framework-free; both trainers call `render_summary` with plain dicts.
"""

from __future__ import annotations

from typing import Any

from vaecommon.objectives import nll_meaning_of

__all__ = ["render_summary", "collapse_note", "ACTIVE_THRESHOLD"]

ACTIVE_THRESHOLD = 0.01
"""A latent unit is active when Var_x E_q[z_d] exceeds this (Burda et al. 2016)."""


def collapse_note(record: dict) -> str | None:
    """One line when latent units have collapsed in a record with `active_units` and
    `kl_per_dim` (train, validation or test), None when every unit is active."""
    if record.get("active_units") is None or not record.get("kl_per_dim"):
        return None
    d, active = len(record["kl_per_dim"]), int(record["active_units"])
    mi = record.get("mutual_info")
    info = f"; I(x;z) ~ {mi:.2f} nats" if mi is not None else ""
    if active == 0:
        return (f"posterior collapse: none of the {d} latent units is active "
                f"(Var_x E[z] <= {ACTIVE_THRESHOLD}){info}")
    if active < d:
        return f"{d - active} of {d} latent units inactive (Var_x E[z] <= {ACTIVE_THRESHOLD}){info}"
    return None


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
    for k in ("epoch", "loss", "recon", "kl", "mutual_info", "total_correlation", "active_units",
              "examples_per_s"):
        if k in train:
            lines.append(f"| train {k} | {_fmt(train[k])} |")
    for k in ("best_epoch", "epochs_trained", "loss", "recon", "kl", "bits_per_dim", "nll",
              "nll_stderr", "nll_samples", "nll_bits_per_dim", "active_units"):
        if k in test:
            name = "test -ELBO (nats/example)" if k == "loss" else f"test {k}"
            if k == "nll":
                name += f" ({nll_meaning_of(cfg)[1]})"
            lines.append(f"| {name} | {_fmt(test[k])} |")
    units = test if test.get("active_units") is not None else train
    if units.get("kl_per_dim"):
        d = len(units["kl_per_dim"])
        note = collapse_note(units)
        lines += ["", f"Latent units ({'test' if units is test else 'last training epoch'}): "
                      f"{units['active_units']} of {d} active (Var_x E[z] > {ACTIVE_THRESHOLD})."
                  + (f" **{note}**" if note else "")]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())), ""]
    return "\n".join(lines)
