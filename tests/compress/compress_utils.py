"""A tiny fine-tuned-looking classifier and its data, shared by the compression tests
(``from compress_utils import tiny_classifier``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import lmforge
from lmforge.models import TransformerModel, preset_config

WORDS = ["good", "great", "fine", "bad", "awful", "dull", "the", "film", "plot", "was"]


def write_sentiment(tmp_path: Path, n: int = 160, seed: int = 0) -> list[tuple[str, int]]:
    """train.csv / test.csv halves of a two-class word-choice task (labels neg / pos)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 2
        pool = WORDS[:3] if label else WORDS[3:6]
        rows.append((" ".join(rng.choice(pool + WORDS[6:], 6)), label))
    for name, part in (("train", rows[: n // 2]), ("test", rows[n // 2 :])):
        lines = ["text,label", *(f"{t},{'pos' if y else 'neg'}" for t, y in part)]
        (tmp_path / f"{name}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rows


def tiny_classifier(tmp_path: Path, num_layers: int = 2, seed: int = 0, **shape: int) -> Path:
    """A BERT-style classifier (random weights) saved with a WordPiece tokenizer and the
    ``config.extra`` a fine-tuning run records, plus train.csv / test.csv beside it."""
    from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

    rows = write_sentiment(tmp_path)
    tokenizer = train_tokenizer(
        [t for t, _ in rows], TokenizerTrainConfig(kind="wordpiece", vocab_size=60, lowercase=True)
    )
    torch.manual_seed(seed)
    sizes = {"hidden_size": 32, "num_heads": 4, "intermediate_size": 64, **shape}
    config = preset_config(
        "bert-tiny", vocab_size=tokenizer.vocab_size, head="sequence_classification", num_layers=num_layers,
        max_positions=32, **sizes,
    )  # fmt: skip
    model = TransformerModel(config)
    model.config.extra.update(id2label=["neg", "pos"], task="classification", max_length=16)
    lmforge.save(model, tmp_path / "clf", tokenizer)
    return tmp_path / "clf"
