"""The test tiers' tables (INTEGRATION in jaxvae/, torchvae/ and scripts/conftest.py) name tests
and fixtures that exist, each with its reason: a renamed test would otherwise silently fall back
into the unit tier. Read from the source (AST), so nothing heavy is imported."""

from __future__ import annotations

import ast
import importlib

import pytest


def _top_level_functions(path) -> set[str]:
    return {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}


@pytest.mark.parametrize("package", ["jaxvae", "torchvae", "scripts"])
def test_integration_tables_name_existing_tests(package):
    conf = importlib.import_module(f"{package}.conftest")
    assert conf.INTEGRATION, "an empty table"
    for module, names in conf.INTEGRATION.items():
        defined = _top_level_functions(conf.HERE / module)
        assert set(names) <= defined, f"{package}/{module}: no test named {set(names) - defined}"
        assert all(n.startswith("test_") and len(why) > 10 for n, why in names.items()), names
    for fixture, why in getattr(conf, "INTEGRATION_FIXTURES", {}).items():
        assert len(why) > 10 and any(fixture in _top_level_functions(p)
                                     for p in conf.HERE.glob("*_test.py")), fixture
