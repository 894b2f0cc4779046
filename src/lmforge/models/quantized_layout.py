"""Which modules of a model are quantized, as a checkpoint records it, and the model rebuilt from that record.

``config.extra["quantization"]`` names the method, the group size and the quantized linears and int8
embeddings (:func:`quantization_spec`); :func:`build_quantized_model` swaps exactly those modules for
empty quantized ones of the same shapes and loads the checkpoint's tensors into them, checking each.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lmforge.config import ModelConfig
from lmforge.errors import CheckpointError
from lmforge.models.model import TransformerModel
from lmforge.models.quantized import LINEAR_CLASSES, METHODS, Int8Embedding, _QuantizedLinear

__all__ = ["apply_quantization_layout", "build_quantized_model", "quantization_spec", "set_module"]


def quantization_spec(model: nn.Module, method: str, group_size: int | None) -> dict[str, Any]:
    """What ``config.extra["quantization"]`` records: the method, the group size and which modules
    are quantized linears and int8 embeddings (a loader rebuilds exactly those)."""
    linears = [name for name, m in model.named_modules() if isinstance(m, _QuantizedLinear)]
    embeddings = [name for name, m in model.named_modules() if isinstance(m, Int8Embedding)]
    return {"method": method, "group_size": group_size, "linears": linears, "embeddings": embeddings}


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted ``name``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def apply_quantization_layout(model: nn.Module, spec: dict[str, Any], source: str) -> None:
    """Swap the modules ``spec`` names for empty quantized ones of the same shapes, so that a
    quantized checkpoint's state dict loads into ``model``.

    Raises:
        CheckpointError: an unknown method, or a module the model lacks or that is not a Linear /
            Embedding.
    """
    method = spec.get("method")
    if method not in LINEAR_CLASSES:
        raise CheckpointError(f"{source}: quantization method {method!r} is not one of {', '.join(METHODS)}")
    cls = LINEAR_CLASSES[method]
    for name in spec.get("linears", []):
        linear = _submodule(model, name, nn.Linear, source)
        set_module(
            model,
            name,
            cls.empty(
                linear.in_features, linear.out_features, linear.bias is not None, spec.get("group_size")
            ),
        )
    for name in spec.get("embeddings", []):
        embedding = _submodule(model, name, nn.Embedding, source)
        set_module(model, name, Int8Embedding.empty(embedding.num_embeddings, embedding.embedding_dim))


def _submodule(model: nn.Module, name: str, kind: type[nn.Module], source: str) -> Any:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        module = None
    if not isinstance(module, kind):
        raise CheckpointError(
            f"{source}: config.json quantization names {name!r}, which is not a {kind.__name__} of this model"
        )
    return module


def build_quantized_model(config: ModelConfig, weights: dict[str, Tensor], source: str) -> TransformerModel:
    """The model of a quantized checkpoint: ``config``'s model with the quantized modules that
    ``config.extra["quantization"]`` names, holding ``weights`` (every tensor present, with its
    shape and dtype).

    Raises:
        CheckpointError: a tensor is missing, unexpected, or of the wrong shape or dtype.
    """
    model = TransformerModel(config)
    apply_quantization_layout(model, config.extra["quantization"], source)
    expected = model.state_dict()
    tied = {"lm_head.decoder.weight"} if config.tie_embeddings else set()
    missing = [name for name in expected if name not in weights and name not in tied]
    unexpected = [name for name in weights if name not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: does not match its quantization spec: "
            + "; ".join(
                f"{what} {', '.join(names[:5])}"
                for what, names in (("missing", missing), ("unexpected", unexpected))
                if names
            )
        )
    for name, tensor in weights.items():
        want = expected[name]
        if (
            tensor.shape != want.shape
            or (tensor.is_floating_point() != want.is_floating_point())
            or (not want.is_floating_point() and tensor.dtype != want.dtype)
        ):
            raise CheckpointError(
                f"{source}: {name} is {tensor.dtype} {tuple(tensor.shape)}, expected {want.dtype} {tuple(want.shape)}"
            )
    model.load_state_dict(weights, strict=False)
    if isinstance(model.lm_head.decoder if model.lm_head is not None else None, nn.Linear):
        model.tie_weights()  # a quantized LM head has its own int weights; the embedding stays float
    return model
