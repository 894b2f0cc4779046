"""Calibrating prompted-LM predictions: contextual calibration, domain-conditional PMI, batch calibration.

A prompted classifier scores every class c by the log-probability ``s_c`` of its label word(s)
after the prompt (:mod:`lmforge.prompting`); the uncalibrated prediction is
``p = softmax(s)`` over the label set. The three methods below remove the prompt's bias towards
some label words without labelled data:

* **Contextual calibration** (Zhao et al. 2021, "Calibrate Before Use"): score content-free inputs
  ("N/A", "", "[MASK]") with the same prompt; their averaged label distribution ``p_cf`` is the
  prompt's bias. The paper's affine map with ``W = diag(p_cf)^-1`` and ``b = 0`` gives
  ``W p = p / p_cf``, which we renormalise to sum to one: ``q_c ∝ p_c / p_cf_c``. (The paper writes
  ``softmax(W p + b)``; its reference code takes ``argmax(W p)`` and never applies the softmax,
  which would squash the scores towards uniform. Renormalising keeps that argmax and gives
  probabilities.) ``p_cf`` is, as in the reference code, the mean over content-free inputs of
  the *unnormalised* label probabilities ``exp(s_c)``, then normalised.
* **Domain-conditional PMI** (Holtzman et al. 2021, "Surface Form Competition"):
  ``score_c = log p(label_c | prompt with text) - log p(label_c | domain premise)``, where the
  domain premise is the answer cue without the input (e.g. "Sentiment:"). Unlike contextual
  calibration it works on unnormalised sequence log-probabilities, which matters for multi-token
  labels of different lengths.
* **Batch calibration** (Zhou et al. 2023/2024): the bias is estimated from the test batch itself,
  ``p̂(c) = mean_i p(c | x_i)``, and ``log p(c | x) - log p̂(c)`` is renormalised. ``space="log"``
  subtracts the batch mean of the log-probabilities instead (a variant, not the paper's).

All functions take and return numpy arrays of shape [N, C] (torch tensors are accepted too).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from lmforge.calibrate.base import log_softmax, softmax
from lmforge.errors import CalibrationError
from lmforge.metrics.calibration import as_numpy

__all__ = [
    "CONTENT_FREE_INPUTS",
    "batch_calibrate",
    "content_free_prior",
    "contextual_calibrate",
    "pmi_calibrate",
    "prompt_probs",
]

#: The content-free inputs of "Calibrate Before Use", averaged.
CONTENT_FREE_INPUTS: tuple[str, ...] = ("N/A", "", "[MASK]")


def _scores(scores: Any, name: str = "scores") -> np.ndarray:
    s = as_numpy(scores)
    if s.ndim == 1:
        s = s[None]
    if s.ndim != 2 or s.shape[1] < 2 or s.shape[0] == 0:
        raise CalibrationError(f"{name} must have shape [N, C] with N >= 1 and C >= 2, got {tuple(s.shape)}")
    if np.isnan(s).any() or np.isposinf(s).any():
        raise CalibrationError(f"{name} contains NaN or +inf")
    return s


def prompt_probs(scores: Any) -> np.ndarray:
    """Uncalibrated class probabilities: softmax of the label scores over the label set. [N, C]."""
    return softmax(_scores(scores))


def content_free_prior(content_free_scores: Any) -> np.ndarray:
    """The prompt's label bias ``p_cf`` [C] from the scores [K, C] of K content-free inputs.

    ``p_cf = normalise(mean_k exp(s_kc))``, computed in log space (a long multi-token label has a
    log-probability far below what ``exp`` represents).
    """
    s = _scores(content_free_scores, "content_free_scores")
    log_mean = np.logaddexp.reduce(s, axis=0) - np.log(s.shape[0])  # [C]
    return softmax(log_mean[None])[0]


def contextual_calibrate(scores: Any, content_free_scores: Any) -> np.ndarray:
    """Contextual calibration: ``q ∝ softmax(s) / p_cf``, i.e. ``W p`` with ``W = diag(p_cf)^-1``, renormalised.

    Args:
        scores: [N, C] label scores of the test inputs.
        content_free_scores: [K, C] label scores of the content-free inputs under the same prompt.

    Returns:
        [N, C] calibrated probabilities.
    """
    s = _scores(scores)
    p_cf = content_free_prior(content_free_scores)
    if p_cf.shape[0] != s.shape[1]:
        raise CalibrationError(f"content-free scores have {p_cf.shape[0]} classes, scores {s.shape[1]}")
    return softmax(log_softmax(s) - np.log(np.maximum(p_cf, 1e-300)))


def pmi_calibrate(scores: Any, premise_scores: Any) -> np.ndarray:
    """Domain-conditional PMI: ``softmax_c(s_c - log p(label_c | domain premise))``.

    Args:
        scores: [N, C] unnormalised label log-probabilities given the full prompt.
        premise_scores: [C] (or [1, C]) label log-probabilities given the domain premise alone.

    Returns:
        [N, C] probabilities over the label set.
    """
    s = _scores(scores)
    premise = _scores(premise_scores, "premise_scores")
    if premise.shape != (1, s.shape[1]):
        raise CalibrationError(
            f"premise_scores must have shape [C] = [{s.shape[1]}], got {tuple(premise.shape)}"
        )
    return softmax(s - premise)


def batch_calibrate(scores: Any, space: Literal["prob", "log"] = "prob") -> np.ndarray:
    """Batch calibration over the N inputs given: subtract the batch's estimate of the label bias.

    Args:
        scores: [N, C] label scores of a batch (usually the whole evaluated set).
        space: ``"prob"`` (the paper): subtract ``log mean_i p(c | x_i)``; ``"log"``: subtract
            ``mean_i log p(c | x_i)``.

    Returns:
        [N, C] calibrated probabilities.
    """
    log_p = log_softmax(_scores(scores))
    if space == "prob":
        bias = np.logaddexp.reduce(log_p, axis=0) - np.log(log_p.shape[0])
    elif space == "log":
        bias = log_p.mean(axis=0)
    else:
        raise CalibrationError(f"batch calibration space must be 'prob' or 'log', got {space!r}")
    return softmax(log_p - bias[None])
