"""From a config and token data to the pieces of a run: special ids, model config, example sources."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lmforge.config import ModelConfig
from lmforge.data.knowledge_masking import EntityLexicon, KnowledgeMasking
from lmforge.errors import ConfigError
from lmforge.models import preset_config
from lmforge.tasks.corpus import Corpus, CorpusSource, SpecialIds, require_id, word_starts_from_vocab
from lmforge.tasks.pretraining import get_objective
from lmforge.tokenizers import Tokenizer
from lmforge.train.config import TrainConfig

_ROLES = ("pad", "eos", "bos", "unk", "cls", "sep", "mask")


@dataclass
class DataBundle:
    """The two splits of prepared token data and what they were tokenized with.

    Attributes:
        train / validation: :class:`lmforge.data.TokenDataset` splits (or stand-ins with the
            same members).
        vocab_size: ids the tokenizer produces.
        special_tokens: role (``"pad_token"``, ``"mask_token"``, ...) -> id.
        tokenizer: saved with every checkpoint when known.
        source: where the data came from, for the report.
    """

    train: Corpus
    validation: Corpus
    vocab_size: int
    special_tokens: dict[str, int]
    tokenizer: Tokenizer | None = None
    source: str = "memory"

    @classmethod
    def from_dir(cls, directory: str) -> DataBundle:
        """Open a directory written by ``lmforge data prepare``."""
        from lmforge.data import TokenDataset

        train = TokenDataset(directory, split="train")
        validation = TokenDataset(directory, split="validation")
        return cls(
            train=train,
            validation=validation,
            vocab_size=int(train.manifest["vocab_size"]),
            special_tokens={k: int(v) for k, v in train.manifest.get("special_tokens", {}).items()},
            tokenizer=Tokenizer.from_dir(train.tokenizer_dir),
            source=str(directory),
        )


def resolve_specials(data: DataBundle, config: TrainConfig) -> tuple[SpecialIds, int]:
    """Special ids of the data's tokenizer and the vocabulary size the model needs.

    T5 sentinels are the tokenizer's ``<extra_id_k>`` tokens when it has them; otherwise new ids
    are added above the vocabulary, counting down from the top as T5 does (``<extra_id_0>`` is
    the last id).
    """
    roles = data.special_tokens
    ids: dict[str, Any] = {role: roles.get(f"{role}_token") for role in _ROLES}
    others: tuple[int, ...] = ()
    vocab = data.vocab_size
    if data.tokenizer is not None:
        for role in _ROLES:
            if ids[role] is None:
                ids[role] = data.tokenizer.special_token_id(f"{role}_token")
        added = data.tokenizer.backend.get_added_tokens_decoder()
        others = tuple(sorted(i for i, token in added.items() if token.special))
    sentinels: tuple[int, ...] = ()
    model_vocab = max([vocab, *(i + 1 for i in ids.values() if i is not None)])
    count = get_objective(config.objective.kind).num_sentinels(config.objective)
    if count:
        found = (
            [data.tokenizer.backend.token_to_id(f"<extra_id_{k}>") for k in range(count)]
            if data.tokenizer
            else []
        )
        known = [i for i in found if i is not None]
        if found and len(known) == len(found):
            sentinels = tuple(known)
        else:
            sentinels = tuple(model_vocab + count - 1 - k for k in range(count))
            model_vocab += count
    specials = SpecialIds(vocab_size=vocab, sentinels=sentinels, others=others, **ids)
    return specials, model_vocab


def model_config(config: TrainConfig, specials: SpecialIds, model_vocab: int) -> ModelConfig:
    """The model to train: the preset, the objective's head, the data's vocabulary, then overrides."""
    section = config.model
    multiple = section.vocab_multiple
    objective = get_objective(config.objective.kind)
    fields: dict[str, Any] = {
        "head": objective.head(config.objective),
        "vocab_size": -(-model_vocab // multiple) * multiple,
        "pad_token_id": specials.pad,
        "bos_token_id": specials.bos if specials.bos is not None else specials.cls,
        "eos_token_id": specials.eos if specials.eos is not None else specials.sep,
    }
    fields.update(objective.model_fields(specials))
    # NSP / SOP classify the pooled first token; masked LM alone has no use for a pooler (an
    # unused parameter would also stall DDP's gradient reduction).
    fields["pooler"] = fields["head"] == "pretraining"
    if preset_config(section.preset).positions_from_padding and specials.pad is not None:
        fields["position_offset"] = specials.pad + 1  # RoBERTa: positions start after padding_idx
    fields.update(section.overrides)
    try:
        result = preset_config(section.preset, **fields)
    except TypeError as exc:
        raise ConfigError(f"model: {exc}") from None
    if result.vocab_size < model_vocab:
        raise ConfigError(
            f"model.vocab_size={result.vocab_size} is smaller than the {model_vocab} ids the data and "
            "objective use; remove the override"
        )
    if result.positions == "learned" and config.objective.seq_len > result.max_positions:
        raise ConfigError(
            f"objective.seq_len={config.objective.seq_len} exceeds model.max_positions={result.max_positions}"
        )
    return result


def example_sources(
    data: DataBundle, config: TrainConfig, specials: SpecialIds
) -> tuple[CorpusSource, CorpusSource]:
    """Training and validation example sources for the configured objective."""
    objective = config.objective
    word_table = None
    if objective.whole_word_masking and data.tokenizer is not None:
        word_table = word_starts_from_vocab(data.tokenizer.backend.get_vocab(), max(data.vocab_size, 1))
    knowledge = knowledge_masking(config, data.tokenizer, specials) if objective.masking_units else None
    train, validation = get_objective(objective.kind).sources(
        data.train, data.validation, objective, specials, config.seed, word_table, knowledge
    )
    if train.num_examples == 0:
        raise ConfigError(
            f"{data.source}: the training split yields no {objective.kind} examples of "
            f"seq_len={objective.seq_len}; use more text or a shorter objective.seq_len"
        )
    return train, validation


def knowledge_masking(
    config: TrainConfig, tokenizer: Tokenizer | None, specials: SpecialIds
) -> KnowledgeMasking:
    """ERNIE's unit masking for ``objective.masking_units``; the lexicon is read (and refused
    with its file and line when it does not parse) here, before any training step."""
    objective = config.objective
    assert objective.masking_units is not None
    mask = require_id(specials.mask, "mask token")  # a clear error before any masking is built
    lexicon = None
    if objective.entity_lexicon:
        if tokenizer is None:
            raise ConfigError("objective.entity_lexicon needs the data's tokenizer to spell the entities")
        backend = tokenizer.backend
        lexicon = EntityLexicon.from_source(
            objective.entity_lexicon,
            lambda text: backend.encode(text, add_special_tokens=False).ids,
            specials.unk,
        )
    return KnowledgeMasking(
        objective.masking_units, specials.all(), mask, specials.vocab_size, lexicon,
        objective.mask_probability, objective.mask_replace, objective.random_replace,
    )  # fmt: skip


def batch_tokens(batch: dict[str, np.ndarray]) -> int:
    """Tokens a batch feeds the model: real encoder/decoder inputs, padding excluded."""
    if "attention_mask" in batch:
        count = int(batch["attention_mask"].sum())
    else:
        count = int(batch["input_ids"].size)
    if "decoder_input_ids" in batch:
        count += int(batch["decoder_input_ids"].size)
    return count
