"""The ``[adapters]`` extra in tests: whether it is installed here, and how a test or a parameter that needs
it is marked (``adapters``: conftest.py skips it where the extra is missing; make test runs it in .venv-adapters)."""

import importlib.util

import pytest

ADAPTERHUB = importlib.util.find_spec("adapters") is not None


def adapterhub(*values):
    """A parametrize entry that needs the extra (a bottleneck, madx or fusion case)."""
    return pytest.param(*values, marks=pytest.mark.adapters)
