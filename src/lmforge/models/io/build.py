"""What every loader and saver shares: reading config and weight files, building a checked model
from them, and writing a model directory whole."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lmforge.config import Head, ModelConfig
from lmforge.errors import CheckpointError
from lmforge.fileio import atomic_replace_dir, default_permissions, read_json_object
from lmforge.models.families.registry import family
from lmforge.models.io.convert import Rule, import_weights
from lmforge.models.model import TransformerModel
from lmforge.tokenizers import Tokenizer

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_HEAD_PARAMS = ("lm_head.", "classifier.", "pooler.")


@dataclass
class LoadedModel:
    """What :func:`~lmforge.models.io.checkpoint.load` returns: the model, its tokenizer (None if the
    source has none) and config."""

    model: TransformerModel
    tokenizer: Tokenizer | None
    config: ModelConfig
    source: str


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; invalid JSON is a :class:`CheckpointError` naming file and line."""
    return read_json_object(path, CheckpointError)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: cannot read safetensors file ({exc}); it is corrupt or truncated"
        ) from None


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write ``tensors`` (moved to the CPU) as safetensors at ``path``.

    A plain write: the savers build the whole directory aside and swap it in
    (:func:`lmforge.fileio.atomic_replace_dir`), which is what makes it atomic.
    """
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
    default_permissions(path)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a model directory: single or sharded safetensors, else ``pytorch_model.bin``
    (older transformers saves)."""
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


def write_model_files(
    directory: Path,
    weights: dict[str, torch.Tensor],
    config_json: dict[str, Any],
    tokenizer: Tokenizer | None,
) -> None:
    """Write weights, ``config.json`` and the tokenizer files into the existing ``directory``."""
    save_tensors(weights, directory / WEIGHTS_NAME)
    (directory / CONFIG_NAME).write_text(json.dumps(config_json, indent=2) + "\n", encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save(directory)


def save_model_dir(
    path: str | Path,
    weights: dict[str, torch.Tensor],
    config_json: dict[str, Any],
    tokenizer: Tokenizer | None,
) -> Path:
    """Write a model directory at ``path``, replacing whatever was there as a whole.

    The directory is built in a temporary sibling and swapped in
    (:func:`lmforge.fileio.atomic_replace_dir`): no file of an earlier model at ``path`` survives
    (an old ``calibrator.json`` or tokenizer file would otherwise describe the new model), and a
    crash leaves the previous model or the new one, never a mix. A non-empty directory without
    ``config.json`` is refused (:class:`CheckpointError`) rather than replaced.
    """
    check_replaceable(Path(path))
    return atomic_replace_dir(
        path, lambda directory: write_model_files(directory, weights, config_json, tokenizer)
    )


def check_replaceable(path: Path) -> None:
    """Refuse to save over a directory that holds something other than a model: saving replaces
    the whole directory, and a folder of other files (``~/models``) must not vanish with it."""
    if path.is_dir() and not (path / CONFIG_NAME).is_file() and any(path.iterdir()):
        raise CheckpointError(
            f"{path}: not empty and not a model directory (no {CONFIG_NAME}); a save replaces the "
            "whole directory, so choose a new or empty one"
        )


def build_model(
    config: ModelConfig,
    weights: Mapping[str, torch.Tensor],
    rules: list[Rule],
    source: str,
    prefixes: tuple[str, ...],
    optional: tuple[str, ...] = (),
) -> TransformerModel:
    """A model for ``config`` holding ``weights`` mapped through ``rules``; every parameter not
    under an ``optional`` prefix (a new head) must be found, with its shape."""
    with torch.device("meta"):
        shapes = TransformerModel(config).state_dict()
    model = TransformerModel(config)
    state = import_weights(weights, rules, shapes, source, prefixes, optional)
    missing, _ = model.load_state_dict(state, strict=False)
    tied = {"lm_head.decoder.weight"} if config.tie_embeddings else set()
    missing = [m for m in missing if m not in tied and not m.startswith(tuple(optional))]
    if missing:
        raise CheckpointError(f"{source}: weights missing for {', '.join(missing[:5])}")
    model.tie_weights()
    return model


def loaded_model(
    path: Path,
    config: ModelConfig,
    rules: list[Rule],
    prefixes: tuple[str, ...],
    optional: tuple[str, ...] = (),
) -> LoadedModel:
    """The model directory ``path`` (weights mapped through ``rules``) with its tokenizer."""
    single = path / WEIGHTS_NAME
    source = str(single if single.is_file() else path)  # errors name the weights file when there is one
    model = build_model(config, read_weights(path), rules, source, prefixes, optional)
    return LoadedModel(model, tokenizer_from_dir(path), config, str(path))


def head_overrides(
    config: ModelConfig, head: Head | None, num_labels: int | None
) -> tuple[ModelConfig, tuple[str, ...]]:
    """Apply a head change; returns the config and the parameter prefixes allowed to be missing."""
    changes: dict[str, Any] = {}
    if head is not None and head != config.head:
        changes["head"] = head
    if num_labels is not None and num_labels != config.num_labels:
        changes["num_labels"] = num_labels
    if not changes:
        return config, ()
    optional = ("classifier.",) if "head" not in changes else _HEAD_PARAMS
    if changes.get("head") in family(config.family).pooled_heads:
        changes["pooler"] = True
    return config.replace(**changes), optional


def tokenizer_from_dir(path: Path) -> Tokenizer | None:
    if any((path / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        return Tokenizer.from_dir(path)
    return None
