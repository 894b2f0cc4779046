"""transformers model directories: read (single or sharded safetensors, ``pytorch_model.bin``) and
write (:func:`save_hf`, a directory ``transformers.AutoModel*.from_pretrained`` loads)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lmforge.config import Head
from lmforge.errors import CheckpointError, ConfigError
from lmforge.fileio import atomic_replace_dir
from lmforge.models.families.registry import family, family_for_hf
from lmforge.models.io.build import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    LoadedModel,
    build_model,
    check_replaceable,
    head_overrides,
    read_json,
    read_safetensors,
    save_tensors,
    tokenizer_from_dir,
)
from lmforge.models.io.convert import export_weights
from lmforge.models.model import TransformerModel
from lmforge.tokenizers import Tokenizer


def read_hf_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a transformers directory: single or sharded safetensors, else pytorch_model.bin."""
    if (path / WEIGHTS_NAME).is_file():
        return read_safetensors(path / WEIGHTS_NAME)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json(index).get("weight_map", {}).values()))
        weights: dict[str, torch.Tensor] = {}
        for shard in shards:
            weights.update(read_safetensors(path / shard))
        return weights
    bin_file = path / "pytorch_model.bin"
    if bin_file.is_file():
        try:
            state = torch.load(bin_file, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for corrupt or unsafe pickles
            raise CheckpointError(f"{bin_file}: cannot load ({type(exc).__name__}: {exc})") from None
        return dict(state)
    raise CheckpointError(f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def load_hf(path: Path, raw: dict[str, Any], head: Head | None, num_labels: int | None) -> LoadedModel:
    """Load the transformers directory ``path`` whose ``config.json`` parsed to ``raw``."""
    source = str(path / CONFIG_NAME)
    spec = family_for_hf(str(raw.get("model_type")), source)
    try:
        native = spec.config_from_hf(raw, None)
        config, optional = head_overrides(native, head, num_labels)
        if config.head != native.head:
            # The dropout before a head is per transformers head class: take the new head's.
            fresh = spec.config_from_hf(raw, config.head)
            config = config.replace(
                classifier_dropout=fresh.classifier_dropout,
                pooler_dropout=fresh.pooler_dropout and config.pooler,
            )
    except KeyError as exc:
        raise ConfigError(f"{source}: missing field {exc.args[0]!r}") from None
    weights = read_hf_weights(path)
    prefixes = tuple({spec.hf_prefix(h) for h in spec.hf_architectures})
    model = build_model(config, weights, spec.hf_weight_rules(config), str(path), prefixes, optional)
    return LoadedModel(model, tokenizer_from_dir(path), config, str(path))


def save_hf(model: TransformerModel, path: str | Path, tokenizer: Tokenizer | None = None) -> Path:
    """Write a transformers-layout directory that ``AutoModel*.from_pretrained`` loads.

    Like :func:`lmforge.models.io.checkpoint.save`, the directory is built aside and swapped in
    whole: nothing of what ``path`` held before survives, and a crash leaves the old or the new.
    """
    check_replaceable(Path(path))
    config = model.config
    spec = family(config.family)
    weights = export_weights(model.state_dict(), spec.hf_weight_rules(config))
    hf_config = {
        **spec.hf_config(config),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }

    def build(directory: Path) -> None:
        save_tensors(weights, directory / WEIGHTS_NAME)
        (directory / CONFIG_NAME).write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
        if tokenizer is not None:
            tokenizer.save(directory)

    return atomic_replace_dir(path, build)
