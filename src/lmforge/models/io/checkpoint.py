"""Load any model source, and save lmforge checkpoints.

An lmforge checkpoint is a directory with ``model.safetensors``, ``config.json`` (the
:class:`ModelConfig` under the ``"lmforge"`` key) and the tokenizer files. A quantized checkpoint
names its quantized modules in ``config.extra["quantization"]`` and holds their int8 / int4
tensors (:mod:`lmforge.models.quantized`). :func:`load` also reads
transformers directories (:mod:`~lmforge.models.io.hf`), GGUF files
(:mod:`~lmforge.models.io.gguf`) and installed model assets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmforge.assets import asset_path, get_asset, list_assets
from lmforge.config import Head, ModelConfig
from lmforge.errors import CheckpointError, LmforgeError, UnsupportedError
from lmforge.fileio import interrupted_replace
from lmforge.models.families.registry import FAMILIES, family
from lmforge.models.io.build import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    LoadedModel,
    head_overrides,
    loaded_model,
    read_json,
    read_weights,
    save_model_dir,
    tokenizer_from_dir,
    write_model_files,
)
from lmforge.models.io.convert import Rule, rule
from lmforge.models.io.gguf import load_gguf
from lmforge.models.io.hf import load_hf
from lmforge.models.model import TransformerModel
from lmforge.models.quantized_layout import build_quantized_model
from lmforge.tokenizers import Tokenizer
from lmforge.version import __version__

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "LoadedModel", "load", "save", "write_checkpoint"]


def load(
    name_or_path: str | Path,
    head: Head | None = None,
    num_labels: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    packed: bool = False,
) -> LoadedModel:
    """Load a model from an lmforge checkpoint, a transformers directory, a GGUF file or an asset.

    Args:
        name_or_path: directory, ``.gguf`` file, or asset name (``lmforge assets list``).
        head: replace the checkpoint's head (e.g. ``"sequence_classification"`` to fine-tune a
            pretrained encoder); weights of a new head are freshly initialised.
        num_labels: number of labels of a new classification head.
        dtype: parameter dtype after loading (weights are converted in fp32 first).
        device: where to put the model.
        packed: GGUF files: keep Q8_0 / Q4_0 / Q4_1 weights packed (CPU int4 kernels, bf16
            activations) instead of dequantizing them to float; see
            :mod:`lmforge.models.io.gguf_packed`.
    """
    path = _resolve(name_or_path)
    if packed and not (path.is_file() and path.suffix == ".gguf"):
        raise UnsupportedError(
            f"{path}: packed=True applies to .gguf files; an lmforge int8/int4 checkpoint is packed already"
        )
    if path.is_file() and path.suffix == ".gguf":
        loaded = load_gguf(path, head, packed)
    elif path.is_dir():
        config_file = path / CONFIG_NAME
        if not config_file.is_file():
            raise CheckpointError(f"{path}: no {CONFIG_NAME}; not an lmforge or transformers model directory")
        raw = read_json(config_file)
        loaded = (
            _load_lmforge(path, raw, head, num_labels)
            if "lmforge" in raw
            else load_hf(path, raw, head, num_labels)
        )
    else:
        raise CheckpointError(f"{path}: expected a model directory or a .gguf file")
    loaded.model.to(device=device, dtype=dtype).eval()
    return loaded


def _resolve(name_or_path: str | Path) -> Path:
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    previous = interrupted_replace(path)
    if previous is not None:
        raise CheckpointError(
            f"{path}: missing, but a save into it was interrupted and left the previous checkpoint "
            f"complete at {previous}; rename it back to {path.name} (the next save does so itself)"
        )
    names = {asset.name for asset in list_assets() if asset.kind == "model"}
    if str(name_or_path) in names:
        return asset_path(get_asset(str(name_or_path)).name)
    raise LmforgeError(
        f"{name_or_path}: no such file or directory, and not a model asset (known: {', '.join(sorted(names))})"
    )


def _load_lmforge(path: Path, raw: dict[str, Any], head: Head | None, num_labels: int | None) -> LoadedModel:
    saved = raw["lmforge"]
    # A field the saved config lacks (an older lmforge wrote it) takes the value its family implied then.
    defaults = family(saved["family"]).defaults if saved.get("family") in FAMILIES else {}
    config = ModelConfig.from_dict({**defaults, **saved}, source=str(path / CONFIG_NAME))
    config, optional = head_overrides(config, head, num_labels)
    if config.extra.get("quantization"):
        if optional:
            raise UnsupportedError(
                f"{path}: a quantized checkpoint keeps its head; change the head before quantizing"
            )
        model = build_quantized_model(config, read_weights(path), str(path / WEIGHTS_NAME))
        return LoadedModel(model, tokenizer_from_dir(path), config, str(path))
    return loaded_model(path, config, _identity_rules(config), ("",), optional)


def _identity_rules(config: ModelConfig) -> list[Rule]:
    with torch.device("meta"):
        names = list(TransformerModel(config).state_dict())
    tied = {"lm_head.decoder.weight"} if config.tie_embeddings else set()
    return [rule(name, name) for name in names if name not in tied]


def save(model: TransformerModel, path: str | Path, tokenizer: Tokenizer | None = None) -> Path:
    """Write an lmforge checkpoint directory at ``path``, replacing whatever was there as a whole.

    The checkpoint is built in a temporary sibling directory and swapped in
    (:func:`~lmforge.models.io.build.save_model_dir`): no file of an earlier checkpoint at ``path``
    survives and a crash leaves the previous checkpoint or the new one, never a mix. A non-empty
    directory without ``config.json`` is refused (:class:`CheckpointError`) rather than replaced.
    """
    return save_model_dir(path, _state(model), _config_json(model), tokenizer)


def write_checkpoint(model: TransformerModel, directory: Path, tokenizer: Tokenizer | None = None) -> None:
    """Write the checkpoint files into the existing ``directory``, next to what is already there.

    For writers that compose a larger directory and swap it in themselves (training checkpoints
    add ``trainer.pt`` and RNG states); everyone else calls :func:`save`.
    """
    write_model_files(directory, _state(model), _config_json(model), tokenizer)


def _state(model: TransformerModel) -> dict[str, torch.Tensor]:
    state = dict(model.state_dict())
    if model.config.tie_embeddings:
        state.pop("lm_head.decoder.weight", None)
    return state


def _config_json(model: TransformerModel) -> dict[str, Any]:
    return {"lmforge": model.config.to_dict(), "lmforge_version": __version__}
