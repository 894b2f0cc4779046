"""Freshly initialised models wired to a tokenizer (``lmforge init``), and the tokenizer lookup
that ``lmforge init`` and ``lmforge data prepare`` share.

A tokenizer is named the way users name models: a tokenizer or model directory, a ``.gguf``
file, a model asset, or ``gpt2-bpe``. Reading a GGUF file is the models stage's job
(:mod:`lmforge.models.io.gguf`), so the lookup lives here rather than in :mod:`lmforge.tokenizers`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmforge.assets import asset_path, list_assets
from lmforge.config import ModelConfig
from lmforge.errors import ConfigError, LmforgeError
from lmforge.fileio import check_output_dir
from lmforge.models import TransformerModel
from lmforge.models.families.registry import preset_for_tokenizer
from lmforge.models.io.gguf import read_gguf
from lmforge.tokenizers import Tokenizer
from lmforge.tokenizers.gpt2_bpe import load_gpt2_bpe

__all__ = ["init_model", "load_tokenizer"]


def load_tokenizer(spec: str | Path) -> Any:
    """A tokenizer from a tokenizer / model directory, a .gguf file, a model asset or ``gpt2-bpe``.

    Raises:
        LmforgeError: ``spec`` is none of these (the message says how to train one).
    """
    spec = str(spec)
    path = Path(spec)
    if not path.exists() and spec == "gpt2-bpe":
        return load_gpt2_bpe()
    if not path.exists() and spec in {a.name for a in list_assets() if a.kind == "model"}:
        path = asset_path(spec)
    if path.is_file() and path.suffix == ".gguf":
        return Tokenizer.from_gguf(read_gguf(path).metadata)
    if path.is_dir() and (path / "encoder.json").is_file():
        return load_gpt2_bpe(path)
    if path.is_dir() and any((path / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        return Tokenizer.from_dir(path)
    raise LmforgeError(
        f"--tokenizer {spec}: not a tokenizer or model directory (tokenizer.json / vocab.txt), .gguf file, "
        "model asset or gpt2-bpe; train one with `lmforge tokenizer train`"
    )


def init_model(
    preset: str, tokenizer: Any, out: str | Path, *, seed: int = 0, **overrides: Any
) -> tuple[TransformerModel, ModelConfig]:
    """Write a randomly initialised ``preset`` sized and wired for ``tokenizer`` into ``out``.

    Args:
        preset: model preset (``bert-tiny``, ``gpt2-124m``, ``t5-tiny`` ...).
        tokenizer: a tokenizer object, or a name :func:`load_tokenizer` accepts.
        out: checkpoint directory to write (``lmforge.load`` reads it).
        seed: seed of the random initialisation (same seed, same weights).
        overrides: model config fields (``hidden_size=128``, ``num_layers=2``, ``head="masked_lm"``).

    Returns:
        The model and its config.
    """
    from lmforge.models.io.checkpoint import save

    check_output_dir(out)
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
    config = preset_for_tokenizer(preset, tok, **overrides)
    if config.vocab_size < len(tok):
        # Ids past the embedding table would crash the first forward pass of any later run.
        raise ConfigError(
            f"vocab_size={config.vocab_size} is smaller than the tokenizer's {len(tok)} tokens; drop the "
            f"override (it defaults to the tokenizer's size) or give vocab_size >= {len(tok)}"
        )
    torch.manual_seed(seed)
    model = TransformerModel(config)
    save(model, out, tok)
    return model, config
