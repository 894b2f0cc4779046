"""What a model is: family, shapes, parameter count, dtype and memory (``lmforge info``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmforge.models import TransformerModel
from lmforge.models.families.registry import presets
from lmforge.models.model import parameter_bytes

__all__ = ["model_info"]


def model_info(name: str) -> dict[str, Any]:
    """Shape, size and memory of a model path, asset or preset.

    Presets are built on the meta device, so ``model_info("llama-7b")`` allocates nothing.

    Args:
        name: checkpoint dir, transformers dir, ``.gguf`` file, model asset or preset name.

    Returns:
        ``name``, ``source``, ``family``, ``head``, ``num_parameters``, the shape fields of the
        config, ``dtype``, ``memory_bytes`` (parameters x element size; a quantized model's
        tensors at their own sizes) and ``quantization`` (the method, or None).
    """
    if name in presets() and not Path(name).exists():
        config = presets()[name].preset(name)
        # Decoders are shown with their LM head, encoders (and T5) as the bare body.
        config = config.replace(head="causal_lm" if config.causal else "base")
        with torch.device("meta"):
            model = TransformerModel(config)
        dtype, source = torch.float32, "preset"
    else:
        from lmforge.models.io.checkpoint import load

        bundle = load(name)
        model, config, source = bundle.model, bundle.config, bundle.source
        dtype = next(model.parameters()).dtype
    num_parameters = model.num_parameters()
    quantization = config.extra.get("quantization")
    return {
        "name": name,
        "source": source,
        "family": config.family,
        "head": config.head,
        "num_parameters": num_parameters,
        "num_layers": config.num_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "hidden_size": config.hidden_size,
        "num_heads": config.num_heads,
        "num_kv_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "intermediate_size": config.intermediate_size,
        "vocab_size": config.vocab_size,
        "max_positions": config.max_positions,
        "positions": config.positions,
        "norm": config.norm,
        "tie_embeddings": config.tie_embeddings,
        "dtype": str(dtype).removeprefix("torch."),
        # Quantized weights are buffers of their own dtypes: count every tensor's bytes then.
        "memory_bytes": parameter_bytes(model)
        if quantization
        else num_parameters * torch.tensor([], dtype=dtype).element_size(),
        "quantization": quantization.get("method") if quantization else None,
    }
