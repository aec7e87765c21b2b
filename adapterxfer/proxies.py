"""Proxies that rank intermediate modules for a target without training on it: one registry, each proxy a
function of the same shape, ``score(inputs) -> float`` (higher: the module is expected to help more).

- ``logme``: LogME (You et al. 2021; adapterxfer/logme.py) of the target's English training labels on the
  module encoder's features of those examples;
- ``probe``: a linear head fitted on those cached features (ridge regression on one-hot labels, RIDGE) and
  scored by accuracy on English dev examples;
- ``semb``: embedding similarity (TextEmb / SEmb, Vu et al. 2020): the cosine of the mean-pooled backbone
  embeddings of the intermediate task's training text and of the target's text. It reads the intermediate's
  data, not its trained module.

``logme`` and ``probe`` need one class label per text: targets of another kind (retrieval has no training
set; tagging, QA and choice tasks label tokens, spans or choices) get "n/a" with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .kinds import KINDS
from .logme import logme

RIDGE = 1.0  # the probe's L2 penalty (features are L2-normalised mean-pooled states)


@dataclass(frozen=True)
class Labelled:
    """Features (n, D) of a sample of a split and its class labels (n,)."""

    features: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Inputs:
    """What a proxy reads for one module: English training and dev features of the target with labels
    (None where the target has no class labels), and the mean embeddings of the intermediate's and the
    target's text (the target's in English, or in a target language where its unlabelled text may be used).
    ``logme_reference``: LogME by the reference implementation's formula (adapterxfer/logme.py)."""

    train: Labelled | None
    dev: Labelled | None
    intermediate: np.ndarray
    target: np.ndarray
    logme_reference: bool = False


@dataclass(frozen=True)
class Proxy:
    name: str
    description: str
    reads_module: bool  # computed on the module's encoder (else on the backbone, from the intermediate's data)
    needs_labels: bool  # reads the target's English training labels
    score: Callable[[Inputs], float]

    def not_applicable(self, task) -> str | None:
        """Why this proxy cannot score modules for ``task``; None where it can."""
        if self.needs_labels and not KINDS[task.kind].LABEL_PER_TEXT:
            return (f"needs one class label per English training text; {task.name} is a {task.kind} task"
                    + (" without training data" if not task.trainable else ""))
        return None


def _logme(inputs: Inputs) -> float:
    return logme(inputs.train.features, inputs.train.labels, inputs.logme_reference)


def _probe(inputs: Inputs) -> float:
    """Dev accuracy of a ridge-regression linear head (with a bias) on one-hot training labels."""
    train, dev = inputs.train, inputs.dev
    classes = np.unique(train.labels)
    x = np.hstack([train.features, np.ones((len(train.labels), 1))])
    onehot = (train.labels[:, None] == classes[None, :]).astype(np.float64)
    weights = np.linalg.solve(x.T @ x + RIDGE * np.eye(x.shape[1]), x.T @ onehot)
    predicted = classes[np.argmax(np.hstack([dev.features, np.ones((len(dev.labels), 1))]) @ weights, axis=1)]
    return float(np.mean(predicted == dev.labels))


def _semb(inputs: Inputs) -> float:
    a, b = inputs.intermediate, inputs.target
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


PROXIES = {proxy.name: proxy for proxy in (
    Proxy("logme", "LogME of the English training labels on the module's features", True, True, _logme),
    Proxy("probe", "English dev accuracy of a linear head fitted on the module's features", True, True, _probe),
    Proxy("semb", "cosine of mean backbone embeddings: intermediate's training text vs the target's text",
          False, False, _semb),
)}
