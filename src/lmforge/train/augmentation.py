"""Augmentation of a fine-tuning run's training split, from :class:`FinetuneConfig` settings.

The text-level augmenters (``deletion``, ``swap``) come from :mod:`lmforge.data.augment`;
back-translation decodes with a seq2seq model, which is the generate stage's job, so the caller
(the CLI) builds it (:func:`lmforge.generate.backtranslate.load_back_translator`) and passes it in.
Only the training split is augmented: validation and test data stay as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lmforge.data.augment import TextAugmenter, augment_task_data, build_text_augmenters
from lmforge.errors import ConfigError

__all__ = ["augment_training"]


def augment_training(data: Any, config: Any, extra: Sequence[TextAugmenter] = ()) -> Any:
    """``data`` with ``config.augment_copies`` augmented copies per example (or unchanged).

    Args:
        data: the training examples (classification, lm, chat or seq2seq data).
        config: a :class:`~lmforge.train.finetune.FinetuneConfig` (``augment``, ``augment_prob``,
            ``augment_copies``, ``seed``).
        extra: augmenters built by the caller, e.g. a back-translator; each one's ``name`` joins
            those of ``config.augment``.

    Raises:
        ConfigError: ``backtranslation`` named but no back-translator given, or bad settings.
    """
    names = list(config.augment)
    given = {a.name for a in extra}
    if "backtranslation" in names and "backtranslation" not in given:
        raise ConfigError("--augment backtranslation needs a seq2seq model: pass --augment-model CKPT")
    augmenters = build_text_augmenters(names, config.augment_prob) + list(extra)
    if not augmenters:
        return data
    return augment_task_data(data, augmenters, config.augment_copies, config.seed)
