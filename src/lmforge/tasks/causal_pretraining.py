"""Causal LM pretraining (``objective.kind: causal_lm``): GPT-2 style next-token prediction over
documents joined with EOS and cut into ``seq_len`` blocks (no padding).

Every position of a block but the last predicts the next token, so a batch's loss is divided by
``B * (T - 1)``. Fine-tuning a causal LM on texts or conversations is :mod:`lmforge.tasks.causal`.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from lmforge.config import Head
from lmforge.tasks.corpus import CorpusSource, ObjectiveConfig, concat_documents, require_id
from lmforge.tasks.pretraining import LMTerms, PretrainingLoss, PretrainingTask, register_objective

__all__ = ["CausalLMSource", "CausalPretrainingTask"]


class CausalLMSource(CorpusSource):
    """GPT-2 style: documents joined with EOS, cut into ``seq_len`` blocks (no padding)."""

    def prepare(self) -> int:
        corpus, objective, specials = self.corpus, self.objective, self.specials
        separator = specials.eos if specials.eos is not None else specials.sep
        self.stream, _ = concat_documents(corpus, require_id(separator, "EOS token"))
        return len(self.stream) // objective.seq_len

    def collate(self, indices: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        length = self.objective.seq_len
        ids = self.stream[indices[:, None] * length + np.arange(length)]  # (B, T)
        return {"input_ids": ids, "labels": ids}


class CausalPretrainingTask(PretrainingTask):
    """Next-token prediction with a ``causal_lm`` head."""

    kind = "causal_lm"
    source_class = CausalLMSource

    def head(self, objective: ObjectiveConfig) -> Head:
        return "causal_lm"

    def lm_normaliser(self, labels: np.ndarray) -> int:
        return labels.shape[0] * (labels.shape[1] - 1)  # every position but the last of a block

    def terms(self, loss: PretrainingLoss, batch: dict[str, Tensor]) -> LMTerms:
        labels = batch["labels"]
        hidden = loss.model.encode(batch["input_ids"], batch.get("attention_mask"))
        lm_loss, lm_correct = loss.lm_loss(hidden[:, :-1], labels[:, 1:])  # next-token targets
        return LMTerms(lm_loss, lm_correct, labels[:, 1:].numel())


register_objective(CausalPretrainingTask())
