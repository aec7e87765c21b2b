"""LogME (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning"):
the log marginal evidence, per example, of a Bayesian linear model of the labels on fixed features.

For features ``F`` (n x D) and a target vector ``y``, the model is ``y = F w + e`` with ``w ~ N(0, 1/alpha)``
and ``e ~ N(0, 1/beta)``; the evidence ``log p(y | F, alpha, beta)`` is maximised over ``alpha`` and ``beta``
by the paper's fixed-point iteration (its Algorithm 2), computed on the singular values of ``F``. A
classification label becomes one-hot columns; LogME is the mean of their per-example evidences.
Higher is better: the features explain the labels with a simpler linear model.

With fewer examples than feature dimensions (n < D) the sample spans at most n of the D directions of
``w``, and the prior ``N(0, 1/alpha)`` on the other D - n still enters the evidence: ``- (D - k)/2 log alpha``
in ``log |alpha I + beta F^T F|`` (k: the singular values of F), which ``evidence`` keeps. The reference
implementation (thuml/LogME, which ESM-LogME uses) counts only the k spanned directions in that
determinant while keeping ``D/2 log alpha``, and evaluates the fit at the last iteration's posterior mean.
``reference=True`` computes that formula, for comparison with published rankings; where n > D both agree
up to that last step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ITERATIONS = 11  # the paper's fixed point converges in a few; its reference code stops at 11
TOLERANCE = 1e-3  # relative change of alpha / beta at which the iteration stops
EPS = 1e-5  # keeps the updates finite when a residual or the weights vanish (as the reference code)


@dataclass(frozen=True)
class Fit:
    """One target column's maximised evidence (per example) and its ``alpha`` and ``beta``."""

    evidence: float
    alpha: float
    beta: float


def logme(features: np.ndarray, labels: np.ndarray, reference: bool = False) -> float:
    """LogME of integer class ``labels`` (n,) on ``features`` (n, D): the mean evidence over the classes
    (``reference``: by thuml/LogME's formula, see the module's docstring)."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    spectrum = _spectrum(features)
    return float(np.mean([fit(spectrum, (labels == k).astype(np.float64), reference).evidence
                          for k in np.unique(labels)]))


def _spectrum(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(left singular vectors, squared singular values, D) of the features."""
    left, singular, _ = np.linalg.svd(features, full_matrices=False)
    return left, singular ** 2, features.shape[1]


def fit(spectrum: tuple[np.ndarray, np.ndarray, int], y: np.ndarray, reference: bool = False) -> Fit:
    """Maximise the evidence of one target column ``y`` (n,) by the fixed-point iteration."""
    left, sigma, dims = spectrum
    n = len(y)
    projected = (left.T @ y) ** 2  # y's energy along each singular direction
    outside = max(float(y @ y - projected.sum()), 0.0)  # and outside the features' span
    alpha, beta = 1.0, 1.0
    for _ in range(ITERATIONS):
        ratio = alpha / beta
        gamma = float((sigma / (sigma + ratio)).sum())
        weights = float((sigma * projected / (sigma + ratio) ** 2).sum())  # |m|^2, m the posterior mean
        residual = float((projected / (1 + sigma / ratio) ** 2).sum()) + outside  # |F m - y|^2
        alpha, beta = gamma / (weights + EPS), (n - gamma) / (residual + EPS)
        if abs(alpha / beta - ratio) / ratio <= TOLERANCE:
            break
    if reference:  # the spanned directions only, the last iteration's |m|^2 and |F m - y|^2
        total = (dims / 2 * np.log(alpha) + n / 2 * np.log(beta) - float(np.log(alpha + beta * sigma).sum()) / 2
                 - beta / 2 * residual - alpha / 2 * weights - n / 2 * np.log(2 * np.pi))
        return Fit(float(total / n), alpha, beta)
    return Fit(evidence(spectrum, y, alpha, beta), alpha, beta)


def evidence(spectrum: tuple[np.ndarray, np.ndarray, int], y: np.ndarray, alpha: float, beta: float) -> float:
    """``log p(y | F, alpha, beta) / n`` in closed form on the singular values (equation 2 of the paper)."""
    left, sigma, dims = spectrum
    n = len(y)
    projected = (left.T @ y) ** 2
    outside = max(float(y @ y - projected.sum()), 0.0)
    shrink = beta * sigma / (alpha + beta * sigma)
    weights = float((beta ** 2 * sigma * projected / (alpha + beta * sigma) ** 2).sum())
    residual = float(((1 - shrink) ** 2 * projected).sum()) + outside
    log_det = float(np.log(alpha + beta * sigma).sum()) + (dims - len(sigma)) * np.log(alpha)
    total = (dims / 2 * np.log(alpha) + n / 2 * np.log(beta) - log_det / 2 - beta / 2 * residual
             - alpha / 2 * weights - n / 2 * np.log(2 * np.pi))
    return float(total / n)
