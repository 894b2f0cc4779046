"""The pretraining objectives' protocol and registry, and the loss module every one of them trains.

A pretraining objective (``objective.kind`` of a recipe) is a :class:`PretrainingTask`, one module
each: :mod:`~lmforge.tasks.causal_pretraining` (``causal_lm``), :mod:`~lmforge.tasks.masked_lm`
(``masked_lm``, with NSP / SOP) and :mod:`~lmforge.tasks.span_corruption` (``span_corruption``).
It says which head the model gets, which special ids and extra model fields it needs, how a
:class:`~lmforge.tasks.corpus.CorpusSource` numbers its examples, how one micro-batch's summed
losses are computed and which validation controls it adds. The training loop
(:mod:`lmforge.train`) only calls these: nothing outside :mod:`lmforge.tasks` branches on an
objective's name.

:class:`PretrainingLoss` wraps a :class:`~lmforge.models.TransformerModel` and returns the loss of
one micro-batch, normalised by counts over the whole global batch so that micro-batches and
processes simply add up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from lmforge.config import Head
from lmforge.data.knowledge_masking import KnowledgeMasking, check_levels
from lmforge.errors import ConfigError
from lmforge.models import TransformerModel
from lmforge.tasks.corpus import Corpus, CorpusSource, ObjectiveConfig, SpecialIds
from lmforge.tasks.losses import linear_cross_entropy
from lmforge.tasks.sources import IGNORE_INDEX

__all__ = [
    "STAT_NAMES",
    "LMTerms",
    "PretrainingLoss",
    "PretrainingTask",
    "get_objective",
    "loss_terms",
    "normalisers",
    "objective_names",
    "register_objective",
]

#: Stats every micro-batch reports (summed over micro-batches and processes).
STAT_NAMES = ("lm_loss", "lm_count", "lm_correct", "sentence_loss", "sentence_count", "sentence_correct")


@dataclass
class LMTerms:
    """One micro-batch's summed losses and counts, before normalisation.

    Attributes:
        lm_loss: summed token cross-entropy (a differentiable scalar).
        lm_correct: argmax hits among the scored tokens (0 while training: not computed).
        lm_count: scored tokens.
        sentence_loss / sentence_correct: NSP / SOP summed cross-entropy and hits, if any.
    """

    lm_loss: Tensor
    lm_correct: Tensor
    lm_count: int
    sentence_loss: Tensor | None = None
    sentence_correct: Tensor | None = None


class PretrainingTask:
    """Base of every pretraining objective; subclasses set the class attributes and override
    what differs.

    Class attributes:
        kind: the ``objective.kind`` value.
        source_class: numbers one split's examples (its ``collate`` builds a batch).
        sentence_tasks: it supports ``objective.sentence_task`` (NSP / SOP).
        unit_masking: it supports ``objective.masking_units`` (ERNIE's knowledge masking).
    """

    kind: ClassVar[str]
    source_class: ClassVar[type[CorpusSource]]
    sentence_tasks: ClassVar[bool] = False
    unit_masking: ClassVar[bool] = False

    def check(self, objective: ObjectiveConfig, source: str) -> None:
        """Refuse settings the objective cannot use (``source`` names the recipe)."""
        if objective.sentence_task != "none" and not self.sentence_tasks:
            supported = [task.kind for task in _REGISTRY.values() if task.sentence_tasks]
            raise ConfigError(
                f"{source}: objective.sentence_task needs objective.kind: {' or '.join(supported)}"
            )
        if objective.masking_units is not None:
            self._check_unit_masking(objective, source)

    def _check_unit_masking(self, objective: ObjectiveConfig, source: str) -> None:
        if not self.unit_masking:
            supported = [task.kind for task in _REGISTRY.values() if task.unit_masking]
            raise ConfigError(
                f"{source}: objective.masking_units needs objective.kind: {' or '.join(supported)}"
            )
        if objective.whole_word_masking:
            raise ConfigError(
                f"{source}: objective.masking_units and objective.whole_word_masking both choose the masked "
                "units; use masking_units: {phrase: 1} for whole words"
            )
        assert objective.masking_units is not None
        levels = check_levels(objective.masking_units, f"{source}: objective.masking_units")
        if levels.get("entity", 0) > 0 and not objective.entity_lexicon:
            raise ConfigError(
                f"{source}: objective.masking_units has entity units but objective.entity_lexicon is not set "
                "(a lexicon file or peoples-daily-ner)"
            )

    def head(self, objective: ObjectiveConfig) -> Head:
        """The :class:`~lmforge.config.ModelConfig` head the objective trains."""
        raise NotImplementedError

    def num_sentinels(self, objective: ObjectiveConfig) -> int:
        """Sentinel tokens one example may need (span corruption); 0 for none."""
        return 0

    def model_fields(self, specials: SpecialIds) -> dict[str, Any]:
        """Model config fields the objective sets from the special ids."""
        return {}

    def sources(
        self,
        train: Corpus,
        validation: Corpus,
        objective: ObjectiveConfig,
        specials: SpecialIds,
        seed: int,
        word_table: np.ndarray | None = None,
        knowledge: KnowledgeMasking | None = None,
    ) -> tuple[CorpusSource, CorpusSource]:
        """Training and validation example sources of the two splits."""
        return tuple(  # type: ignore[return-value]
            self.source_class(corpus, objective, specials, seed, word_table=word_table, knowledge=knowledge)
            for corpus in (train, validation)
        )

    def lm_normaliser(self, labels: np.ndarray) -> int:
        """Scored tokens of a global batch's ``labels`` (B, T): what its LM loss is divided by."""
        return int((labels != IGNORE_INDEX).sum())

    def terms(self, loss: PretrainingLoss, batch: dict[str, Tensor]) -> LMTerms:
        """Summed losses and counts of one micro-batch (``loss`` holds the model)."""
        raise NotImplementedError

    def validation_controls(
        self, batch: dict[str, np.ndarray], index: int
    ) -> dict[str, dict[str, np.ndarray]]:
        """Altered copies of validation batch ``index`` whose accuracy is also reported, by name
        (``val_accuracy_<name>``); none by default."""
        return {}


_REGISTRY: dict[str, PretrainingTask] = {}


def register_objective(task: PretrainingTask) -> PretrainingTask:
    """Make ``task`` known by its ``kind``."""
    _REGISTRY[task.kind] = task
    return task


def objective_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_objective(kind: str) -> PretrainingTask:
    """The objective called ``kind``.

    Raises:
        ConfigError: no such objective, listing the known ones.
    """
    task = _REGISTRY.get(kind)
    if task is None:
        raise ConfigError(f"unknown objective.kind {kind!r}; use one of {', '.join(objective_names())}")
    return task


def normalisers(batch: dict[str, np.ndarray], task: PretrainingTask) -> tuple[float, float]:
    """Global counts the losses are divided by: LM targets and sentence labels in the whole batch."""
    lm = task.lm_normaliser(batch["labels"])
    sentence = len(batch["sentence_labels"]) if "sentence_labels" in batch else 0
    return float(max(lm, 1)), float(max(sentence, 1))


def loss_terms(stats: Tensor) -> dict[str, float]:
    """Mean losses of summed :data:`STAT_NAMES` stats: ``loss``, ``lm_loss`` and (NSP / SOP)
    ``sentence_loss``."""
    values = dict(zip(STAT_NAMES, stats.tolist()))
    lm = values["lm_loss"] / max(values["lm_count"], 1.0)
    terms = {"loss": lm, "lm_loss": lm}
    if values["sentence_count"]:
        sentence = values["sentence_loss"] / values["sentence_count"]
        terms.update(loss=lm + sentence, sentence_loss=sentence)
    return terms


class PretrainingLoss(nn.Module):
    """A model plus its objective's loss; distributed wrappers and ``torch.compile`` wrap this.

    ``forward(batch)`` returns ``(loss, stats)``: ``loss`` is this micro-batch's share of the
    global-batch loss (summed LM cross-entropy / ``lm_norm`` + summed sentence cross-entropy /
    ``sentence_norm``), ``stats`` a detached float64 vector of :data:`STAT_NAMES` sums.
    """

    def __init__(self, model: TransformerModel, kind: str) -> None:
        super().__init__()
        self.model = model
        self.kind = kind
        self.task = get_objective(kind)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        terms = self.task.terms(self, batch)
        loss = terms.lm_loss / batch["lm_norm"]
        if terms.sentence_loss is not None:
            loss = loss + terms.sentence_loss / batch["sentence_norm"]
        with torch.no_grad():
            zero = terms.lm_loss.detach().new_zeros(())
            values = [terms.lm_loss.detach(), zero + terms.lm_count, terms.lm_correct, zero, zero, zero]
            if terms.sentence_loss is not None and terms.sentence_correct is not None:
                values[3:] = [
                    terms.sentence_loss.detach(),
                    zero + batch["sentence_labels"].numel(),
                    terms.sentence_correct,
                ]
            stats = torch.stack([value.double() for value in values])
        return loss, stats

    def lm_loss(self, hidden: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Summed cross-entropy of the LM head on ``hidden`` (..., H) against ``targets`` (...)."""
        head = self.model.lm_head
        assert head is not None, "pretraining needs an LM head"
        features = head.features(hidden)
        features = features.reshape(-1, features.shape[-1])
        return linear_cross_entropy(
            features,
            head.decoder.weight,
            head.decoder.bias,
            targets.reshape(-1),
            with_accuracy=not self.training,
        )
