"""Weight-name maps between lmforge and other layouts (transformers, GGUF).

A family describes its layout as a list of :class:`Rule` objects; :func:`import_weights` and
:func:`export_weights` apply them in either direction and check that every weight is found and
every shape matches, naming the key and the source file when not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from lmforge.errors import CheckpointError

Transform = Callable[[Tensor], Tensor]


def _identity(t: Tensor) -> Tensor:
    return t


def transpose(t: Tensor) -> Tensor:
    """GPT-2's Conv1D stores (in, out); nn.Linear stores (out, in)."""
    return t.t().contiguous()


@dataclass(frozen=True)
class Rule:
    """One weight (or a fused group) in both layouts.

    ``ours`` names one or more lmforge parameters; several are concatenated along dim 0 (then
    ``to_theirs`` applies) to form the single foreign tensor ``theirs`` (GPT-2's fused ``c_attn``).
    ``{i}`` in names stands for the layer index.
    """

    ours: tuple[str, ...]
    theirs: str
    to_ours: Transform = _identity
    to_theirs: Transform = _identity


def rule(
    ours: str | tuple[str, ...], theirs: str, to_ours: Transform = _identity, to_theirs: Transform = _identity
) -> Rule:
    """Build a :class:`Rule`; ``ours`` may be one name or a tuple of fused names."""
    return Rule((ours,) if isinstance(ours, str) else ours, theirs, to_ours, to_theirs)


def weight_bias(
    ours: str, theirs: str, to_ours: Transform = _identity, to_theirs: Transform = _identity
) -> list[Rule]:
    """The weight (through ``to_ours`` / ``to_theirs``) and bias rules of one Linear or LayerNorm."""
    return [
        rule(f"{ours}.weight", f"{theirs}.weight", to_ours, to_theirs),
        rule(f"{ours}.bias", f"{theirs}.bias"),
    ]


def expand(rules: Iterable[Rule], num_layers: int) -> list[Rule]:
    """Replace ``{i}`` with each layer index."""
    out: list[Rule] = []
    for rule in rules:
        if "{i}" not in rule.theirs:
            out.append(rule)
            continue
        for i in range(num_layers):
            out.append(
                Rule(
                    tuple(name.format(i=i) for name in rule.ours),
                    rule.theirs.format(i=i),
                    rule.to_ours,
                    rule.to_theirs,
                )
            )
    return out


def import_weights(
    foreign: Mapping[str, Tensor],
    rules: list[Rule],
    expected: Mapping[str, Tensor],
    source: str,
    prefixes: tuple[str, ...] = ("",),
    optional: tuple[str, ...] = (),
) -> dict[str, Tensor]:
    """Map ``foreign`` tensors into lmforge names, checking presence and shapes against ``expected``.

    Each foreign name is looked up as is and with each of ``prefixes`` added or removed, so a
    base-model checkpoint loads into a model with a head and vice versa. Weights of lmforge
    parameters starting with one of ``optional`` (a new head) may be absent.
    """
    out: dict[str, Tensor] = {}
    missing: list[str] = []
    for rule in rules:
        key = _find(foreign, rule.theirs, prefixes)
        if key is None:
            if not (optional and all(name.startswith(optional) for name in rule.ours)):
                missing.append(rule.theirs)
            continue
        tensor = rule.to_ours(foreign[key])
        parts = torch.chunk(tensor, len(rule.ours), dim=0) if len(rule.ours) > 1 else (tensor,)
        for name, part in zip(rule.ours, parts, strict=True):
            if name not in expected:
                raise CheckpointError(f"{source}: internal map names unknown parameter {name!r}")
            if tuple(part.shape) != tuple(expected[name].shape):
                if optional and name.startswith(optional):  # a new head of another size: keep its init
                    continue
                raise CheckpointError(
                    f"{source}: weight {key!r} has shape {tuple(part.shape)} but the config expects "
                    f"{tuple(expected[name].shape)} for {name!r}; the config and weights do not match"
                )
            out[name] = part.contiguous()
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CheckpointError(f"{source}: missing {len(missing)} weight(s): {shown}")
    return out


def export_weights(state: Mapping[str, Tensor], rules: list[Rule]) -> dict[str, Tensor]:
    """Map lmforge tensors to the foreign layout."""
    out: dict[str, Tensor] = {}
    for rule in rules:
        parts = [state[name] for name in rule.ours]
        tensor = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
        out[rule.theirs] = rule.to_theirs(tensor).contiguous()
    return out


def _find(foreign: Mapping[str, Tensor], name: str, prefixes: tuple[str, ...]) -> str | None:
    if name in foreign:
        return name
    for prefix in prefixes:
        if prefix and name.startswith(prefix) and name[len(prefix) :] in foreign:
            return name[len(prefix) :]
        if prefix and prefix + name in foreign:
            return prefix + name
    return None


def rope_unpermute(num_heads: int) -> Transform:
    """GGUF stores Q/K rows interleaved for llama.cpp's RoPE; undo it for the half-split layout."""

    def unpermute(weight: Tensor) -> Tensor:
        half = weight.shape[0] // num_heads // 2
        return weight.reshape(num_heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)

    return unpermute


def rope_permute(num_heads: int) -> Transform:
    """Inverse of :func:`rope_unpermute`: half-split rows to llama.cpp's interleaved layout."""

    def permute(weight: Tensor) -> Tensor:
        half = weight.shape[0] // num_heads // 2
        return weight.reshape(num_heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)

    return permute
