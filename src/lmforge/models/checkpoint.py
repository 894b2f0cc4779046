"""Load and save models: lmforge checkpoints, transformers directories, GGUF files and assets.

An lmforge checkpoint is a directory with ``model.safetensors``, ``config.json`` (the
:class:`ModelConfig` under the ``"lmforge"`` key) and the tokenizer files. :func:`save_hf` writes a
directory that ``transformers.AutoModel*.from_pretrained`` loads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lmforge.assets import asset_path, get_asset, list_assets
from lmforge.config import Head, ModelConfig
from lmforge.errors import CheckpointError, ConfigError, LmforgeError
from lmforge.fileio import atomic_write, atomic_write_text
from lmforge.models.convert import Rule, expand, export_weights, import_weights, rule
from lmforge.models.gguf import read_gguf
from lmforge.models.llama import config_from_gguf
from lmforge.models.model import TransformerModel
from lmforge.models.registry import family, family_for_hf
from lmforge.tokenizers import Tokenizer
from lmforge.version import __version__

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_HEAD_PARAMS = ("lm_head.", "classifier.", "pooler.")


@dataclass
class LoadedModel:
    """What :func:`load` returns: the model, its tokenizer (None if the source has none) and config."""

    model: TransformerModel
    tokenizer: Tokenizer | None
    config: ModelConfig
    source: str


def load(
    name_or_path: str | Path,
    head: Head | None = None,
    num_labels: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Load a model from an lmforge checkpoint, a transformers directory, a GGUF file or an asset.

    Args:
        name_or_path: directory, ``.gguf`` file, or asset name (``lmforge assets list``).
        head: replace the checkpoint's head (e.g. ``"sequence_classification"`` to fine-tune a
            pretrained encoder); weights of a new head are freshly initialised.
        num_labels: number of labels of a new classification head.
        dtype: parameter dtype after loading (weights are converted in fp32 first).
        device: where to put the model.
    """
    path = _resolve(name_or_path)
    if path.is_file() and path.suffix == ".gguf":
        loaded = _load_gguf(path, head)
    elif path.is_dir():
        config_file = path / CONFIG_NAME
        if not config_file.is_file():
            raise CheckpointError(f"{path}: no {CONFIG_NAME}; not an lmforge or transformers model directory")
        raw = _read_json(config_file)
        loaded = (
            _load_lmforge(path, raw, head, num_labels)
            if "lmforge" in raw
            else _load_hf(path, raw, head, num_labels)
        )
    else:
        raise CheckpointError(f"{path}: expected a model directory or a .gguf file")
    loaded.model.to(device=device, dtype=dtype).eval()
    return loaded


def _resolve(name_or_path: str | Path) -> Path:
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    names = {asset.name for asset in list_assets() if asset.kind == "model"}
    if str(name_or_path) in names:
        return asset_path(get_asset(str(name_or_path)).name)
    raise LmforgeError(
        f"{name_or_path}: no such file or directory, and not a model asset (known: {', '.join(sorted(names))})"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: cannot read safetensors file ({exc}); it is corrupt or truncated"
        ) from None


def _read_hf_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a transformers directory: single or sharded safetensors, else pytorch_model.bin."""
    if (path / WEIGHTS_NAME).is_file():
        return _read_safetensors(path / WEIGHTS_NAME)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
        weights: dict[str, torch.Tensor] = {}
        for shard in shards:
            weights.update(_read_safetensors(path / shard))
        return weights
    bin_file = path / "pytorch_model.bin"
    if bin_file.is_file():
        try:
            state = torch.load(bin_file, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for corrupt or unsafe pickles
            raise CheckpointError(f"{bin_file}: cannot load ({type(exc).__name__}: {exc})") from None
        return dict(state)
    raise CheckpointError(f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def _build(
    config: ModelConfig,
    weights: Mapping[str, torch.Tensor],
    rules: list[Rule],
    source: str,
    prefixes: tuple[str, ...],
    optional: tuple[str, ...] = (),
) -> TransformerModel:
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


def _head_overrides(
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
    if config.family in ("bert", "albert") and changes.get("head") in (
        "sequence_classification",
        "pretraining",
    ):
        changes["pooler"] = True
    return config.replace(**changes), optional


def _load_lmforge(path: Path, raw: dict[str, Any], head: Head | None, num_labels: int | None) -> LoadedModel:
    config = ModelConfig.from_dict(raw["lmforge"], source=str(path / CONFIG_NAME))
    config, optional = _head_overrides(config, head, num_labels)
    weights = _read_safetensors(path / WEIGHTS_NAME)
    rules = _identity_rules(config)
    model = _build(config, weights, rules, str(path / WEIGHTS_NAME), ("",), optional)
    return LoadedModel(model, _tokenizer_from_dir(path), config, str(path))


def _identity_rules(config: ModelConfig) -> list[Rule]:
    with torch.device("meta"):
        names = list(TransformerModel(config).state_dict())
    tied = {"lm_head.decoder.weight"} if config.tie_embeddings else set()
    return [rule(name, name) for name in names if name not in tied]


def _load_hf(path: Path, raw: dict[str, Any], head: Head | None, num_labels: int | None) -> LoadedModel:
    source = str(path / CONFIG_NAME)
    spec = family_for_hf(str(raw.get("model_type")), source)
    try:
        config = spec.config_from_hf(raw, None)
    except KeyError as exc:
        raise ConfigError(f"{source}: missing field {exc.args[0]!r}") from None
    config, optional = _head_overrides(config, head, num_labels)
    weights = _read_hf_weights(path)
    prefixes = tuple({spec.hf_prefix(h) for h in spec.hf_architectures})
    model = _build(config, weights, spec.hf_weight_rules(config), str(path), prefixes, optional)
    return LoadedModel(model, _tokenizer_from_dir(path), config, str(path))


def _load_gguf(path: Path, head: Head | None) -> LoadedModel:
    gguf = read_gguf(path)
    arch = gguf.metadata.get("general.architecture")
    if arch != "llama":
        raise CheckpointError(f"{path}: GGUF architecture {arch!r} is not supported (only 'llama')")
    metadata = {**gguf.metadata, "_tied_embeddings": "output.weight" not in gguf}
    config = config_from_gguf(metadata, head or "causal_lm")
    spec = family("llama")
    assert spec.gguf_rules is not None
    rules = expand(spec.gguf_rules(config), config.num_layers)
    model = _build(config, gguf, rules, str(path), ("",))
    return LoadedModel(model, Tokenizer.from_gguf(gguf.metadata), config, str(path))


def _tokenizer_from_dir(path: Path) -> Tokenizer | None:
    if any((path / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        return Tokenizer.from_dir(path)
    return None


# -- saving ------------------------------------------------------------------------------------


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))


def save(model: TransformerModel, path: str | Path, tokenizer: Tokenizer | None = None) -> Path:
    """Write an lmforge checkpoint directory (each file atomically)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if model.config.tie_embeddings:
        state.pop("lm_head.decoder.weight", None)
    _save_tensors(dict(state), path / WEIGHTS_NAME)
    payload = {"lmforge": model.config.to_dict(), "lmforge_version": __version__}
    atomic_write_text(path / CONFIG_NAME, json.dumps(payload, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save(path)
    return path


def save_hf(model: TransformerModel, path: str | Path, tokenizer: Tokenizer | None = None) -> Path:
    """Write a transformers-layout directory that ``AutoModel*.from_pretrained`` loads."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = model.config
    spec = family(config.family)
    weights = export_weights(model.state_dict(), spec.hf_weight_rules(config))
    _save_tensors(weights, path / WEIGHTS_NAME)
    hf_config = {
        **spec.hf_config(config),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }
    atomic_write_text(path / CONFIG_NAME, json.dumps(hf_config, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save(path)
    return path
