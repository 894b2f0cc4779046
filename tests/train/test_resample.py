"""Random over/under-sampling of the training classes (`--resample`)."""

from __future__ import annotations

import numpy as np
import pytest

from lmforge.errors import ConfigError
from lmforge.train.resample import resample_indices

LABELS = np.array([0] * 30 + [1] * 6 + [2] * 12)


def test_oversample_balances_to_the_largest_class_and_keeps_every_example() -> None:
    indices = resample_indices(LABELS, "oversample", seed=3)
    assert np.bincount(LABELS[indices]).tolist() == [30, 30, 30]
    assert set(indices.tolist()) >= set(range(len(LABELS)))  # nothing dropped
    assert np.all(np.diff(indices) >= 0)


def test_undersample_balances_to_the_smallest_class_without_repeats() -> None:
    indices = resample_indices(LABELS, "undersample", seed=3)
    assert np.bincount(LABELS[indices]).tolist() == [6, 6, 6]
    assert len(set(indices.tolist())) == len(indices)
    assert set(np.flatnonzero(LABELS == 1).tolist()) <= set(indices.tolist())  # the smallest class whole


@pytest.mark.parametrize("mode", ["oversample", "undersample"])
def test_resampling_is_a_function_of_the_seed(mode: str) -> None:
    first, again = resample_indices(LABELS, mode, seed=7), resample_indices(LABELS, mode, seed=7)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, resample_indices(LABELS, mode, seed=8))


def test_none_and_errors() -> None:
    assert resample_indices(LABELS, "none").tolist() == list(range(len(LABELS)))
    with pytest.raises(ConfigError, match="smote"):
        resample_indices(LABELS, "smote")


def test_finetune_cli_resamples_the_training_split(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """End to end: with --resample undersample the run trains on a balanced, smaller set."""
    import csv
    import json
    import random

    import torch
    from typer.testing import CliRunner

    import lmforge
    from lmforge.cli import app
    from lmforge.models import TransformerModel, preset_config
    from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

    rng = random.Random(0)
    rows = [(" ".join(rng.choice(["good", "bad", "film", "plot"]) for _ in range(4)), "a" if i < 24 else "b")
            for i in range(32)]  # fmt: skip
    with (tmp_path / "train.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text", "label"), *rows])
    tokenizer = train_tokenizer([r[0] for r in rows], TokenizerTrainConfig(kind="wordpiece", vocab_size=40))
    torch.manual_seed(0)
    config = preset_config(
        "bert-tiny", vocab_size=tokenizer.vocab_size, hidden_size=16, num_heads=2, num_layers=1,
        intermediate_size=32, max_positions=128,
    )  # fmt: skip
    lmforge.save(TransformerModel(config), tmp_path / "tiny", tokenizer)
    for mode, examples in (("undersample", 16), ("oversample", 48)):
        out = tmp_path / mode
        args = ["finetune", "--task", "classification", "--model", str(tmp_path / "tiny"), "--data",
                str(tmp_path / "train.csv"), "--out", str(out), "--epochs", "1", "--batch-size", "8",
                "--resample", mode, "--threads", "1"]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        assert report["steps"] == examples // 8  # one epoch over the resampled set
