"""`lmforge init`: a fresh model wired to a trained tokenizer, and the Python API behind it."""

from __future__ import annotations

from pathlib import Path

import torch


def test_init_writes_a_fresh_model_wired_to_its_tokenizer(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import lmforge
    from lmforge.cli import app
    from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

    texts = ["the cat sat on the mat", "a dog ran in the park"] * 20
    tokenizer = train_tokenizer(texts, TokenizerTrainConfig(kind="bpe", family="roberta", vocab_size=300))
    tokenizer.save(tmp_path / "tok")
    runner = CliRunner()
    args = ["init", "--preset", "roberta-base", "--tokenizer", str(tmp_path / "tok"), "--out"]
    small = ["hidden_size=32", "num_layers=2", "num_heads=2", "intermediate_size=64", "head=masked_lm"]
    result = runner.invoke(app, [*args, str(tmp_path / "a"), *small])
    assert result.exit_code == 0, result.output
    loaded = lmforge.load(tmp_path / "a")
    config = loaded.config
    assert (config.family, config.head, config.hidden_size, config.num_layers) == (
        "roberta",
        "masked_lm",
        32,
        2,
    )
    assert config.vocab_size == len(tokenizer) and config.pad_token_id == tokenizer.pad_token_id
    assert config.position_offset == tokenizer.pad_token_id + 1  # RoBERTa positions start after padding
    assert loaded.tokenizer is not None and loaded.tokenizer.encode("the cat") == tokenizer.encode("the cat")
    runner.invoke(app, [*args, str(tmp_path / "b"), *small])
    again = lmforge.load(tmp_path / "b").model.state_dict()
    for name, value in loaded.model.state_dict().items():  # --seed 0 both times
        torch.testing.assert_close(again[name], value)
    bad = runner.invoke(app, [*args, str(tmp_path / "c"), "hidden_sise=32"])
    assert "unknown model config field(s) hidden_sise" in str(bad.exception)


def test_init_model_api_matches_the_cli_and_names_a_bad_tokenizer(tmp_path: Path) -> None:
    import pytest

    from lmforge.errors import LmforgeError
    from lmforge.models.init import init_model, load_tokenizer
    from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

    texts = ["the cat sat on the mat", "a dog ran in the park"] * 20
    train_tokenizer(texts, TokenizerTrainConfig(kind="bpe", family="gpt2", vocab_size=300)).save(
        tmp_path / "tok"
    )
    model, config = init_model(
        "gpt2-124m", str(tmp_path / "tok"), tmp_path / "m", seed=3, hidden_size=32, num_layers=1, num_heads=2
    )
    assert config.vocab_size == len(load_tokenizer(tmp_path / "tok"))
    assert (config.hidden_size, config.num_layers) == (32, 1)
    assert (tmp_path / "m" / "config.json").is_file()
    with pytest.raises(LmforgeError, match="--tokenizer .*nowhere.*lmforge tokenizer train"):
        load_tokenizer(tmp_path / "nowhere")
