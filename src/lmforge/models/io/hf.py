"""transformers model directories: read (single or sharded safetensors, ``pytorch_model.bin``) and
write (:func:`save_hf`, a directory ``transformers.AutoModel*.from_pretrained`` loads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.config import Head
from lmforge.errors import ConfigError, UnsupportedError
from lmforge.models.families.registry import family, family_for_hf
from lmforge.models.io.build import CONFIG_NAME, LoadedModel, head_overrides, loaded_model, save_model_dir
from lmforge.models.io.convert import export_weights
from lmforge.models.model import TransformerModel
from lmforge.tokenizers import Tokenizer


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
    prefixes = tuple({spec.hf_prefix(h) for h in spec.hf_architectures})
    return loaded_model(path, config, spec.hf_weight_rules(config), prefixes, optional)


def save_hf(model: TransformerModel, path: str | Path, tokenizer: Tokenizer | None = None) -> Path:
    """Write a transformers-layout directory that ``AutoModel*.from_pretrained`` loads.

    Like :func:`lmforge.models.io.checkpoint.save`, the directory is built aside and swapped in
    whole: nothing of what ``path`` held before survives, and a crash leaves the old or the new.
    """
    config = model.config
    if config.extra.get("quantization") or config.layer_num_heads or config.layer_intermediate_sizes:
        what = "quantized" if config.extra.get("quantization") else "pruned to per-layer widths"
        raise UnsupportedError(
            f"this model is {what}, which a transformers config cannot describe; save it as an lmforge checkpoint"
        )
    spec = family(config.family)
    weights = export_weights(model.state_dict(), spec.hf_weight_rules(config))
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return save_model_dir(path, weights, {**spec.hf_config(config), "dtype": dtype}, tokenizer)
