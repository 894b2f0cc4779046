"""Back-translation augmentation: translate a text to a pivot language and back, greedily.

It lives in the generate stage because it decodes; the fine-tuning harness (train stage, below
generate) only receives it as a :class:`lmforge.data.augment.TextAugmenter` from its caller (the
CLI), the same shape as the text-level ``deletion`` / ``swap`` augmenters of
:mod:`lmforge.data.augment`.

One encoder-decoder checkpoint can serve both directions when it was trained on both (with task
prefixes such as T5's ``"translate English to Japanese: "``), or two checkpoints are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmforge.errors import ConfigError
from lmforge.generate import GenerationConfig, generate
from lmforge.models.io.checkpoint import LoadedModel, load

__all__ = ["BackTranslator", "load_back_translator", "translate"]


def translate(
    loaded: LoadedModel,
    texts: Sequence[str],
    prefix: str = "",
    max_new_tokens: int = 128,
    batch_size: int = 16,
    max_length: int = 256,
) -> list[str]:
    """Greedy translations of ``texts`` with an encoder-decoder model (``prefix`` before each input)."""
    if not loaded.config.is_encoder_decoder:
        raise ConfigError(
            f"back-translation needs an encoder-decoder (seq2seq) model; {loaded.source} is "
            f"{loaded.config.family} with head {loaded.config.head!r}"
        )
    if loaded.tokenizer is None:
        raise ConfigError(f"{loaded.source}: no tokenizer saved with the model")
    tokenizer, model = loaded.tokenizer, loaded.model
    device = next(model.parameters()).device
    out: list[str] = []
    was_training = model.training
    model.eval()
    try:
        for begin in range(0, len(texts), batch_size):
            chunk = [prefix + t for t in texts[begin : begin + batch_size]]
            batch = tokenizer.batch_encode(chunk, max_length=max_length)
            ids = generate(
                model,
                batch["input_ids"].to(device),
                batch["attention_mask"].to(device),
                GenerationConfig(max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id),
            )
            out.extend(t.strip() for t in tokenizer.batch_decode(ids))
    finally:
        model.train(was_training)
    return out


@dataclass
class BackTranslator:
    """``augmenter(texts, rng)``: each text translated to the pivot and back (greedy, so ``rng`` is unused).

    Attributes:
        forward: source -> pivot model.
        backward: pivot -> source model (``None``: ``forward`` again, with ``backward_prefix``).
        forward_prefix: text put before each source text (e.g. ``"translate en to ja: "``).
        backward_prefix: text put before each pivot text.
        max_new_tokens: longest translation, in tokens.
        batch_size: texts per decoding batch.
    """

    forward: LoadedModel
    backward: LoadedModel | None = None
    forward_prefix: str = ""
    backward_prefix: str = ""
    max_new_tokens: int = 128
    batch_size: int = 16
    name: str = "backtranslation"

    def __call__(self, texts: Sequence[str], rng: np.random.Generator) -> list[str]:
        if not texts:
            return []
        with torch.no_grad():
            pivot = translate(self.forward, texts, self.forward_prefix, self.max_new_tokens, self.batch_size)
            back = translate(
                self.backward or self.forward,
                pivot,
                self.backward_prefix,
                self.max_new_tokens,
                self.batch_size,
            )
        # An empty round trip would train on an empty input: keep the original text instead.
        return [b if b.strip() else t for b, t in zip(back, texts)]


def load_back_translator(
    models: str | Path | Sequence[str | Path],
    forward_prefix: str = "",
    backward_prefix: str = "",
    max_new_tokens: int = 128,
) -> BackTranslator:
    """A :class:`BackTranslator` from one checkpoint (both directions) or two (forward, backward)."""
    paths = [models] if isinstance(models, (str, Path)) else list(models)
    if not 1 <= len(paths) <= 2:
        raise ConfigError(f"--augment-model takes one or two seq2seq checkpoints, got {len(paths)}")
    loaded = [load(p) for p in paths]
    return BackTranslator(
        loaded[0], loaded[1] if len(loaded) == 2 else None, forward_prefix, backward_prefix, max_new_tokens
    )
