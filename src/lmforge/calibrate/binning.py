"""Non-parametric calibrators: isotonic regression, histogram binning and Bayesian Binning into
Quantiles (BBQ). Each is one-vs-rest on the softmax probability p_k of each class (a single map on
p_1 for binary problems), renormalised to sum to 1 (see :class:`OneVsRestCalibrator`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from lmforge.calibrate.base import OneVsRestCalibrator
from lmforge.errors import CalibrationError


def isotonic_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares non-decreasing fit of y on x by the pool-adjacent-violators algorithm.

    Equal x values are merged first (their y averaged, weight = their count), as
    ``sklearn.isotonic.IsotonicRegression`` does.

    Returns:
        ``(thresholds, values)``: the sorted distinct x [M] and the fitted values [M]; predict by
        linear interpolation between them, clipped at the ends (:func:`isotonic_predict`).
    """
    unique_x, inverse = np.unique(x, return_inverse=True)
    weight = np.bincount(inverse).astype(np.float64)
    mean = np.bincount(inverse, weights=y.astype(np.float64)) / weight
    # Each block: (mean value, total weight, number of distinct x it spans).
    values: list[float] = []
    weights: list[float] = []
    spans: list[int] = []
    for v, w in zip(mean.tolist(), weight.tolist()):
        values.append(v)
        weights.append(w)
        spans.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            w_total = weights[-2] + weights[-1]
            values[-2] = (values[-2] * weights[-2] + values[-1] * weights[-1]) / w_total
            weights[-2] = w_total
            spans[-2] += spans[-1]
            del values[-1], weights[-1], spans[-1]
    return unique_x, np.repeat(np.asarray(values), spans)


def isotonic_predict(thresholds: np.ndarray, values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation of an isotonic fit; constant beyond the fitted range."""
    return np.interp(x, thresholds, values)


def bin_edges(score: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    """Strictly increasing bin edges on [0, 1]: equal width (``"uniform"``) or equal mass
    (``"quantile"``: quantiles of ``score``; edges that coincide because of ties are merged)."""
    if n_bins < 1:
        raise CalibrationError(f"number of bins must be >= 1, got {n_bins}")
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if strategy != "quantile":
        raise CalibrationError(f"binning strategy must be 'uniform' or 'quantile', got {strategy!r}")
    edges = np.quantile(score, np.linspace(0.0, 1.0, n_bins + 1))
    edges[0], edges[-1] = 0.0, 1.0
    return np.unique(np.clip(edges, 0.0, 1.0))


def assign_bins(edges: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Bin index of each score; bin b covers (edges[b], edges[b + 1]] (bin 0 also holds 0)."""
    return np.searchsorted(edges[1:-1], score, side="left")


class IsotonicCalibrator(OneVsRestCalibrator):
    """Isotonic regression (Zadrozny & Elkan 2002): a non-decreasing step-linear map of p_k fitted
    by PAVA; matches ``sklearn.isotonic.IsotonicRegression(out_of_bounds="clip")``."""

    method = "isotonic"

    def _fit_binary(self, score: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
        thresholds, values = isotonic_fit(score, target.astype(np.float64))
        return {"thresholds": thresholds, "values": values}

    def _predict_binary(self, params: dict[str, np.ndarray], score: np.ndarray) -> np.ndarray:
        return isotonic_predict(params["thresholds"], params["values"], score)


class HistogramBinning(OneVsRestCalibrator):
    """Histogram binning (Zadrozny & Elkan 2001): p_k is replaced by the frequency of class k among
    the validation samples in its bin. Bins are equal width or equal mass; an empty bin keeps its
    midpoint."""

    method = "histogram"

    def __init__(self, n_bins: int = 15, strategy: str = "uniform") -> None:
        super().__init__()
        bin_edges(np.zeros(1), n_bins, strategy)  # validate early, before fit
        self.n_bins = n_bins
        self.strategy = strategy

    def config(self) -> dict[str, Any]:
        return {"n_bins": self.n_bins, "strategy": self.strategy}

    def _fit_binary(self, score: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
        edges = bin_edges(score, self.n_bins, self.strategy)
        ids = assign_bins(edges, score)
        count = np.bincount(ids, minlength=len(edges) - 1).astype(np.float64)
        positive = np.bincount(ids, weights=target.astype(np.float64), minlength=len(edges) - 1)
        midpoint = (edges[:-1] + edges[1:]) / 2.0
        values = np.where(count > 0, positive / np.maximum(count, 1.0), midpoint)
        return {"edges": edges, "values": values}

    def _predict_binary(self, params: dict[str, np.ndarray], score: np.ndarray) -> np.ndarray:
        return params["values"][assign_bins(params["edges"], score)]


def _lgamma(x: np.ndarray) -> np.ndarray:
    return torch.lgamma(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()


class BBQCalibrator(OneVsRestCalibrator):
    """Bayesian Binning into Quantiles (Naeini, Cooper & Hauskrecht, AAAI 2015).

    For every bin count B from ``max(1, floor(N^(1/3) / C))`` to ``ceil(C * N^(1/3))`` (C = ``spread``,
    10 in the paper; capped at N / 5), build an equal-frequency binning model M_B of the scores and
    give it the Bayesian score P(M_B) P(D | M_B) with a uniform model prior and the closed-form
    marginal likelihood under a Beta prior per bin::

        P(D | M) = prod_b  G(N'/B) / G(N_b + N'/B) * G(m_b + a_b) / G(a_b) * G(n_b + b_b) / G(b_b)

    where G is the gamma function, N_b the samples in bin b, m_b / n_b its positives / negatives,
    a_b = N'/B * p_b, b_b = N'/B * (1 - p_b), p_b the midpoint of bin b, and N' the equivalent sample
    size (``prior_strength``, 2 by default). The calibrated probability is the average of the
    models' bin estimates weighted by their normalised scores; each model's bin estimate is the
    Beta posterior mean (m_b + a_b) / (N_b + N'/B), which is never exactly 0 or 1.
    """

    method = "bbq"

    def __init__(self, prior_strength: float = 2.0, spread: float = 10.0) -> None:
        super().__init__()
        if prior_strength <= 0 or spread < 1:
            raise CalibrationError(
                f"BBQ needs prior_strength > 0 and spread >= 1, got {prior_strength}, {spread}"
            )
        self.prior_strength = prior_strength
        self.spread = spread

    def config(self) -> dict[str, Any]:
        return {"prior_strength": self.prior_strength, "spread": self.spread}

    def bin_counts(self, num_samples: int) -> range:
        """The bin counts B of the averaged models for a fit on ``num_samples`` samples."""
        root = num_samples ** (1.0 / 3.0)
        low = max(1, math.floor(root / self.spread))
        high = max(low, min(math.ceil(num_samples / 5), math.ceil(self.spread * root)))
        return range(low, high + 1)

    def _fit_binary(self, score: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
        y = target.astype(np.float64)
        all_edges, all_values, sizes, log_scores = [], [], [], []
        for n_bins in self.bin_counts(len(score)):
            edges = bin_edges(score, n_bins, "quantile")
            b = len(edges) - 1  # may be < n_bins when ties merged edges
            ids = assign_bins(edges, score)
            count = np.bincount(ids, minlength=b).astype(np.float64)
            positive = np.bincount(ids, weights=y, minlength=b)
            negative = count - positive
            prior = self.prior_strength / b
            midpoint = (edges[:-1] + edges[1:]) / 2.0
            alpha, beta = prior * midpoint, prior * (1.0 - midpoint)
            log_ml = (
                _lgamma(np.full(b, prior))
                - _lgamma(count + prior)
                + _lgamma(positive + alpha)
                - _lgamma(alpha)
                + _lgamma(negative + beta)
                - _lgamma(beta)
            ).sum()
            all_edges.append(edges)
            all_values.append((positive + alpha) / (count + prior))
            sizes.append(b)
            log_scores.append(log_ml)
        log_w = np.asarray(log_scores) - max(log_scores)
        weights = np.exp(log_w) / np.exp(log_w).sum()
        return {
            "edges": np.concatenate(all_edges),
            "values": np.concatenate(all_values),
            "sizes": np.asarray(sizes, dtype=np.float64),
            "weights": weights,
        }

    def _predict_binary(self, params: dict[str, np.ndarray], score: np.ndarray) -> np.ndarray:
        out = np.zeros_like(score, dtype=np.float64)
        edge_start = value_start = 0
        for size, weight in zip(params["sizes"].astype(int).tolist(), params["weights"].tolist()):
            edges = params["edges"][edge_start : edge_start + size + 1]
            values = params["values"][value_start : value_start + size]
            out += weight * values[assign_bins(edges, score)]
            edge_start += size + 1
            value_start += size
        return out

    def model_weights(self) -> list[np.ndarray]:
        """Posterior weight of each binning model, one array per fitted one-vs-rest map."""
        return [m["weights"] for m in self.maps]
