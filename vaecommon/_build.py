"""Packaging only: the wheel leaves the colocated tests (`*_test.py`, `test_*.py`, conftest.py)
out. Used by setuptools through pyproject.toml's [tool.setuptools.cmdclass]; nothing imports it."""

from __future__ import annotations

import fnmatch

from setuptools.command.build_py import build_py

_TESTS = ("*_test.py", "test_*.py", "conftest.py")


class BuildPyWithoutTests(build_py):
    def find_package_modules(self, package, package_dir):
        return [(pkg, mod, path) for pkg, mod, path in super().find_package_modules(package, package_dir)
                if not any(fnmatch.fnmatch(path.rsplit("/", 1)[-1], pat) for pat in _TESTS)]
