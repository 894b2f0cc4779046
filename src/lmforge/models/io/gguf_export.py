"""Writing lmforge models as GGUF files (llama.cpp's single-file format), F32 / F16 / Q8_0 / Q4_0 / Q4_1.

The file holds what llama.cpp and the ``gguf`` package expect of a Llama-architecture model:
``general.*`` keys, the ``llama.*`` hyper-parameters, the tokenizer as ``tokenizer.ggml.*``
metadata (vocabulary, token types, merges, special token ids, BOS/EOS flags, chat template) and
the tensors under llama.cpp's names, Q and K rows permuted to its RoPE layout (the family's GGUF
weight map, run backwards).

Which tensor gets which type: every 2-D weight whose rows split into 32-wide blocks is stored in
the requested type, except that under Q4_0 / Q4_1 the token table and the output projection (one
tensor when tied) are stored as Q8_0, the way llama.cpp keeps its output tensor at a higher precision;
norm weights and anything else stay F32. Block quantization is ``gguf.quants.quantize``, the
package's exact numpy port of llama.cpp's reference quantizers, so a file written here decodes to
what llama.cpp's own converter would have produced from the same float weights.

A quantized lmforge model (``int8-wo``, ``int4-wo`` ...) is exported from its dequantized weights:
their rounding is kept and GGUF's block rounding comes on top.

Example::

    loaded = lmforge.load("runs/my-llama")
    export_gguf(loaded.model, loaded.tokenizer, "my-llama.Q8_0.gguf", "Q8_0")
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from torch import Tensor

from lmforge.errors import ConfigError, UnsupportedError
from lmforge.fileio import atomic_write
from lmforge.models.families.registry import family
from lmforge.models.io.convert import expand, export_weights
from lmforge.models.model import TransformerModel
from lmforge.tokenizers import Tokenizer
from lmforge.tokenizers.gguf import PRE_TOKENIZER_SPLITS

__all__ = ["EXPORT_TYPES", "export_gguf", "float_state_dict", "gguf_tensor_types", "tokenizer_metadata"]

#: Tensor types :func:`export_gguf` writes.
EXPORT_TYPES: tuple[str, ...] = ("F32", "F16", "Q8_0", "Q4_0", "Q4_1")

_FILE_TYPES = {
    "F32": gguf.LlamaFileType.ALL_F32,
    "F16": gguf.LlamaFileType.MOSTLY_F16,
    "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
    "Q4_1": gguf.LlamaFileType.MOSTLY_Q4_1,
}
_BLOCK = 32  # elements per block of every quantized type written here
_EMBEDDING_NAMES = ("token_embd.weight", "output.weight")
_NORMAL, _CONTROL, _USER_DEFINED = 1, 3, 4  # llama.cpp's llama_token_type values


def check_exportable(model: TransformerModel, tensor_type: str, source: str = "model") -> None:
    """Refuse, before any work, a model or type that cannot be written as a llama.cpp GGUF."""
    config = model.config
    if tensor_type not in EXPORT_TYPES:
        raise ConfigError(f"GGUF type {tensor_type!r}: choose one of {', '.join(EXPORT_TYPES)}")
    if config.family != "llama":
        raise UnsupportedError(
            f"{source}: GGUF export supports the llama family (Llama, SmolLM2, Mistral-style); "
            f"this model is {config.family!r}. Save it with `lmforge convert --to hf` instead"
        )
    if config.head != "causal_lm":
        raise UnsupportedError(
            f"{source}: GGUF holds a language model; this one has a {config.head!r} head. Export a "
            "causal_lm model"
        )
    unsupported = [
        what
        for what, present in (
            (f"rope_scaling {config.rope_scaling}", bool(config.rope_scaling)),
            ("attention biases", config.attention_bias or config.attention_out_bias),
            ("MLP biases", config.mlp_bias),
        )
        if present
    ]
    if unsupported:
        raise UnsupportedError(
            f"{source}: GGUF export writes plain Llama tensors and keys; this model has "
            f"{', '.join(unsupported)}, which the llama.* keys lmforge writes cannot express"
        )


def float_state_dict(model: TransformerModel) -> dict[str, Tensor]:
    """The model's weights as float32, quantized modules replaced by their dequantized weights."""
    state = {name: t.detach().float() for name, t in model.state_dict().items() if t.is_floating_point()}
    for name, module in model.named_modules():
        dequantized = getattr(module, "dequantized", None)
        if callable(dequantized):  # a quantized linear or int8 embedding of lmforge.models.quantized
            state[f"{name}.weight"] = dequantized().float()
    return state


def gguf_tensor_types(tensors: dict[str, Tensor], tensor_type: str) -> dict[str, str]:
    """The type each GGUF tensor is written in (see the module docstring for the rule)."""
    types = {}
    for name, tensor in tensors.items():
        blockable = tensor.dim() == 2 and tensor.shape[-1] % _BLOCK == 0
        if tensor_type in ("F32", "F16"):
            types[name] = tensor_type if tensor.dim() == 2 else "F32"
        elif not blockable:
            types[name] = "F32"
        elif tensor_type in ("Q4_0", "Q4_1") and name in _EMBEDDING_NAMES:
            types[name] = "Q8_0"
        else:
            types[name] = tensor_type
    return types


def export_gguf(
    model: TransformerModel,
    tokenizer: Tokenizer | None,
    path: str | os.PathLike[str],
    tensor_type: str = "Q8_0",
    name: str | None = None,
) -> dict[str, Any]:
    """Write ``model`` (and its tokenizer) as the GGUF file ``path``, replacing it atomically.

    Args:
        model: a llama-family causal LM (float or lmforge-quantized).
        tokenizer: written as ``tokenizer.ggml.*`` metadata; required (llama.cpp needs one).
        path: the ``.gguf`` file to write.
        tensor_type: F32, F16, Q8_0, Q4_0 or Q4_1 (see :func:`gguf_tensor_types`).
        name: ``general.name`` (default: the file's stem).

    Returns:
        A summary: path, type, file bytes, and the count of tensors per stored type.

    Raises:
        ConfigError: unknown type or no tokenizer.
        UnsupportedError: a family, head or setting GGUF cannot express.
    """
    check_exportable(model, tensor_type)
    if tokenizer is None:
        raise ConfigError("GGUF export needs the model's tokenizer (llama.cpp reads it from the file)")
    path = Path(path)
    config = model.config
    spec = family(config.family)
    assert spec.gguf_rules is not None
    tensors = export_weights(float_state_dict(model), expand(spec.gguf_rules(config), config.num_layers))
    types = gguf_tensor_types(tensors, tensor_type)

    def write(target: Path) -> None:
        writer = gguf.GGUFWriter(str(target), "llama")
        writer.add_name(name or path.stem)
        writer.add_file_type(int(_FILE_TYPES[tensor_type]))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_llama_hyperparameters(writer, model)
        for key, value in tokenizer_metadata(tokenizer).items():
            _add_key(writer, key, value)
        for tensor_name, tensor in tensors.items():
            array = tensor.detach().cpu().float().numpy()
            stored = types[tensor_name]
            if stored == "F32":
                writer.add_tensor(tensor_name, array)
            elif stored == "F16":
                writer.add_tensor(tensor_name, array.astype(np.float16))
            else:
                qtype = gguf.GGMLQuantizationType[stored]
                writer.add_tensor(tensor_name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    atomic_write(path, write)
    counts: dict[str, int] = {}
    for stored in types.values():
        counts[stored] = counts.get(stored, 0) + 1
    return {"path": str(path), "type": tensor_type, "file_bytes": path.stat().st_size, "tensor_types": counts}


def _add_llama_hyperparameters(writer: gguf.GGUFWriter, model: TransformerModel) -> None:
    config = model.config
    assert config.num_kv_heads is not None
    head_dim = config.head_dim or config.hidden_size // config.num_heads
    writer.add_context_length(config.max_positions)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_heads)
    writer.add_head_count_kv(config.num_kv_heads)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config.vocab_size)
    if head_dim * config.num_heads != config.hidden_size:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


def _add_key(writer: gguf.GGUFWriter, key: str, value: Any) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    elif value:  # a list: element type from its first value (str, or int32 token types)
        writer.add_array(key, value)


def tokenizer_metadata(tokenizer: Tokenizer) -> dict[str, Any]:
    """The ``tokenizer.ggml.*`` (and ``tokenizer.chat_template``) keys describing ``tokenizer``.

    Byte-level BPE (GPT-2, SmolLM2, Llama 3) becomes ``tokenizer.ggml.model = "gpt2"`` and
    SentencePiece-style BPE with byte fallback ``"llama"``; :func:`lmforge.tokenizers.Tokenizer.from_gguf`
    rebuilds a tokenizer giving the same ids. Special added tokens are CONTROL tokens, other added
    tokens USER_DEFINED.

    Raises:
        UnsupportedError: the tokenizer is not BPE (WordPiece, Unigram), or its pre-tokenizer split
            is not one llama.cpp names.
    """
    spec = json.loads(tokenizer.backend.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise UnsupportedError(
            f"GGUF export writes BPE tokenizers; this one is {model.get('type')!r}. Export a decoder "
            "with a byte-level or SentencePiece BPE tokenizer"
        )
    byte_fallback = bool(model.get("byte_fallback"))
    vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
    size = tokenizer.vocab_size
    tokens: list[str | None] = [None] * size
    for token, index in vocab.items():
        if index < size:
            tokens[index] = token
    holes = [index for index, token in enumerate(tokens) if token is None]
    if holes:
        raise UnsupportedError(f"tokenizer ids {holes[:5]} have no token; GGUF needs a dense vocabulary")
    added = {token["content"]: bool(token.get("special")) for token in spec.get("added_tokens") or []}
    types = [
        (_CONTROL if added[token] else _USER_DEFINED) if token in added else _NORMAL
        for token in tokens
        if token is not None
    ]
    metadata: dict[str, Any] = {
        "tokenizer.ggml.model": "llama" if byte_fallback else "gpt2",
        "tokenizer.ggml.pre": "default" if byte_fallback else _pre_tokenizer_name(spec.get("pre_tokenizer")),
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": [
            merge if isinstance(merge, str) else " ".join(merge) for merge in model.get("merges") or []
        ],
    }
    for role, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")):
        token_id = tokenizer.special_token_id(f"{role}_token")
        if token_id is not None:
            metadata[f"tokenizer.ggml.{key}_token_id"] = token_id
    plain = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a", add_special_tokens=True)
    metadata["tokenizer.ggml.add_bos_token"] = len(full) > len(plain) and full[0] == tokenizer.bos_token_id
    metadata["tokenizer.ggml.add_eos_token"] = len(full) > len(plain) and full[-1] == tokenizer.eos_token_id
    if tokenizer.chat_template is not None:
        metadata["tokenizer.chat_template"] = tokenizer.chat_template
    return metadata


def _pre_tokenizer_name(pre_tokenizer: dict[str, Any] | None) -> str:
    """llama.cpp's ``tokenizer.ggml.pre`` for a byte-level pre-tokenizer: ``gpt-2`` for GPT-2's
    built-in regex, else the name of the known ``Split`` regex in front of it."""
    if pre_tokenizer is None:
        raise UnsupportedError("GGUF export: a byte-level BPE tokenizer without a pre-tokenizer")
    if pre_tokenizer.get("type") == "ByteLevel" and pre_tokenizer.get("use_regex", True):
        return "gpt-2"
    steps = pre_tokenizer.get("pretokenizers") or []
    if pre_tokenizer.get("type") == "Sequence" and len(steps) == 2 and steps[0].get("type") == "Split":
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        for name, split in PRE_TOKENIZER_SPLITS.items():
            if split == pattern:
                return name
    raise UnsupportedError(
        f"GGUF export: the tokenizer's pre-tokenizer {json.dumps(pre_tokenizer)[:200]} is not one llama.cpp "
        f"names (known: gpt-2, {', '.join(sorted(set(PRE_TOKENIZER_SPLITS)))})"
    )
