"""XLA compiler options the trainer compiles with, chosen per backend from measurements.

`jit(fun, **kwargs)` is `jax.jit` with `compiler_options()`: the training epoch, the evaluation
and NLL functions and the streamed epoch are compiled through it. The options are per
executable (`jax.jit(..., compiler_options=...)`), so nothing else in the process changes and
`XLA_FLAGS` stays the user's.

On CPU: convolutions leave YNNPACK for XLA's own (Eigen) convolutions. jaxlib's default YNNPACK
fusion list is (INDIVIDUAL_DOT, INDIVIDUAL_CONVOLUTION, REDUCE); dropping
INDIVIDUAL_CONVOLUTION made conv_vae's scanned epoch 15-19% faster, measured in one process on 2
cores (4.60 -> 3.92 s and 4.95 -> 4.03 s on 20,000 examples; scripts/README.md, Benchmarks),
which took it past the PyTorch loop. Dots, reductions and the MLP presets are unchanged (they
have no convolutions). `jaxvae.conv`'s custom VJPs are still needed with either choice: JAX's
own transpose rules ran the same epoch at 71 s.

Kept as jaxlib configures it:
  * a backend other than CPU (GPU/TPU compile their convolutions themselves);
  * a jaxlib whose defaults do not list LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION;
  * `XLA_FLAGS` that set `--xla_cpu_experimental_ynn_fusion_type` themselves (the user's choice
    wins);
  * `JAXVAE_XLA_DEFAULTS=1` in the environment (compile exactly as jaxlib would).
"""
from __future__ import annotations

import functools
import os
import re
from typing import Any, Callable

import jax

__all__ = ["YNN_FUSION", "compiler_options", "jit"]

YNN_FUSION = "xla_cpu_experimental_ynn_fusion_type"
_CONV = "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"


@functools.lru_cache(maxsize=None)
def _default_ynn_fusion() -> tuple[str, ...] | None:
    """jaxlib's YNNPACK fusion list for this process (XLA_FLAGS applied), or None when unknown."""
    try:
        from jax._src.lib import _jax

        options = _jax.CompileOptions()  # kept alive: the views below point into it
        build = options.executable_build_options
        text = str(build.debug_options)
    except Exception:  # a jaxlib without these bindings: compile as it would
        return None
    return tuple(re.findall(rf"^{YNN_FUSION}: (\w+)$", text, flags=re.M))


def compiler_options(backend: str | None = None) -> dict[str, Any] | None:
    """The options `jit` passes for `backend` (default: JAX's default backend); None: jaxlib's."""
    if os.environ.get("JAXVAE_XLA_DEFAULTS") == "1" or YNN_FUSION in os.environ.get("XLA_FLAGS", ""):
        return None
    if (backend or jax.default_backend()) != "cpu":
        return None
    fusion = _default_ynn_fusion()
    if not fusion or _CONV not in fusion:
        return None
    return {YNN_FUSION: ",".join(f for f in fusion if f != _CONV)}


def jit(fun: Callable, **kwargs) -> Callable:
    """`jax.jit(fun, **kwargs)` compiled with `compiler_options()`."""
    return jax.jit(fun, compiler_options=compiler_options(), **kwargs)
