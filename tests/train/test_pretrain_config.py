"""Recipes and overrides are checked against the TrainConfig dataclasses; errors name file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pretrain_utils import memory_data

from lmforge.errors import ConfigError
from lmforge.train import Trainer, load_config
from lmforge.train.build import model_config, resolve_specials

RECIPES = sorted((Path(__file__).parents[2] / "recipes" / "pretrain").glob("*.yaml"))


def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_recipe_and_overrides_fill_the_dataclasses(tmp_path: Path) -> None:
    path = _recipe(
        tmp_path, "model:\n  preset: bert-tiny\n  num_layers: 3\noptim:\n  lr: 3e-4\nmax_steps: 50\n"
    )
    config = load_config(path, ["optim.betas=[0.9, 0.95]", "objective.kind=masked_lm", "model.dropout=0.1"])
    assert config.model.preset == "bert-tiny"
    assert config.model.overrides == {"num_layers": 3, "dropout": 0.1}
    assert config.optim.lr == 3e-4 and config.optim.betas == (0.9, 0.95)  # YAML reads 3e-4 as text
    assert config.max_steps == 50 and config.objective.kind == "masked_lm"
    assert config.optim.clip_grad_norm == 1.0  # defaults stay
    assert load_config(None, ["optim.clip_grad_norm=null"]).optim.clip_grad_norm is None


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("optim:\n  lrr: 0.1\n", [], r"recipe\.yaml: unknown field 'optim\.lrr'"),
        ("max_step: 10\n", [], r"recipe\.yaml: unknown field 'max_step'"),
        ("model:\n  hidden: 64\n", [], r"recipe\.yaml: unknown field 'model\.hidden'"),
        ("max_steps: ten\n", [], r"recipe\.yaml: field 'max_steps' must be an integer"),
        ("objective:\n  kind: clm\n", [], r"field 'objective\.kind': 'clm' is not one of"),
        ("optim:\n  betas: [0.9]\n", [], r"field 'optim\.betas' must be a list of 2 values"),
        (
            "max_steps: 5\n",
            ["data.batch_sise=3"],
            r"override 'data\.batch_sise=3': unknown field 'data\.batch_sise'",
        ),
        ("", ["optim.lr"], r"override 'optim\.lr': expected key=value"),
        ("", ["compile=maybe"], r"field 'compile' must be true or false"),
        ("", ["objective.sentence_task=nsp"], r"sentence_task needs objective.kind: masked_lm"),
        ("", ["objective.mask_probability=1.5"], r"objective\.mask_probability' must be in \(0, 1\)"),
        ("max_steps: [1\n", [], r"recipe\.yaml: line \d+ invalid YAML"),
    ],
)
def test_errors_name_file_and_field(tmp_path: Path, text: str, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_recipe(tmp_path, text), overrides)


def test_batch_must_split_over_micro_batches(tmp_path: Path) -> None:
    config = load_config(None, ["data.batch_size=6", "data.micro_batch_size=4", "model.preset=gpt2-tiny"])
    with pytest.raises(ConfigError, match="micro_batch_size=4"):
        Trainer(config, memory_data(40), tmp_path)


def test_vocab_and_positions_are_checked() -> None:
    data = memory_data(40)
    config = load_config(None, ["model.vocab_size=10"])
    specials, vocab = resolve_specials(data, config)
    with pytest.raises(ConfigError, match="model.vocab_size=10 is smaller"):
        model_config(config, specials, vocab)
    config = load_config(None, ["model.max_positions=16", "objective.seq_len=32"])
    with pytest.raises(ConfigError, match="exceeds model.max_positions=16"):
        model_config(config, specials, vocab)


def test_t5_sentinels_count_down_from_the_top_when_the_tokenizer_has_none() -> None:
    config = load_config(
        None, ["model.preset=t5-tiny", "objective.kind=span_corruption", "objective.seq_len=24"]
    )
    specials, vocab = resolve_specials(memory_data(40), config)
    assert specials.sentinels[0] == vocab - 1 and list(specials.sentinels) == list(range(vocab - 1, 95, -1))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipes_load_and_build(recipe: Path) -> None:
    config = load_config(recipe)
    specials, vocab = resolve_specials(memory_data(40), config)
    built = model_config(config, specials, vocab)
    assert built.head in ("causal_lm", "masked_lm", "pretraining", "seq2seq_lm")
    header = recipe.read_text().splitlines()[0]
    assert header.startswith("#"), "recipes start with a comment: what they train and measured figures"


def test_recipe_set_is_complete() -> None:
    names = {p.stem for p in RECIPES}
    assert {"gpt-bible-tiny", "bert-zh-tiny", "albert-zh-tiny", "roberta-zh-tiny", "t5-tiny"} <= names
