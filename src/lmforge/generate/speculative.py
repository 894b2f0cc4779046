"""Prompt-lookup speculative decoding (Saxena 2023; transformers' ``prompt_lookup_num_tokens``).

The draft is what followed the latest earlier occurrence of the text's last n-gram (longest n
first); the model checks every draft token in one forward pass and keeps the longest prefix that
greedy decoding would have produced, plus the token it predicts after it. The output is the
greedy output; on repetitive text (code, extraction, quoting the prompt) several tokens land per
forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from lmforge.generate.config import GenerationConfig
from lmforge.generate.sampling import alternatives, token_logprobs
from lmforge.generate.session import DecodeSession
from lmforge.generate.steps import FinishReason, StopPredicate, TokenStep


def lookup_draft(history: Sequence[int], max_ngram: int, num_tokens: int) -> list[int]:
    """Up to ``num_tokens`` tokens that followed the most recent earlier match of the longest
    suffix n-gram of ``history`` (n from ``max_ngram`` down to 1); [] when nothing matches."""
    length = len(history)
    for n in range(min(max_ngram, length - 1), 0, -1):
        suffix = list(history[length - n :])
        for start in range(length - n - 1, -1, -1):
            if list(history[start : start + n]) == suffix:
                return list(history[start + n : start + n + num_tokens])
    return []


def speculative_stream(
    session: DecodeSession, config: GenerationConfig, stop_ids: list[int], stop: StopPredicate | None
) -> Iterator[TokenStep]:
    """Greedy decoding of one prompt (batch of 1), several tokens per model call when drafts match."""
    assert session.batch_size == 1
    prompt = session.input_ids[0][session.prompt_mask[0]].tolist()
    history, generated = list(prompt), list[int]()
    next_logits = session.prefill()[0]  # (V,)
    while True:
        token = int(next_logits.argmax())
        room = config.max_new_tokens - len(generated) - 1  # after this token
        draft = lookup_draft(
            history + [token], config.prompt_lookup_max_ngram, min(config.prompt_lookup_num_tokens, room)
        )
        fed = torch.tensor([[token, *draft]], device=session.input_ids.device)
        proposals = [token, *draft]
        logits: Tensor | None = None
        accepted = 1
        if room > 0 and token not in stop_ids:
            logits = session.step(fed)[0]  # (1 + d, V): row i predicts the token after proposals[i]
            predicted = logits.argmax(-1).tolist()
            while accepted <= len(draft) and draft[accepted - 1] == predicted[accepted - 1]:
                accepted += 1
            session.rollback(len(draft) - (accepted - 1))
        emitted: list[int] = []
        step_logits = [next_logits] + ([logits[i] for i in range(accepted - 1)] if logits is not None else [])
        reason: FinishReason | None = None
        for index, candidate in enumerate(proposals[:accepted]):
            if candidate in stop_ids:
                reason = "stop"
                step_logits = step_logits[:index]
                break
            emitted.append(candidate)
            generated.append(candidate)
            history.append(candidate)
            if stop is not None and stop(0, generated):
                reason = "stop"
                step_logits = step_logits[: index + 1]
                break
            if len(generated) == config.max_new_tokens:
                reason = "length"
                step_logits = step_logits[: index + 1]
                break
        yield _step(emitted, reason, step_logits, config)
        if reason is not None:
            return
        assert logits is not None
        next_logits = logits[accepted - 1]


def _step(
    tokens: list[int], reason: FinishReason | None, logits: list[Tensor], config: GenerationConfig
) -> TokenStep:
    step = TokenStep(tokens=[tokens], finished=[reason])
    if config.logprobs and tokens:
        ids = torch.tensor(tokens, device=logits[0].device)
        chosen, top_ids, top_values = token_logprobs(
            torch.stack(logits[: len(tokens)]), ids, config.top_logprobs
        )
        step.logprobs = [chosen.tolist()]
        step.top_logprobs = [alternatives(top_ids, top_values)] if config.top_logprobs else None
    elif config.logprobs:
        step.logprobs = [[]]
        step.top_logprobs = [[]] if config.top_logprobs else None
    return step
