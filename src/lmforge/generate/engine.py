"""The generation engine: greedy, sampling, beam search and prompt-lookup decoding of a batch.

:func:`stream` yields one :class:`TokenStep` per decoding step (what streaming and the server
read); :func:`generate_detailed` collects them; :func:`generate` returns a padded tensor of new
tokens. All three take prompts padded on either side and ``n`` samples per prompt (rows are
prompt-major). With temperature 0 a row's output does not depend on what else is in the batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from lmforge.generate.beam import beam_search
from lmforge.generate.config import GenerationConfig, check_generation
from lmforge.generate.constrain import Constraint, mask_logits
from lmforge.generate.sampling import TokenHistory, alternatives, choose, token_logprobs
from lmforge.generate.session import DecodeSession
from lmforge.generate.speculative import speculative_stream
from lmforge.generate.steps import FinishReason, GenerationOutput, StopPredicate, TokenStep
from lmforge.models import TransformerModel


def stream(
    model: TransformerModel,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    config: GenerationConfig | None = None,
    stop: StopPredicate | None = None,
) -> Iterator[TokenStep]:
    """Decode step by step.

    Args:
        input_ids: (B, T) prompts (decoder-only) or sources (encoder-decoder), padded on any side.
        attention_mask: (B, T) 1 for real tokens; None when nothing is padded.
        config: how to decode (validated here; bad fields raise ConfigError naming them).
        stop: optional predicate ending a row (see :data:`StopPredicate`).

    Yields:
        One :class:`TokenStep` per step (beam search: one step with the final hypotheses).
    """
    config = config or GenerationConfig()
    config.validate()
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    longest = int(mask.sum(-1).max()) if input_ids.numel() else 0
    check_generation(config, model.config, longest)
    if config.max_new_tokens == 0:
        return
    stop_ids = config.stop_ids(model.config)
    with torch.inference_mode():
        session = DecodeSession(
            model, input_ids, attention_mask, config.max_new_tokens + config.prompt_lookup_num_tokens
        )
        if config.num_beams > 1:
            result = beam_search(session, config, stop_ids)
            yield TokenStep(tokens=result.sequences, finished=list(result.finish_reasons))
        elif config.prompt_lookup_num_tokens and session.batch_size == 1:
            yield from speculative_stream(session, config, stop_ids, stop)
        else:
            yield from _sample_stream(session, config, stop_ids, stop)


def _sample_stream(
    session: DecodeSession, config: GenerationConfig, stop_ids: list[int], stop: StopPredicate | None
) -> Iterator[TokenStep]:
    device = session.input_ids.device
    generator = torch.Generator(device=device).manual_seed(config.seed) if config.seed is not None else None
    logits = session.prefill()
    if config.n > 1:
        rows = torch.arange(session.batch_size, device=device).repeat_interleave(config.n)
        session.reorder(rows)
        logits = logits[rows]
    batch, vocab = logits.shape
    history = TokenHistory.of_session(session, vocab, config.has_penalties)
    stops = torch.tensor(stop_ids, dtype=torch.long, device=device)
    forbid = torch.zeros(vocab, dtype=torch.bool, device=device)
    forbid[stops] = True
    finished: list[bool] = [False] * batch
    generated: list[list[int]] = [[] for _ in range(batch)]
    spec = config.constraint
    constraints: list[Constraint | None] = [spec.start(stop_ids) for _ in range(batch)] if spec else []
    for index in range(config.max_new_tokens):
        masked = mask_logits(logits, constraints) if constraints else logits
        tokens = choose(masked, history, config, generator, forbid if index < config.min_new_tokens else None)
        ends = torch.isin(tokens, stops)
        step = TokenStep(tokens=[[] for _ in range(batch)], finished=[None] * batch)
        chosen: list[float] = []
        top: list[list[tuple[int, float]]] = []
        if config.logprobs:
            chosen_t, top_ids, top_values = token_logprobs(logits, tokens, config.top_logprobs)
            chosen, top = chosen_t.tolist(), alternatives(top_ids, top_values)
            step.logprobs = [[] for _ in range(batch)]
            step.top_logprobs = [[] for _ in range(batch)] if config.top_logprobs else None
        last = index == config.max_new_tokens - 1
        for row, (token, is_stop) in enumerate(zip(tokens.tolist(), ends.tolist(), strict=True)):
            if finished[row]:
                continue
            reason: FinishReason | None = None
            if is_stop:
                reason = "stop"
            else:
                step.tokens[row].append(token)
                generated[row].append(token)
                if step.logprobs is not None:
                    step.logprobs[row].append(chosen[row])
                if step.top_logprobs is not None:
                    step.top_logprobs[row].append(top[row])
                constraint = constraints[row] if constraints else None
                if constraint is not None:
                    constraint.advance(token)
                if stop is not None and stop(row, generated[row]):
                    reason = "stop"
                elif constraint is not None and constraint.is_finished():
                    reason = "stop"  # the grammar takes no further token
                elif last:
                    reason = "length"
            if reason is not None:
                finished[row] = True
                step.finished[row] = reason
                if constraints:
                    constraints[row] = None
        yield step
        if all(finished):
            return
        history.append(tokens)
        logits = session.step(tokens[:, None])[:, -1]


def generate_detailed(
    model: TransformerModel,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    config: GenerationConfig | None = None,
    stop: StopPredicate | None = None,
) -> GenerationOutput:
    """Every row's new tokens (stop token excluded), finish reasons and (if asked) log-probabilities."""
    config = config or GenerationConfig()
    prompts = input_ids.shape[0]
    rows = prompts * config.n
    output = GenerationOutput(
        sequences=[[] for _ in range(rows)],
        finish_reasons=["length"] * rows,
        logprobs=[[] for _ in range(rows)] if config.logprobs else None,
        top_logprobs=[[] for _ in range(rows)] if config.logprobs and config.top_logprobs else None,
    )
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    output.prompt_lengths = [int(length) for length in mask.sum(-1).repeat_interleave(config.n).tolist()]
    for step in stream(model, input_ids, attention_mask, config, stop):
        output.add(step)
    return output


def generate(
    model: TransformerModel,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    config: GenerationConfig | None = None,
) -> Tensor:
    """Continue each prompt; the new tokens (B * n, <= max_new_tokens).

    A row that stopped early is filled with its stop token (the first stop id) after its end.
    """
    config = config or GenerationConfig()
    output = generate_detailed(model, input_ids, attention_mask, config)
    width = max(
        (len(s) + (r == "stop") for s, r in zip(output.sequences, output.finish_reasons, strict=True)),
        default=0,
    )
    stop_ids = config.stop_ids(model.config)
    fill = stop_ids[0] if stop_ids else (model.config.pad_token_id or 0)
    result = input_ids.new_full((len(output.sequences), width), fill)
    for row, sequence in enumerate(output.sequences):
        result[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return result
