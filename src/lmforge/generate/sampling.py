"""Logit processing and token choice: penalties, n-gram blocking, truncation, sampling.

Shapes: B (rows), V (vocabulary), L (tokens so far: prompt + output, left-padded with -1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lmforge.generate.config import GenerationConfig

if TYPE_CHECKING:
    from lmforge.generate.session import DecodeSession

# The smallest normal float32: a temperature or repetition penalty below it is 0 in float32.
_TINY = torch.finfo(torch.float32).tiny


class TokenHistory:
    """What the penalties need to know about each row's tokens so far.

    ``ids`` (B, L) holds prompt + output tokens, -1 where a row has none (padding);
    ``output_counts`` (B, V) counts each token in the output only (frequency / presence penalties).
    """

    def __init__(self, prompt_ids: Tensor, prompt_mask: Tensor, vocab_size: int, track: bool) -> None:
        self.track = track
        self.ids = prompt_ids.masked_fill(~prompt_mask.bool(), -1) if track else prompt_ids[:, :0]
        self.output_counts = (
            torch.zeros(prompt_ids.shape[0], vocab_size, dtype=torch.int32, device=prompt_ids.device)
            if track
            else None
        )

    @classmethod
    def of_session(cls, session: DecodeSession, vocab_size: int, track: bool) -> TokenHistory:
        """What a session's penalties count: a decoder-only model's prompt; an encoder-decoder
        model's decoder tokens only, from its start token on, as transformers (the source is
        not text the model has said; transformers' encoder_* processors are another matter)."""
        if not session.encoder_decoder:
            return cls(session.input_ids, session.prompt_mask, vocab_size, track)
        start = session.model.config.decoder_start_token_id or 0
        ids = session.input_ids.new_full((session.batch_size, 1), start)
        return cls(ids, torch.ones_like(ids, dtype=torch.bool), vocab_size, track)

    def append(self, tokens: Tensor) -> None:
        """Add (B,) new tokens."""
        if not self.track:
            return
        assert self.output_counts is not None
        self.ids = torch.cat((self.ids, tokens[:, None]), dim=1)
        self.output_counts.scatter_add_(
            1, tokens[:, None], torch.ones_like(tokens[:, None], dtype=torch.int32)
        )

    def reorder(self, index: Tensor) -> None:
        if self.track:
            assert self.output_counts is not None
            self.ids, self.output_counts = self.ids[index], self.output_counts[index]


def apply_penalties(logits: Tensor, history: TokenHistory, config: GenerationConfig) -> Tensor:
    """Repetition (CTRL / transformers' definition), frequency and presence penalties (OpenAI's),
    and ``no_repeat_ngram_size`` blocking, on float logits (B, V)."""
    if not history.track:
        return logits
    if config.repetition_penalty != 1.0:
        vocab = logits.shape[-1]
        seen = torch.where(history.ids >= 0, history.ids, vocab)  # padding goes to a sink column
        padded = torch.cat((logits, logits.new_zeros(logits.shape[0], 1)), dim=1)
        score = padded.gather(1, seen)
        penalty = max(config.repetition_penalty, _TINY)  # 5e-324 is 0 in float32: no division by 0
        penalized = torch.where(score < 0, score * penalty, score / penalty)
        # An extreme penalty (1e308 is inf in float32) must not turn a finite logit into ±inf or
        # NaN (0 * inf): it saturates at the dtype's range instead, so a row whose every allowed
        # token was penalized (a grammar leaves few) still samples among them; masked -inf stays.
        finfo = torch.finfo(score.dtype)
        score = torch.where(score.isfinite(), penalized.clamp(finfo.min, finfo.max), score)
        logits = padded.scatter(1, seen, score)[:, :vocab]
    if config.frequency_penalty or config.presence_penalty:
        assert history.output_counts is not None
        counts = history.output_counts.to(logits.dtype)
        logits = (
            logits
            - config.frequency_penalty * counts
            - config.presence_penalty * (counts > 0).to(logits.dtype)
        )
    if config.no_repeat_ngram_size:
        logits = logits.masked_fill(
            banned_ngram_tokens(history.ids, config.no_repeat_ngram_size, logits.shape[-1]), float("-inf")
        )
    return logits


def banned_ngram_tokens(ids: Tensor, n: int, vocab_size: int) -> Tensor:
    """(B, V) True for tokens that would repeat an n-gram already in the row (transformers'
    ``no_repeat_ngram_size``); -1 entries (padding) are never part of an n-gram."""
    batch, length = ids.shape
    sink = torch.zeros(batch, vocab_size + 1, dtype=torch.bool, device=ids.device)  # column V: no ban
    if length < n:
        return sink[:, :vocab_size]
    if n == 1:
        return sink.scatter_(1, torch.where(ids >= 0, ids, vocab_size), True)[:, :vocab_size]
    grams = ids.unfold(1, n, 1)  # (B, L-n+1, n)
    suffix = ids[:, length - n + 1 :]  # (B, n-1)
    match = (grams[:, :, :-1] == suffix[:, None]).all(-1) & (grams >= 0).all(-1)
    banned = torch.where(match, grams[:, :, -1], vocab_size)
    return sink.scatter_(1, banned, True)[:, :vocab_size]


def truncate(logits: Tensor, config: GenerationConfig) -> Tensor:
    """Temperature, then top-k, top-p (nucleus), min-p and typical-p, on float logits (B, V)."""
    scaled = logits / config.temperature
    if not bool(torch.isfinite(scaled.amax(-1)).all()):
        # A tiny temperature (or repetition penalty) overflowed a row's best logit to +-inf, whose
        # softmax is NaN. Shifted to a maximum of 0 first, the division keeps its limit: greedy
        # (the tokens a penalty overflowed to +inf tie).
        logits = logits.clamp(max=torch.finfo(logits.dtype).max)
        scaled = (logits - logits.amax(-1, keepdim=True)) / config.temperature
    logits = scaled
    if config.top_k is not None and config.top_k < logits.shape[-1]:
        kth = torch.topk(logits, config.top_k).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p is not None and config.top_p < 1:
        # The smallest set of most likely tokens holding top_p: a token goes when it and every less
        # likely one hold at most 1 - top_p (so a mass reaching top_p exactly takes no extra token).
        # Summed from the least likely up, as transformers' TopPLogitsWarper, to round as it does.
        sorted_logits, order = logits.sort()
        drop = sorted_logits.softmax(-1).cumsum(-1) <= 1 - config.top_p
        drop[:, -1] = False  # the most likely token always stays
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    if config.min_p is not None and config.min_p > 0:
        probs = logits.softmax(-1)
        threshold = config.min_p * probs.max(-1, keepdim=True).values
        logits = logits.masked_fill(probs < threshold, float("-inf"))
    if config.typical_p is not None and config.typical_p < 1:
        logits = _typical(logits, config.typical_p)
    return logits


def _typical(logits: Tensor, mass: float) -> Tensor:
    """Locally typical sampling (Meister et al. 2022), as transformers' TypicalLogitsWarper."""
    log_probs = logits.log_softmax(-1)
    probs = log_probs.exp()
    entropy = -(torch.nan_to_num(log_probs * probs)).sum(-1, keepdim=True)
    shifted = (-log_probs - entropy).abs()
    sorted_shift, order = shifted.sort()
    cumulative = logits.gather(-1, order).softmax(-1).cumsum(-1)
    last = (cumulative < mass).sum(-1, keepdim=True).clamp(max=logits.shape[-1] - 1)
    drop_sorted = sorted_shift > sorted_shift.gather(1, last)
    return logits.masked_fill(drop_sorted.scatter(1, order, drop_sorted), float("-inf"))


def choose(
    logits: Tensor,
    history: TokenHistory,
    config: GenerationConfig,
    generator: torch.Generator | None,
    forbid: Tensor | None = None,
) -> Tensor:
    """Next token ids (B,) from last-position logits (B, V). ``forbid`` (V,) bool: tokens that
    may not be chosen now (stop tokens before ``min_new_tokens``)."""
    logits = apply_penalties(logits.float(), history, config)
    if forbid is not None:
        logits = logits.masked_fill(forbid, float("-inf"))
    if config.temperature < _TINY:  # 0, or too small for float32: greedy, its limit
        return logits.argmax(-1)
    probs = truncate(logits, config).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def token_logprobs(logits: Tensor, tokens: Tensor, top: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Log-probabilities (B,) of ``tokens`` under the model's distribution, and the ``top`` best
    alternatives (B, top) ids and log-probabilities (None when ``top`` is 0)."""
    log_probs = logits.float().log_softmax(-1)
    chosen = log_probs.gather(1, tokens[:, None])[:, 0]
    if not top:
        return chosen, None, None
    values, ids = log_probs.topk(top, dim=-1)
    return chosen, ids, values


def alternatives(ids: Tensor | None, values: Tensor | None) -> list[list[tuple[int, float]]]:
    """(T, k) top alternatives as T lists of ``(token_id, logprob)``; [] when not asked for."""
    if ids is None or values is None:
        return []
    return [list(zip(i, v, strict=True)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]
