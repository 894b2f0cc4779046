"""``lmforge data prepare``: corpora cleaned, deduplicated, split and tokenized for pretraining."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from lmforge.cli.options import console, err_console


def data_prepare(
    inputs: Annotated[
        list[str], typer.Option("--input", help="Text/JSONL/CSV file (.gz too) or corpus asset; repeat.")
    ],
    tokenizer: Annotated[str, typer.Option(help="Tokenizer dir, model dir / .gguf / asset, or gpt2-bpe.")],
    out: Annotated[Path, typer.Option(help="Output directory (manifest.json, tokenizer/, memmaps).")],
    text_column: Annotated[str | None, typer.Option(help="Field / column of JSONL / CSV inputs.")] = None,
    workers: Annotated[int | None, typer.Option(help="Tokenizer processes (default min(4, CPUs)).")] = None,
    on_error: Annotated[str, typer.Option(help="raise, or skip (and count) bad records.")] = "raise",
    word_segmentation: Annotated[
        str, typer.Option(help="none, whitespace or jieba: word starts for whole-word masking.")
    ] = "none",
    validation_fraction: Annotated[float, typer.Option(help="Share of documents for validation.")] = 0.01,
    min_chars: Annotated[int, typer.Option(help="Drop shorter documents.")] = 1,
    max_chars: Annotated[int | None, typer.Option(help="Drop longer documents.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rewrite even if up to date.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    more_inputs: Annotated[
        list[str] | None,
        typer.Argument(help="More inputs: `--input a.txt b.txt` works too.", show_default=False),
    ] = None,
) -> None:
    """Clean, deduplicate, split and tokenize corpora into memmapped token data."""
    from lmforge.data import prepare
    from lmforge.models.init import load_tokenizer

    manifest = prepare(
        [*inputs, *(more_inputs or [])],
        load_tokenizer(tokenizer),
        out,
        text_column=text_column,
        validation_fraction=validation_fraction,
        workers=workers,
        word_segmentation=word_segmentation,  # type: ignore[arg-type]
        on_error=on_error,  # type: ignore[arg-type]
        min_chars=min_chars,
        max_chars=max_chars,
        force=force,
    )
    if as_json:
        print(json.dumps(manifest, ensure_ascii=False))
        return
    if manifest["up_to_date"]:
        console.print(f"{out}: up to date (same inputs, tokenizer and settings); nothing written")
        return
    report, splits = manifest["report"], manifest["splits"]
    console.print(
        f"{report['records_read']} records -> {report['documents']} documents "
        f"({report['duplicates_exact']} exact + {report['duplicates_normalized']} normalized duplicates, "
        f"{report['removed_empty'] + report['removed_short']} too short, {report['removed_long']} too long, "
        f"{report['skipped_bad_records']} bad records skipped)"
    )
    for message in report["skipped_examples"][:5]:
        err_console.print(f"[yellow]skipped[/yellow] {message}", highlight=False)
    for name, info in splits.items():
        console.print(f"{name}: {info['num_documents']} documents, {info['num_tokens']:,} tokens")
    console.print(f"{manifest['dtype']} ids, {report['seconds']:.1f}s -> [bold]{out}[/bold]")
