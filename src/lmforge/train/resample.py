"""Random over- and under-sampling of a classification training split to balance its classes.

The alternative to class-weighted cross-entropy (``class_weights="balanced"``) for imbalanced
data: instead of reweighting the loss, change how often each class is seen. Oversampling keeps
every example and repeats randomly drawn members of the smaller classes (with replacement) until
each class has as many examples as the largest; undersampling keeps a random subset (without
replacement) of each class the size of the smallest. Only the training split is resampled:
validation and test keep their real class proportions, so their metrics stay honest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from lmforge.errors import ConfigError

__all__ = ["RESAMPLE_MODES", "resample_indices"]

ResampleMode = Literal["none", "oversample", "undersample"]
RESAMPLE_MODES: tuple[str, ...] = ("none", "oversample", "undersample")


def resample_indices(labels: Sequence[int] | np.ndarray, mode: str, seed: int = 0) -> np.ndarray:
    """Example indices of a class-balanced training set (a pure function of ``labels``, ``mode``, ``seed``).

    Args:
        labels: class index of each example [N].
        mode: ``none`` (every index once), ``oversample`` (every class up to the largest class's
            count; all originals kept, extras drawn with replacement) or ``undersample`` (every
            class down to the smallest present class's count, drawn without replacement).
        seed: seeds the draws.

    Returns:
        Sorted int64 indices into ``labels`` (repeats allowed when oversampling), shape [M] with
        ``M = C * max_count`` (oversample) or ``C * min_count`` (undersample) for the ``C``
        classes present.
    """
    if mode not in RESAMPLE_MODES:
        raise ConfigError(f"resample={mode!r}: use one of {', '.join(RESAMPLE_MODES)}")
    values = np.asarray(labels, dtype=np.int64)
    if mode == "none" or len(values) == 0:
        return np.arange(len(values), dtype=np.int64)
    classes, counts = np.unique(values, return_counts=True)
    target = int(counts.max() if mode == "oversample" else counts.min())
    rng = np.random.default_rng(seed)
    chosen = []
    for value in classes:  # np.unique sorts the classes, so the draw order is fixed
        members = np.flatnonzero(values == value)
        if mode == "oversample":
            extra = rng.choice(members, size=target - len(members), replace=True)
            chosen.append(np.concatenate([members, extra]))
        else:
            chosen.append(rng.choice(members, size=target, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)
