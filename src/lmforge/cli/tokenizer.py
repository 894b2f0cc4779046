"""``lmforge tokenizer train``: a BPE / WordPiece / Unigram tokenizer with a family's special tokens."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from lmforge.cli.options import console


def tokenizer_train(
    kind: Annotated[str, typer.Option(help="bpe (byte-level), wordpiece or unigram.")],
    vocab_size: Annotated[int, typer.Option(help="Final vocabulary size, special tokens included.")],
    inputs: Annotated[
        list[str], typer.Option("--input", help="Text/JSONL/CSV file (.gz too) or corpus asset; repeat.")
    ],
    out: Annotated[Path, typer.Option(help="Directory to write tokenizer.json + tokenizer_config.json.")],
    family: Annotated[
        str | None, typer.Option(help="gpt2|llama|roberta (bpe), bert (wordpiece), t5|albert (unigram).")
    ] = None,
    lowercase: Annotated[bool, typer.Option("--lowercase", help="Lowercase the text (uncased).")] = False,
    min_frequency: Annotated[int, typer.Option(help="Minimum count of a merge / piece.")] = 2,
    text_column: Annotated[str | None, typer.Option(help="Field / column of JSONL / CSV inputs.")] = None,
    max_length: Annotated[int | None, typer.Option(help="model_max_length to record.")] = None,
    more_inputs: Annotated[
        list[str] | None,
        typer.Argument(help="More inputs: `--input a.txt b.txt` works too.", show_default=False),
    ] = None,
) -> None:
    """Train a tokenizer with a model family's special tokens and save it."""
    from lmforge.data import clean_text, iter_texts
    from lmforge.fileio import check_output_dir
    from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

    check_output_dir(out)
    inputs = [*inputs, *(more_inputs or [])]
    config = TokenizerTrainConfig(kind, vocab_size, family, lowercase, min_frequency, max_length)  # type: ignore[arg-type]
    start = time.perf_counter()
    tokenizer = train_tokenizer((clean_text(t) for t in iter_texts(inputs, text_column)), config)
    tokenizer.save(out)
    ids = {role: tokenizer.backend.token_to_id(token) for role, token in tokenizer.special_tokens.items()}
    console.print(
        f"trained {kind}/{config.resolved_family} tokenizer: vocab {tokenizer.vocab_size}, "
        f"special {ids}, {time.perf_counter() - start:.1f}s -> [bold]{out}[/bold]"
    )
