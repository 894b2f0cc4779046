"""Knowledge masking in the masked-LM objective: recipe settings checked before training, a lexicon
that does not parse refused before the first step, and an ERNIE run whose batches mask whole units."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pretrain_utils import QUIET, memory_data

from lmforge.errors import ConfigError, DataError
from lmforge.train import load_config, pretrain

ERNIE = [
    "model.preset=ernie-tiny", "model.hidden_size=32", "model.num_heads=2", "model.intermediate_size=64",
    "objective.kind=masked_lm", "objective.seq_len=32",
]  # fmt: skip
_WORDS = ["the", "rates", "rose", "in", "trade", "city", "and", "of", "a", "is", "new", "bank"]
_ENTITIES = ["bank of england", "new york", "london"]


@pytest.fixture(scope="module")
def english_words(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """WordPiece (BERT specials) data with whitespace word starts, prepared once."""
    from lmforge.data import prepare
    from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

    root = tmp_path_factory.mktemp("english")
    rng = np.random.default_rng(0)
    lines = [
        " ".join([*rng.choice(_WORDS, 4), str(rng.choice(_ENTITIES)), *rng.choice(_WORDS, 5)])
        for _ in range(300)
    ]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n")
    tokenizer = train_tokenizer(lines, TokenizerTrainConfig(kind="wordpiece", vocab_size=60, family="bert"))
    prepare([str(root / "corpus.txt")], tokenizer, root / "data", validation_fraction=0.1, workers=1,
            word_segmentation="whitespace")  # fmt: skip
    return root / "data"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["objective.masking_units={word: 1}"], "unknown masking unit word; use token, phrase, entity"),
        (["objective.masking_units={entity: 1}"], "entity units but objective.entity_lexicon is not set"),
        (["objective.masking_units={phrase: 1}", "objective.whole_word_masking=true"], "both choose"),
        (["objective.masking_units={token: -1}"], "weight must be a number >= 0"),
        (
            ["objective.kind=causal_lm", "objective.masking_units={token: 1}"],
            "needs objective.kind: masked_lm",
        ),
    ],
)
def test_bad_masking_settings_fail_when_the_recipe_loads(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [*ERNIE, *overrides])


def test_unparsable_lexicon_is_refused_before_training(tmp_path: Path, english_words: Path) -> None:
    lexicon = tmp_path / "entities.tsv"
    lexicon.write_text("london\tLOC\nnew york\tLOC\tcity\n")
    config = load_config(None, [*ERNIE, *QUIET, "max_steps=2", "objective.masking_units={entity: 1}",
                                f"objective.entity_lexicon={lexicon}"])  # fmt: skip
    with pytest.raises(DataError, match=r"entities.tsv:2: expected 'entity' or 'entity<TAB>type'"):
        pretrain(config, tmp_path / "run", data=english_words)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_phrase_units_need_word_boundaries(tmp_path: Path) -> None:
    config = load_config(None, [*ERNIE, *QUIET, "max_steps=1", "objective.masking_units={phrase: 1}"])
    with pytest.raises(ConfigError, match="--word-segmentation"):
        pretrain(config, tmp_path / "run", data=memory_data(words=False))


def test_ernie_pretrains_with_entity_and_phrase_units(tmp_path: Path, english_words: Path) -> None:
    """A few steps of mixed levels run; entity-level batches mask each lexicon entity whole."""
    from lmforge.train.build import DataBundle, example_sources, resolve_specials

    lexicon = tmp_path / "entities.txt"
    lexicon.write_text("# places and institutions\nbank of england\tORG\nnew york\tLOC\nlondon\tLOC\n")
    overrides = [
        "objective.masking_units={entity: 2, phrase: 1, token: 1}",
        f"objective.entity_lexicon={lexicon}",
    ]
    config = load_config(None, [*ERNIE, *QUIET, "max_steps=3", "eval_batches=1", *overrides])
    report = pretrain(config, tmp_path / "run", data=english_words)
    assert report["steps"] == 3 and np.isfinite(report["final_val_loss"])

    # At the entity level (token and phrase rows may split an entity, as they should), every
    # occurrence of a lexicon entity is masked whole or not at all. "bank of england" is 8
    # WordPiece tokens here: a 30% rate gives each 32-token row a budget it fits in.
    entity_level = ["objective.masking_units={entity: 1}", "objective.mask_probability=0.3"]
    config = load_config(None, [*ERNIE, *entity_level, f"objective.entity_lexicon={lexicon}"])
    data = DataBundle.from_dir(str(english_words))
    source, _ = example_sources(data, config, resolve_specials(data, config)[0])
    batch = source.collate(np.arange(16), np.random.default_rng(0))
    assert data.tokenizer is not None
    bank = data.tokenizer.backend.encode("bank of england", add_special_tokens=False).ids
    # Rebuild the originals (labels hold them where masked) and check the planted entity.
    originals = np.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])
    whole = partial = 0
    for row in range(len(originals)):
        for start in range(originals.shape[1] - len(bank) + 1):
            if originals[row, start : start + len(bank)].tolist() == bank:
                picked = batch["labels"][row, start : start + len(bank)] != -100
                whole += int(picked.all())
                partial += int(picked.any() and not picked.all())
    assert partial == 0 and whole > 0


def test_unit_masking_without_a_mask_token_is_a_clear_error(tmp_path: Path) -> None:
    data = memory_data()
    data.special_tokens.pop("mask_token")
    config = load_config(None, [*ERNIE, *QUIET, "max_steps=1", "objective.masking_units={token: 1}"])
    with pytest.raises(ConfigError, match="the tokenizer of the data has no mask token"):
        pretrain(config, tmp_path / "run", data=data)
