"""Shared pytest fixtures."""

from pathlib import Path

import pytest

from adapterxfer.backbones import Backbone, build_tiny_xlmr, resolve

TINY_CORPUS = Path(__file__).resolve().parents[1] / "adapterxfer" / "resources" / "tiny_corpus.txt"


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Backbone:
    """A random-init tiny XLM-R (hidden 32, 2 layers) with its own vocabulary, built once per session."""
    lines = [line for line in TINY_CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    folder = build_tiny_xlmr(tmp_path_factory.mktemp("backbone") / "tiny-xlmr", lines)
    return resolve(str(folder))
