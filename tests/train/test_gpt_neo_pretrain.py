"""GPT-Neo pretrains through the shared loop (local layers narrower than the blocks) and the trained
model leaves as a transformers GPTNeoForCausalLM with the same logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from pretrain_utils import QUIET, memory_data

import lmforge
from lmforge.errors import ConfigError
from lmforge.train import load_config, pretrain

GPT_NEO = [
    "model.preset=gpt-neo-tiny", "model.hidden_size=32", "model.num_heads=2", "model.intermediate_size=64",
    "model.num_layers=2", "model.max_positions=32", "model.local_window=4", "objective.kind=causal_lm",
    "objective.seq_len=16",
]  # fmt: skip


def test_gpt_neo_learns_the_pattern_and_exports(tmp_path: Path) -> None:
    config = load_config(None, [*GPT_NEO, *QUIET, "max_steps=30", "eval_every=30", "optim.lr=1e-2"])
    report = pretrain(config, tmp_path / "run", data=memory_data())
    assert report["final_val_loss"] < 3.5  # log(vocab) = 4.56; the text counts upwards
    loaded = lmforge.load(tmp_path / "run" / "model")
    assert loaded.config.layer_windows() == [None, 4]
    lmforge.save_hf(loaded.model, tmp_path / "hf")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.arange(8, 28)[None]  # 20 tokens: longer than the window
    with torch.no_grad():
        diff = (theirs(input_ids=ids).logits - loaded.model(ids).logits).abs().max()
    assert float(diff) <= 1e-4


def test_window_longer_than_the_context_is_refused_before_training(tmp_path: Path) -> None:
    settings = [*GPT_NEO[:-3], "model.local_window=64", "objective.kind=causal_lm", "objective.seq_len=16"]
    config = load_config(None, [*settings, *QUIET, "max_steps=2"])
    with pytest.raises(
        ConfigError, match=r"'local_window' \(64\) is larger than the context \(max_positions 32\)"
    ):
        pretrain(config, tmp_path / "run", data=memory_data())
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
