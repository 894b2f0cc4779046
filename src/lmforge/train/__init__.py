"""Training stage: pretraining objectives (causal LM, masked LM + NSP/SOP, T5 span corruption)
over one loop, and the pieces fine-tuning reuses (optimizer, schedules, metrics, example sources).

Example:
    >>> from lmforge.train import load_config, pretrain
    >>> config = load_config("recipes/pretrain/gpt-bible-tiny.yaml", ["max_steps=200"])  # doctest: +SKIP
    >>> report = pretrain(config, "runs/gpt", data="runs/data-bible")  # doctest: +SKIP
    >>> report["final_val_loss"], report["tokens_per_second"]  # doctest: +SKIP
"""

from lmforge.train.build import DataBundle
from lmforge.train.collators import SpecialIds
from lmforge.train.config import (
    DataConfig,
    ModelSection,
    ObjectiveConfig,
    OptimConfig,
    TrainConfig,
    load_config,
)
from lmforge.train.objectives import PretrainingLoss
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
