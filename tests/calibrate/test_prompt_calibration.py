"""Prompt calibrations (contextual, domain-conditional PMI, batch) against the papers' closed forms."""

from __future__ import annotations

import numpy as np

from lmforge.calibrate.contextual import (
    batch_calibrate,
    content_free_prior,
    contextual_calibrate,
    pmi_calibrate,
    prompt_probs,
)


def test_contextual_calibration_matches_the_closed_form() -> None:
    # Content-free label probabilities (unnormalised) 0.2/0.1 and 0.4/0.4: mean 0.3/0.25.
    cf_scores = np.log([[0.2, 0.1], [0.4, 0.4]])
    p_cf = content_free_prior(cf_scores)
    np.testing.assert_allclose(p_cf, [0.3 / 0.55, 0.25 / 0.55])
    scores = np.log([[0.7, 0.3], [0.5, 0.5], [0.52, 0.48]])
    q = contextual_calibrate(scores, cf_scores)
    # W = diag(p_cf)^-1, b = 0: W p, renormalised.
    w_p = np.array([[0.7, 0.3], [0.5, 0.5], [0.52, 0.48]]) @ np.linalg.inv(np.diag(p_cf))
    np.testing.assert_allclose(q, w_p / w_p.sum(1, keepdims=True), atol=1e-12)
    np.testing.assert_allclose(q[0], [0.7 / p_cf[0], 0.3 / p_cf[1]] / np.sum([0.7 / p_cf[0], 0.3 / p_cf[1]]))
    assert q[2].argmax() == 1 and prompt_probs(scores)[2].argmax() == 0  # the bias flips a prediction


def test_pmi_and_batch_calibration_by_hand() -> None:
    scores = np.log([[0.2, 0.1], [0.3, 0.05], [0.1, 0.1]])
    premise = np.log([0.5, 0.1])
    expected = np.array([[0.4, 1.0], [0.6, 0.5], [0.2, 1.0]])
    np.testing.assert_allclose(pmi_calibrate(scores, premise), expected / expected.sum(1, keepdims=True))
    p = prompt_probs(scores)
    bias = p.mean(0)
    np.testing.assert_allclose(batch_calibrate(scores), (p / bias) / (p / bias).sum(1, keepdims=True))
    # In log space a per-class offset of every score is removed exactly.
    rng = np.random.default_rng(0)
    s = rng.normal(size=(50, 3))
    np.testing.assert_allclose(batch_calibrate(s + [3.0, -1.0, 0.5], "log"), batch_calibrate(s, "log"))
    calibrated = batch_calibrate(s + [3.0, 0.0, 0.0])
    assert abs(calibrated.argmax(1).tolist().count(0) / 50 - 1 / 3) < 0.2  # class 0 no longer dominates
