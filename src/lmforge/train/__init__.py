"""Training stage: one loop (:mod:`lmforge.train.loop`) that pretraining (the objectives of
:mod:`lmforge.tasks.pretraining`: causal LM, masked LM + NSP/SOP, T5 span corruption) and
fine-tuning (every task of :mod:`lmforge.tasks`) run through, with checkpoints and exact resume.

Example:
    >>> from lmforge.train import load_config, pretrain
    >>> config = load_config("recipes/pretrain/gpt-bible-tiny.yaml", ["max_steps=200"])  # doctest: +SKIP
    >>> report = pretrain(config, "runs/gpt", data="runs/data-bible")  # doctest: +SKIP
    >>> report["final_val_loss"], report["tokens_per_second"]  # doctest: +SKIP
"""

from lmforge.tasks.corpus import SpecialIds
from lmforge.tasks.pretraining import PretrainingLoss
from lmforge.train.build import DataBundle
from lmforge.train.config import (
    DataConfig,
    ModelSection,
    ObjectiveConfig,
    OptimConfig,
    TrainConfig,
    load_config,
)
from lmforge.train.trainer import Trainer, pretrain

__all__ = [
    "DataBundle",
    "DataConfig",
    "ModelSection",
    "ObjectiveConfig",
    "OptimConfig",
    "PretrainingLoss",
    "SpecialIds",
    "TrainConfig",
    "Trainer",
    "load_config",
    "pretrain",
]
