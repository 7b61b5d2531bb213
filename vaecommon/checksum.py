"""One checksum of a checkpoint's arrays, the same function for both twins. Framework-free.

`leaves_checksum` hashes (path, array) pairs in the order given, with each array's path, dtype
and shape, so a flipped bit, a swapped tensor or a truncated array changes it. `nested_leaves`
lists the pairs of nested dicts/lists/tuples (a torch checkpoint); the JAX twin lists a pytree's
with `jax.tree_util.tree_flatten_with_path`.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable

import numpy as np

__all__ = ["leaves_checksum", "nested_leaves"]


def nested_leaves(tree: Any, path: str = "") -> list[tuple[str, Any]]:
    """(path, leaf) pairs of nested dicts (keys sorted), lists and tuples."""
    if isinstance(tree, dict):
        return [p for k in sorted(tree, key=str) for p in nested_leaves(tree[k], f"{path}/{k}")]
    if isinstance(tree, (list, tuple)):
        return [p for i, v in enumerate(tree) for p in nested_leaves(v, f"{path}/{i}")]
    return [(path, tree)]


def leaves_checksum(leaves: Iterable[tuple[str, Any]]) -> str:
    """SHA-256 (hex) of (path, leaf) pairs: arrays by dtype, shape and bytes; scalars and strings
    by their repr."""
    h = hashlib.sha256()
    for path, leaf in leaves:
        if leaf is None or isinstance(leaf, (bool, int, float, str)):
            h.update(f"{path}={leaf!r};".encode())
            continue
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{path}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()
