"""Command-line plumbing shared by the scripts: `TrainConfig` fields become `--options`.

Each option's help is the field's docstring (read from the source with `ast`, the way
simple_parsing/tyro do), so `--help` documents every option without a second copy.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import typing
from typing import Any

from vaecommon import config as config_lib
from vaecommon.config import TrainConfig

__all__ = ["field_docs", "add_config_arguments", "config_from_args", "parse_kv", "parse_value"]


def field_docs(cls) -> dict[str, str]:
    """{field name: the string literal right after its annotation} of a dataclass."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = " ".join(str(b.value.value).split())
    return docs


def parse_value(text: str) -> Any:
    """'4' -> 4, '0.5' -> 0.5, 'true' -> True, '[256,2]' -> [256, 2], 'none' -> None, else str."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_kv(items: list[str] | None, what: str) -> dict[str, Any]:
    """['beta=4', 'k=5'] -> {'beta': 4, 'k': 5}; a malformed item raises naming it."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"error: {what} expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = parse_value(v)
    return out


def _number_or_none(typ: type) -> Any:
    """argparse type: 'none' -> None, else typ(text); its name makes argparse's error read
    "invalid float value: 'abc'" (a lambda read "invalid <lambda> value")."""
    def parse(text: str):
        return None if text.lower() == "none" else typ(text)
    parse.__name__ = typ.__name__
    return parse


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One --option per TrainConfig field (dict fields become repeatable KEY=VALUE options)."""
    docs = field_docs(TrainConfig)
    hints = typing.get_type_hints(TrainConfig)
    group = parser.add_argument_group("training configuration (TrainConfig)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = docs.get(f.name, "")
        choices = config_lib._CHOICES.get(f.name)
        if f.name == "model_overrides":
            group.add_argument("--override", dest=f.name, action="append", metavar="KEY=VALUE",
                               help=help_text + " Repeatable, e.g. --override latent_dim=2.")
            continue
        if f.name == "objective_params":
            group.add_argument("--param", dest=f.name, action="append", metavar="KEY=VALUE",
                               help=help_text + " Repeatable, e.g. --param beta=4.")
            continue
        hint = hints[f.name]
        base = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
        typ = base[0] if base[0] in (int, float, str) else str
        kwargs: dict[str, Any] = dict(dest=f.name, default=default, help=f"{help_text} (default: {default})")
        if choices:
            kwargs["choices"] = [c for c in choices if c is not None]
        if typ in (int, float):
            kwargs["type"] = _number_or_none(typ)
        group.add_argument(flag, **kwargs)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed arguments."""
    values = {}
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name)
        if f.name == "model_overrides":
            v = parse_kv(v, "--override")
        elif f.name == "objective_params":
            v = parse_kv(v, "--param")
        values[f.name] = v
    return TrainConfig(**values)
