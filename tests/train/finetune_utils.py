"""A tiny fine-tuning workspace shared by the fine-tuning tests: a random BERT with a WordPiece
tokenizer trained on the test vocabulary, sentiment CSVs whose keywords decide the label, and
CoNLL files with person / place entities."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import torch

import lmforge
from lmforge.models import TransformerModel, preset_config
from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

POSITIVE = ["good", "great", "excellent", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "terrible", "poor", "nasty"]
FILLER = ["the", "movie", "was", "a", "film", "it", "plot", "and", "acting", "story"]
PEOPLE, PLACES = ["alice", "bob", "carol"], ["paris", "rome", "oslo"]


def sentence(rng: random.Random, label: int) -> str:
    words = [rng.choice(FILLER) for _ in range(4)] + [rng.choice(POSITIVE if label else NEGATIVE)] * 2
    rng.shuffle(words)
    return " ".join(words)


def write_csv(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "stars"])
        for _ in range(n):
            label = rng.randrange(2)
            writer.writerow([sentence(rng, label), 5 if label else 1])  # integer labels


def write_conll(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        for _ in range(rng.randrange(3, 7)):
            kind = rng.random()
            if kind < 0.2:
                lines.append(f"{rng.choice(PEOPLE)} B-PER")
            elif kind < 0.4:
                lines.append(f"{rng.choice(PLACES)} B-LOC")
            else:
                lines.append(f"{rng.choice(FILLER)} O")
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_workspace(root: Path) -> Path:
    """Write the tiny model (``root/tiny``) and the data files into ``root``; returns ``root``."""
    rng = random.Random(0)
    texts = [sentence(rng, i % 2) for i in range(300)] + [" ".join(PEOPLE + PLACES)] * 20
    tokenizer = train_tokenizer(texts, TokenizerTrainConfig(kind="wordpiece", vocab_size=100, lowercase=True))
    torch.manual_seed(0)
    config = preset_config(
        "bert-tiny", vocab_size=tokenizer.vocab_size, hidden_size=32, num_heads=2,
        intermediate_size=64, max_positions=128,
    )  # fmt: skip
    lmforge.save(TransformerModel(config), root / "tiny", tokenizer)
    write_csv(root / "train.csv", 96, 1)
    write_csv(root / "val.csv", 32, 2)
    write_csv(root / "test.csv", 32, 3)
    write_conll(root / "train.conll", 60, 4)
    write_conll(root / "test.conll", 20, 5)
    return root
