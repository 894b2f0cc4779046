"""Parametric calibrators: temperature, vector and matrix scaling (Guo et al. 2017), matrix scaling
with ODIR regularisation (Kull et al. 2019), and Platt / sigmoid scaling (Platt 1999).

The scaling maps are fitted by minimising the mean negative log-likelihood with L-BFGS (strong
Wolfe line search) in float64 on the CPU; data sizes here are validation splits, so full-batch
second-order optimisation converges in a few dozen iterations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.calibrate.base import Calibrator, OneVsRestCalibrator, softmax
from lmforge.errors import CalibrationError
from lmforge.runtime import torch_threads


def _lbfgs(
    params: list[torch.Tensor],
    loss_fn: Any,
    max_iter: int,
    rounds: int = 5,
    tol: float = 1e-10,
) -> float:
    """Minimise ``loss_fn()`` over ``params`` with L-BFGS; restarts until the loss stops moving."""
    optimizer = torch.optim.LBFGS(
        params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-12
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    previous = float("inf")
    for _ in range(rounds):
        loss = float(optimizer.step(closure).detach())
        if abs(previous - loss) < tol:
            break
        previous = loss
    with torch.no_grad():
        return float(loss_fn())


class _ScalingCalibrator(Calibrator):
    """Calibrators of the form softmax(f_theta(z)) with f_theta fitted by L-BFGS on the NLL."""

    def __init__(self, max_iter: int = 200) -> None:
        super().__init__()
        self.max_iter = max_iter
        self.tensors: dict[str, torch.Tensor] = {}

    def config(self) -> dict[str, Any]:
        return {"max_iter": self.max_iter}

    def _init(self, num_classes: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _transform(self, z: torch.Tensor) -> torch.Tensor:
        """Calibrated logits [N, C] from logits [N, C]."""
        raise NotImplementedError

    def _penalty(self) -> torch.Tensor:
        return torch.zeros((), dtype=torch.float64)

    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        z = torch.from_numpy(logits)
        y = torch.from_numpy(labels)
        self.tensors = {k: v.requires_grad_(True) for k, v in self._init(z.shape[1]).items()}
        # One intra-op thread: these full-batch problems are [N, C] with small C, where thread start-up
        # and spinning cost more than they save (10-20x slower on a busy 2-core machine).
        with torch_threads(1):
            self.final_loss = _lbfgs(
                list(self.tensors.values()),
                lambda: F.cross_entropy(self._transform(z), y) + self._penalty(),
                self.max_iter,
            )
        self.tensors = {k: v.detach() for k, v in self.tensors.items()}

    def _predict(self, logits: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            calibrated = self._transform(torch.from_numpy(logits))
        return softmax(calibrated.numpy())

    def _arrays(self) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self.tensors.items()}

    def _load(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        expected = set(self._init(self.num_classes or 2))
        if set(arrays) != expected:
            raise ValueError(f"expected arrays {sorted(expected)}, got {sorted(arrays)}")
        self.tensors = {k: torch.from_numpy(np.array(v, dtype=np.float64)) for k, v in arrays.items()}


class TemperatureScaling(_ScalingCalibrator):
    """softmax(z / T) with one temperature T > 0 (Guo et al. 2017). Accuracy is unchanged.

    ``log T`` is the parameter, so T stays positive whatever the optimiser does.
    """

    method = "temperature"

    def _init(self, num_classes: int) -> dict[str, torch.Tensor]:
        return {"log_temperature": torch.zeros(1, dtype=torch.float64)}

    def _transform(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.tensors["log_temperature"].exp()

    @property
    def temperature(self) -> float:
        """The fitted temperature T."""
        return float(self.tensors["log_temperature"].exp())


class VectorScaling(_ScalingCalibrator):
    """softmax(w * z + b) with per-class scale w [C] and bias b [C] (Guo et al. 2017)."""

    method = "vector"

    def _init(self, num_classes: int) -> dict[str, torch.Tensor]:
        return {
            "weight": torch.ones(num_classes, dtype=torch.float64),
            "bias": torch.zeros(num_classes, dtype=torch.float64),
        }

    def _transform(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.tensors["weight"] + self.tensors["bias"]


class MatrixScaling(_ScalingCalibrator):
    """softmax(W z + b), W [C, C], b [C], with ODIR regularisation (Kull et al. 2019).

    ODIR (off-diagonal and intercept regularisation) adds
    ``off_diagonal * sum_{i != j} W_ij^2 / (C (C - 1)) + intercept * sum_j b_j^2 / C`` to the mean
    NLL: the diagonal is free (so matrix scaling can still act as vector scaling) while the C^2 - C
    cross-class weights that overfit small validation sets are pulled to 0. ``0, 0`` gives plain
    matrix scaling.
    """

    method = "matrix"

    def __init__(self, off_diagonal: float = 0.01, intercept: float = 0.01, max_iter: int = 200) -> None:
        super().__init__(max_iter)
        if off_diagonal < 0 or intercept < 0:
            raise CalibrationError(
                f"ODIR strengths must be >= 0, got off_diagonal={off_diagonal}, intercept={intercept}"
            )
        self.off_diagonal = off_diagonal
        self.intercept = intercept

    def config(self) -> dict[str, Any]:
        return {"off_diagonal": self.off_diagonal, "intercept": self.intercept, "max_iter": self.max_iter}

    def _init(self, num_classes: int) -> dict[str, torch.Tensor]:
        return {
            "weight": torch.eye(num_classes, dtype=torch.float64),
            "bias": torch.zeros(num_classes, dtype=torch.float64),
        }

    def _transform(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.tensors["weight"].T + self.tensors["bias"]  # (N, C)

    def _penalty(self) -> torch.Tensor:
        weight, bias = self.tensors["weight"], self.tensors["bias"]
        c = weight.shape[0]
        off = weight - torch.diag(torch.diagonal(weight))
        return self.off_diagonal * off.pow(2).sum() / (c * (c - 1)) + self.intercept * bias.pow(2).sum() / c


def fit_sigmoid(
    score: np.ndarray, target: np.ndarray, smoothing: bool = True, max_iter: int = 100
) -> tuple[float, float]:
    """Fit ``P(y=1 | s) = sigmoid(a * s + b)`` by Newton's method on the (soft-target) log loss.

    Args:
        score: [N] uncalibrated scores (log-odds).
        target: [N] booleans.
        smoothing: Platt's (1999) targets ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)`` instead of
            1 / 0, a MAP estimate that keeps a separable set from driving ``a`` to infinity (what
            ``sklearn.calibration.CalibratedClassifierCV(method="sigmoid")`` does). ``False`` is
            plain unregularised logistic regression on one feature.

    Returns:
        ``(a, b)``.
    """
    s = score.astype(np.float64)
    y = target.astype(bool)
    n_pos, n_neg = float(y.sum()), float((~y).sum())
    if smoothing:
        t = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    else:
        t = y.astype(np.float64)
    # The log loss is convex in (a, b): Newton with backtracking converges from any start.
    theta = np.array([0.0, np.log((n_pos + 1.0) / (n_neg + 1.0))])
    design = np.stack([s, np.ones_like(s)], axis=1)  # (N, 2)

    def loss(th: np.ndarray) -> float:
        u = design @ th
        # -[t log sigmoid(u) + (1 - t) log sigmoid(-u)] = logaddexp(0, u) - t u
        return float(np.sum(np.logaddexp(0.0, u) - t * u))

    current = loss(theta)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        grad = design.T @ (p - t)
        hessian = (design * (p * (1.0 - p))[:, None]).T @ design + 1e-12 * np.eye(2)
        step = np.linalg.solve(hessian, grad)
        scale = 1.0
        while scale > 1e-10:
            candidate = theta - scale * step
            value = loss(candidate)
            if value <= current:
                break
            scale /= 2.0
        else:
            break
        converged = current - value < 1e-12 * max(1.0, abs(current))
        theta, current = candidate, value
        if converged and np.abs(grad).max() < 1e-8 * max(1.0, len(s)):
            break
    return float(theta[0]), float(theta[1])


class PlattScaling(OneVsRestCalibrator):
    """Platt / sigmoid scaling: ``sigmoid(a * s + b)`` on the log-odds s of each class.

    Binary: ``s = z_1 - z_0``. Multiclass: one-vs-rest on ``s_k = log p_k - log(1 - p_k)``, then the
    C sigmoids are renormalised. ``smoothing=True`` (default) uses Platt's original smoothed
    targets and matches scikit-learn's sigmoid calibration; ``False`` matches an unpenalised
    ``LogisticRegression`` on s.
    """

    method = "platt"

    def __init__(self, smoothing: bool = True) -> None:
        super().__init__()
        self.smoothing = smoothing

    def config(self) -> dict[str, Any]:
        return {"smoothing": self.smoothing}

    def _scores(self, logits: np.ndarray) -> np.ndarray:
        # log p_k - log(1 - p_k) = z_k - logsumexp_{j != k} z_j, computed without forming 1 - p_k.
        rest = np.empty_like(logits)
        for k in range(logits.shape[1]):
            others = np.delete(logits, k, axis=1)
            m = others.max(axis=1)
            rest[:, k] = m + np.log(np.exp(others - m[:, None]).sum(axis=1))
        return logits - rest

    def _fit_binary(self, score: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
        a, b = fit_sigmoid(score, target, self.smoothing)
        return {"coef": np.array([a, b])}

    def _predict_binary(self, params: dict[str, np.ndarray], score: np.ndarray) -> np.ndarray:
        a, b = params["coef"]
        u = a * score + b
        return np.exp(-np.logaddexp(0.0, -u))  # sigmoid(u), stable for large |u|
