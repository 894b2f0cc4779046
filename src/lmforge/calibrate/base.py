"""The calibrator interface shared by every post-hoc method.

A calibrator is an estimator in the scikit-learn shape: ``fit(logits, labels)`` learns a map from
a classifier's logits [N, C] to calibrated probabilities, ``predict_proba(logits)`` applies it.
Inputs may be numpy arrays or torch tensors on any device; outputs are float64 numpy arrays, so a
calibrator never holds a device. A 1-D ``logits`` array is read as the positive-class logit of a
binary classifier (logits ``[0, s]``). Probabilities (e.g. from a CSV) are passed as their logs.

``state_dict()`` returns ``{"method", "num_classes", "params", "arrays"}``: ``params`` holds JSON
values (hyper-parameters, scalars), ``arrays`` numpy arrays (saved as safetensors next to the
JSON). ``from_state_dict`` also accepts arrays as nested lists, so a pure-JSON round trip works.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, TypeVar

import numpy as np

from lmforge.errors import CalibrationError
from lmforge.metrics.calibration import as_numpy

C = TypeVar("C", bound="Calibrator")


def as_logits(logits: Any, name: str = "logits") -> np.ndarray:
    """Validate logits and return them as float64 [N, C] (1-D binary logits become [0, s])."""
    z = as_numpy(logits)
    if z.ndim == 1:
        z = np.stack([np.zeros_like(z), z], axis=1)
    if z.ndim != 2 or z.shape[1] < 2:
        raise CalibrationError(f"{name} must have shape [N, C] with C >= 2 classes, got {tuple(z.shape)}")
    if z.shape[0] == 0:
        raise CalibrationError(f"{name} is empty (N = 0)")
    if not np.all(np.isfinite(z)):
        raise CalibrationError(f"{name} contains NaN or infinite values")
    return z


def as_labels(labels: Any, num_samples: int, num_classes: int) -> np.ndarray:
    """Validate labels [N] as integers in [0, num_classes) and return them as int64."""
    y = as_numpy(labels)
    if y.ndim != 1 or y.shape[0] != num_samples:
        raise CalibrationError(f"labels must have shape [N] = [{num_samples}], got {tuple(y.shape)}")
    if np.any(y != np.round(y)) or y.min() < 0 or y.max() >= num_classes:
        raise CalibrationError(
            f"labels must be integers in [0, {num_classes - 1}] (C = {num_classes} logit columns), "
            f"got values in [{y.min():g}, {y.max():g}]"
        )
    return y.astype(np.int64)


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Stable log-softmax over the last axis. [N, C] -> [N, C]."""
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(z: np.ndarray) -> np.ndarray:
    """Stable softmax over the last axis. [N, C] -> [N, C]."""
    return np.exp(log_softmax(z))


def renormalize(scores: np.ndarray) -> np.ndarray:
    """Rows of one-vs-rest probabilities [N, C] scaled to sum to 1; an all-zero row becomes uniform."""
    total = scores.sum(axis=1, keepdims=True)
    uniform = np.full_like(scores, 1.0 / scores.shape[1])
    return np.where(total > 0, scores / np.where(total > 0, total, 1.0), uniform)


class Calibrator(ABC):
    """Base class: subclasses set ``method`` and implement ``_fit``, ``_predict``, ``_params`` and
    ``_arrays`` / ``_load``."""

    method: ClassVar[str] = ""

    def __init__(self) -> None:
        self.num_classes: int | None = None

    # -- public API --------------------------------------------------------------------------

    def fit(self: C, logits: Any, labels: Any) -> C:
        """Learn the calibration map.

        Args:
            logits: [N, C] classifier logits (numpy or torch, any device).
            labels: [N] integer labels in [0, C).

        Returns:
            ``self``, fitted.
        """
        z = as_logits(logits)
        y = as_labels(labels, z.shape[0], z.shape[1])
        self.num_classes = z.shape[1]
        self._fit(z, y)
        return self

    def predict_proba(self, logits: Any) -> np.ndarray:
        """Calibrated probabilities [N, C] (float64, rows sum to 1) for logits [N, C]."""
        if self.num_classes is None:
            raise CalibrationError(f"{type(self).__name__} is not fitted: call fit(logits, labels) first")
        z = as_logits(logits)
        if z.shape[1] != self.num_classes:
            raise CalibrationError(
                f"{self.method} calibrator was fitted on {self.num_classes} classes, got logits with {z.shape[1]}"
            )
        return self._predict(z)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the fitted calibrator, without pickle."""
        if self.num_classes is None:
            raise CalibrationError(f"{type(self).__name__} is not fitted: nothing to save")
        return {
            "method": self.method,
            "num_classes": self.num_classes,
            "params": self._params(),
            "arrays": {k: np.asarray(v, dtype=np.float64) for k, v in self._arrays().items()},
        }

    @classmethod
    def from_state_dict(cls: type[C], state: dict[str, Any]) -> C:
        """Rebuild a fitted calibrator from :meth:`state_dict` output (arrays may be lists)."""
        if state.get("method") != cls.method:
            raise CalibrationError(
                f"state is for method {state.get('method')!r}, not {cls.method!r}; use get_calibrator / "
                "calibrator_from_state_dict to dispatch on the method"
            )
        try:
            calibrator = cls(**state.get("params", {}).get("config", {}))
            calibrator.num_classes = int(state["num_classes"])
            arrays = {k: np.asarray(v, dtype=np.float64) for k, v in state.get("arrays", {}).items()}
            calibrator._load(state.get("params", {}), arrays)
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(
                f"invalid {cls.method} calibrator state: {type(exc).__name__}: {exc}"
            ) from None
        return calibrator

    def __repr__(self) -> str:
        config = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({config})"

    # -- for subclasses ----------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON values), stored under ``params["config"]``."""
        return {}

    def _params(self) -> dict[str, Any]:
        return {"config": self.config()}

    @abstractmethod
    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None: ...

    @abstractmethod
    def _predict(self, logits: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _arrays(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _load(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None: ...


class OneVsRestCalibrator(Calibrator):
    """A binary calibration map per class, renormalised to sum to 1.

    A binary problem (C = 2) fits one map on class 1 and returns ``[1 - q, q]``. With C > 2, map k
    is fitted on "class k vs the rest" and the C outputs are divided by their sum (Zadrozny & Elkan
    2002). Subclasses choose the score each map sees (:meth:`_scores`) and implement the binary map
    with its parameters as a dict of arrays.
    """

    def __init__(self) -> None:
        super().__init__()
        self.maps: list[dict[str, np.ndarray]] = []

    def _classes(self) -> list[int]:
        assert self.num_classes is not None
        return [1] if self.num_classes == 2 else list(range(self.num_classes))

    def _scores(self, logits: np.ndarray) -> np.ndarray:
        """Per-class score the binary maps see; default: the softmax probability p_k. [N, C]."""
        return softmax(logits)

    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        scores = self._scores(logits)
        self.maps = [self._fit_binary(scores[:, k], labels == k) for k in self._classes()]

    def _predict(self, logits: np.ndarray) -> np.ndarray:
        scores = self._scores(logits)
        columns = [self._predict_binary(m, scores[:, k]) for m, k in zip(self.maps, self._classes())]
        if len(columns) == 1:
            q = np.clip(columns[0], 0.0, 1.0)
            return np.stack([1.0 - q, q], axis=1)
        return renormalize(np.clip(np.stack(columns, axis=1), 0.0, None))

    def _arrays(self) -> dict[str, np.ndarray]:
        return {f"{name}.{i}": value for i, m in enumerate(self.maps) for name, value in m.items()}

    def _load(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.maps = [{} for _ in self._classes()]
        for key, value in arrays.items():
            name, _, index = key.rpartition(".")
            self.maps[int(index)][name] = value

    @abstractmethod
    def _fit_binary(self, score: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
        """Fit one binary map on scores [N] and boolean targets [N]; return its parameters."""

    @abstractmethod
    def _predict_binary(self, params: dict[str, np.ndarray], score: np.ndarray) -> np.ndarray:
        """Apply one binary map to scores [N]; returns probabilities of the positive class [N]."""
