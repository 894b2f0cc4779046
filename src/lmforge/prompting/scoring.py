"""Label scoring: the log-probability of each label word's tokens after a prompt, for a batch of inputs.

A causal LM scores the label word's tokens after the prompt; a masked LM (PET style) fills the
slot with as many ``[MASK]`` tokens as the word has and scores each token at its mask.
Per-token log-probabilities are reduced by ``scoring``: ``"sum"`` (the word's log-probability),
``"mean"`` (per token, so long words are not penalised) or ``"first"`` (first token only).

**Efficiency.** The prefix (instruction + demonstrations) is the same for every input, so a causal
LM encodes it once and reuses its KV cache: the cache is expanded along the batch for a batch of
inputs, the inputs are run once, and only the label tokens after the first are run again, for
all labels together, on the input's cache (:func:`causal_label_logprobs`). ``cached=False``
re-scores every (input, label) pair in full, as a reference and for the benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from lmforge.errors import ConfigError, UnsupportedError
from lmforge.models import KVCache, TransformerModel

__all__ = [
    "SCORINGS",
    "Scoring",
    "causal_label_logprobs",
    "encode_prefix",
    "masked_label_logprobs",
    "model_device",
    "reduce_label_logprobs",
    "shift_last_prefix_token",
]

Scoring = Literal["sum", "mean", "first"]
SCORINGS: tuple[str, ...] = ("sum", "mean", "first")


def reduce_label_logprobs(token_logprobs: Tensor, lengths: Sequence[int], scoring: Scoring) -> Tensor:
    """Per-class scores from per-token log-probabilities.

    Args:
        token_logprobs: (N, C, L) log-probabilities of label tokens, zero-padded past each length.
        lengths: tokens of each of the C labels.
        scoring: ``"sum"``, ``"mean"`` or ``"first"``.

    Returns:
        (N, C) scores.
    """
    if scoring == "first":
        return token_logprobs[:, :, 0]
    total = token_logprobs.sum(-1)
    if scoring == "sum":
        return total
    if scoring == "mean":
        return total / torch.tensor(lengths, dtype=total.dtype, device=total.device)
    raise ConfigError(f"scoring must be one of {SCORINGS}, got {scoring!r}")


def _padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-padded (B, T) ids and mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def _cache_view(cache: KVCache, index: Tensor | None = None, batch: int = 1) -> KVCache:
    """A new cache over the same keys/values: rows ``index`` (copied), or row 0 expanded to ``batch``."""
    out = KVCache()
    out.self_kv = dict(cache.self_kv)
    if index is not None:
        out.reorder(index)  # index_select: a copy, so the rows' label steps do not touch ``cache``
        return out
    for layer, (k, v) in cache.self_kv.items():  # each (1, nkv, S, hd): a view, no copy
        out.self_kv[layer] = (k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
    return out


def _check_length(model: TransformerModel, length: int) -> None:
    if length > model.config.max_positions:
        raise ConfigError(
            f"a prompt is {length} tokens but the model takes at most {model.config.max_positions}; "
            "use fewer shots or truncate texts (--max-text-chars)"
        )


def model_device(model: TransformerModel) -> torch.device:
    """The device of the model's parameters (where its inputs must go)."""
    return next(model.parameters()).device


def _pad_id(model: TransformerModel) -> int:
    # RoBERTa derives positions from padding, so pads must be the model's own pad id.
    return model.config.pad_token_id if model.config.pad_token_id is not None else 0


@torch.inference_mode()
def causal_label_logprobs(
    model: TransformerModel,
    prefix_ids: Sequence[int],
    query_ids: Sequence[Sequence[int]],
    label_ids: Sequence[Sequence[int]],
    batch_size: int = 16,
    cached: bool = True,
    prefix_cache: KVCache | None = None,
) -> Tensor:
    """Log-probabilities of every label token after ``prefix + query``, for every input and label.

    Args:
        model: a causal LM (``config.head == "causal_lm"``).
        prefix_ids: ids shared by every input (instruction, demonstrations), may be empty.
        query_ids: N id lists, one per input; ``prefix + query`` must not be empty.
        label_ids: C id lists, one per label continuation (each at least one token).
        batch_size: inputs per forward pass (full scoring: (input, label) rows per pass).
        cached: reuse the prefix's KV cache and each input's cache for its label tokens; False
            scores ``prefix + query + label`` from scratch for every pair.
        prefix_cache: the prefix's cache from an earlier call (batch 1), to skip encoding it.

    Returns:
        (N, C, L) float32 log-probabilities on the CPU, L = longest label, zero past a label's end.
    """
    if model.lm_head is None or not model.config.causal or model.decoder is not None:
        raise UnsupportedError("causal label scoring needs a decoder-only model with a causal_lm head")
    lengths = [len(label) for label in label_ids]
    if min(lengths) < 1:
        raise ConfigError("every label word must encode to at least one token")
    if any(len(prefix_ids) + len(q) == 0 for q in query_ids):
        raise ConfigError("prefix + input is empty: there is no context to score the label after")
    _check_length(model, len(prefix_ids) + max(map(len, query_ids)) + max(lengths))
    if any(len(q) == 0 for q in query_ids):
        prefix_ids, query_ids = shift_last_prefix_token(prefix_ids, query_ids)
        prefix_cache = None
    if not cached:
        return _full_label_logprobs(model, prefix_ids, query_ids, label_ids, batch_size)
    device, pad = model_device(model), _pad_id(model)
    num_labels, width = len(label_ids), max(lengths)
    labels, label_mask = _padded(label_ids, pad)  # (C, L)
    labels, label_mask = labels.to(device), label_mask.to(device)
    out = torch.zeros(len(query_ids), num_labels, width)
    if prefix_cache is None:
        prefix_cache = encode_prefix(model, prefix_ids)
    past = prefix_cache.length
    for start in range(0, len(query_ids), batch_size):
        rows = query_ids[start : start + batch_size]
        batch = len(rows)
        ids, mask = _padded(rows, pad)  # (B, T)
        ids, mask = ids.to(device), mask.to(device)
        query_len = torch.tensor([len(r) for r in rows], device=device)
        cache = _cache_view(prefix_cache, batch=batch)
        full_mask = torch.cat([mask.new_ones(batch, past), mask], dim=1)  # (B, past + T)
        hidden = model.encode(ids, full_mask, cache=cache)  # (B, T, H)
        last = hidden[torch.arange(batch, device=device), query_len - 1]  # (B, H)
        first = torch.log_softmax(model.lm_head(last).float(), dim=-1)  # (B, V)
        out[start : start + batch, :, 0] = first[:, labels[:, 0]].cpu()
        if width == 1:
            continue
        # Label tokens 1.. of every (input, label) pair, on a copy of that input's cache.
        index = torch.arange(batch, device=device).repeat_interleave(num_labels)  # (B*C,)
        tiled, tiled_mask = labels.repeat(batch, 1), label_mask.repeat(batch, 1)  # (B*C, L)
        for chunk in torch.split(torch.arange(batch * num_labels, device=device), batch_size):
            rows_cache = _cache_view(cache, index=index[chunk])
            step_ids = tiled[chunk, :-1]  # (b, L-1): feed tokens 0..L-2, predict 1..L-1
            step_mask = torch.cat([full_mask[index[chunk]], tiled_mask[chunk, :-1]], dim=1)
            positions = (past + query_len[index[chunk]])[:, None] + torch.arange(width - 1, device=device)
            step_hidden = model.encode(step_ids, step_mask, position_ids=positions, cache=rows_cache)
            logp = torch.log_softmax(model.lm_head(step_hidden).float(), dim=-1)  # (b, L-1, V)
            picked = logp.gather(-1, tiled[chunk, 1:, None])[..., 0] * tiled_mask[chunk, 1:]
            flat = out[start : start + batch].view(batch * num_labels, width)
            flat[chunk.cpu(), 1:] = picked.cpu()
    return out


@torch.inference_mode()
def encode_prefix(model: TransformerModel, prefix_ids: Sequence[int]) -> KVCache:
    """The KV cache (batch 1) of the shared prefix, empty for an empty prefix."""
    cache = KVCache()
    if prefix_ids:
        model.encode(torch.tensor([list(prefix_ids)], device=model_device(model)), cache=cache)
    return cache


def shift_last_prefix_token(
    prefix_ids: Sequence[int], query_ids: Sequence[Sequence[int]]
) -> tuple[list[int], list[list[int]]]:
    """Move the prefix's last token into every query.

    The first label token is predicted from the query's last hidden state; an empty query (e.g.
    the content-free input "" under the template "{text}") has none, so the prefix gives one up.
    The scored sequence is unchanged.
    """
    return list(prefix_ids[:-1]), [[prefix_ids[-1], *q] for q in query_ids]


def _full_label_logprobs(
    model: TransformerModel,
    prefix_ids: Sequence[int],
    query_ids: Sequence[Sequence[int]],
    label_ids: Sequence[Sequence[int]],
    batch_size: int,
) -> Tensor:
    """Reference scoring: one full forward pass over ``prefix + query + label`` per pair."""
    device, pad = model_device(model), _pad_id(model)
    num_labels, width = len(label_ids), max(len(label) for label in label_ids)
    pairs = [(i, c) for i in range(len(query_ids)) for c in range(num_labels)]
    out = torch.zeros(len(query_ids), num_labels, width)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        seqs = [[*prefix_ids, *query_ids[i], *label_ids[c]] for i, c in chunk]
        ids, mask = _padded(seqs, pad)
        hidden = model.encode(ids.to(device), mask.to(device))  # (b, T, H)
        lm_head = model.lm_head
        assert lm_head is not None
        for row, (i, c) in enumerate(chunk):
            first = len(prefix_ids) + len(query_ids[i]) - 1  # predicts label token 0
            n = len(label_ids[c])
            logp = torch.log_softmax(lm_head(hidden[row, first : first + n]).float(), dim=-1)
            target = torch.tensor(label_ids[c], device=logp.device)
            out[i, c, :n] = logp.gather(-1, target[:, None])[:, 0].cpu()
    return out


@torch.inference_mode()
def masked_label_logprobs(
    model: TransformerModel,
    mask_token_id: int,
    before_ids: Sequence[Sequence[int]],
    after_ids: Sequence[int],
    label_ids: Sequence[Sequence[int]],
    batch_size: int = 16,
) -> Tensor:
    """PET-style cloze scoring with a masked LM: ``before + [MASK] * len(label) + after``.

    A label of k tokens is scored with k masks in the slot, as the sum (or mean, first) of each
    token's log-probability at its mask; all masks are predicted in one pass.

    Args:
        model: a masked LM (head ``masked_lm`` or ``pretraining``).
        mask_token_id: the tokenizer's ``[MASK]`` id.
        before_ids: N id lists: special start tokens, prefix, demonstrations and the input text.
        after_ids: ids after the slot (template tail, special end tokens).
        label_ids: C id lists.
        batch_size: sequences per forward pass.

    Returns:
        (N, C, L) log-probabilities, zero past each label's length.
    """
    if model.lm_head is None or model.config.causal:
        raise UnsupportedError("cloze scoring needs a bidirectional model with a masked_lm head")
    device, pad = model_device(model), _pad_id(model)
    num_labels, width = len(label_ids), max(len(label) for label in label_ids)
    _check_length(model, max(map(len, before_ids)) + width + len(after_ids))
    out = torch.zeros(len(before_ids), num_labels, width)
    for k in sorted({len(label) for label in label_ids}):
        same = [c for c in range(num_labels) if len(label_ids[c]) == k]
        targets = torch.tensor([label_ids[c] for c in same], device=device)  # (C_k, k)
        for start in range(0, len(before_ids), batch_size):
            rows = before_ids[start : start + batch_size]
            ids, mask = _padded([[*r, *[mask_token_id] * k, *after_ids] for r in rows], pad)
            hidden = model.encode(ids.to(device), mask.to(device))  # (B, T, H)
            slot = torch.tensor([len(r) for r in rows], device=device)[:, None] + torch.arange(
                k, device=device
            )
            picked = hidden[torch.arange(len(rows), device=device)[:, None], slot]  # (B, k, H)
            logp = torch.log_softmax(model.lm_head(picked).float(), dim=-1)  # (B, k, V)
            # (B, C_k, k): token j of label c at mask j
            scores = logp[:, torch.arange(k, device=device)[None, :], targets]
            out[start : start + len(rows), same, :k] = scores.cpu()
    return out
