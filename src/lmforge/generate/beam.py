"""Beam search for decoder-only and encoder-decoder models, with transformers' semantics.

Per prompt, ``num_beams`` running beams; each step keeps the best ``keep = max(2, 1 + #stop ids)
* num_beams`` continuations so that enough unfinished ones remain. A continuation that ends (a
stop token, or the last allowed step) among the top ``num_beams`` becomes a finished hypothesis
scored ``sum of log-probs / generated_length ** length_penalty`` (the length counts the stop
token). The search stops when ``early_stopping is True`` and every prompt has ``num_beams``
hypotheses, or when no running beam can beat the worst kept hypothesis, judged at the beam's
current length (transformers' default heuristic) or, with ``"never"`` and a positive length
penalty, at ``max_new_tokens``. Shapes: B (prompts), K (beams), C (kept candidates), V (vocabulary), N (max new).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.generate.config import GenerationConfig
from lmforge.generate.sampling import TokenHistory, apply_penalties
from lmforge.generate.session import DecodeSession
from lmforge.generate.steps import FinishReason

_NEG = -1.0e9


@dataclass
class BeamResult:
    """The ``n`` best hypotheses of each prompt, prompt-major."""

    sequences: list[list[int]]
    finish_reasons: list[FinishReason]
    scores: list[float]


def beam_search(session: DecodeSession, config: GenerationConfig, stop_ids: list[int]) -> BeamResult:
    prompts, beams, steps = session.batch_size, config.num_beams, config.max_new_tokens
    device = session.input_ids.device
    logits = session.prefill()
    session.reorder(torch.arange(prompts, device=device).repeat_interleave(beams))
    logits = logits.repeat_interleave(beams, dim=0)
    vocab = logits.shape[-1]
    history = TokenHistory.of_session(session, vocab, config.has_penalties)
    stops = torch.tensor(stop_ids, dtype=torch.long, device=device)
    keep = max(2, 1 + len(stop_ids)) * beams
    is_top = torch.arange(keep, device=device) < beams  # (C,)

    running = torch.zeros(prompts, beams, steps, dtype=torch.long, device=device)
    running_scores = torch.full((prompts, beams), _NEG, device=device)
    running_scores[:, 0] = 0.0
    done = torch.zeros(prompts, beams, steps, dtype=torch.long, device=device)
    done_scores = torch.full((prompts, beams), _NEG, device=device)
    done_lengths = torch.zeros(prompts, beams, dtype=torch.long, device=device)
    done_by_stop = torch.zeros(prompts, beams, dtype=torch.bool, device=device)
    is_done = torch.zeros(prompts, beams, dtype=torch.bool, device=device)
    can_improve = torch.ones(prompts, 1, dtype=torch.bool, device=device)
    offsets = (torch.arange(prompts, device=device) * beams)[:, None]
    stop_when_full = config.early_stopping is True  # "never" is truthy but never stops on full
    # "never" with a positive length penalty bounds the running beams at their longest possible length.
    longest_bound = config.early_stopping == "never" and config.length_penalty > 0

    for step in range(steps):
        log_probs = apply_penalties(logits.float().log_softmax(-1), history, config)
        if step < config.min_new_tokens and len(stop_ids):
            log_probs[:, stops] = float("-inf")
        scores = (log_probs.view(prompts, beams, vocab) + running_scores[:, :, None]).view(prompts, -1)
        top_scores, top_index = scores.topk(keep, dim=-1)  # (B, C)
        source, tokens = top_index // vocab, top_index % vocab
        candidates = running.gather(1, source[:, :, None].expand(-1, -1, steps)).clone()
        candidates[:, :, step] = tokens
        by_stop = torch.isin(tokens, stops)
        ends = by_stop | (step == steps - 1)

        # The best unfinished continuations run on.
        running_candidates = top_scores + ends.float() * _NEG
        chosen = running_candidates.topk(beams, dim=-1).indices  # (B, K)
        running = candidates.gather(1, chosen[:, :, None].expand(-1, -1, steps))
        running_scores = running_candidates.gather(1, chosen)
        next_tokens = tokens.gather(1, chosen)

        # Candidates that end join the finished hypotheses if they are among the best.
        finished_scores = top_scores / ((step + 1) ** config.length_penalty)
        full = is_done.all(-1, keepdim=True) & stop_when_full
        finished_scores = finished_scores + (full | ~can_improve).float() * _NEG
        finished_scores = finished_scores + (~(ends & is_top)).float() * _NEG
        merged_scores = torch.cat((done_scores, finished_scores), dim=1)
        best = merged_scores.topk(beams, dim=-1).indices
        done = torch.cat((done, candidates), dim=1).gather(1, best[:, :, None].expand(-1, -1, steps))
        done_scores = merged_scores.gather(1, best)
        lengths = torch.where(by_stop, step, step + 1)
        done_lengths = torch.cat((done_lengths, lengths), dim=1).gather(1, best)
        done_by_stop = torch.cat((done_by_stop, by_stop), dim=1).gather(1, best)
        is_done = torch.cat((is_done, ends & is_top), dim=1).gather(1, best)

        rows = (offsets + source.gather(1, chosen)).view(-1)
        session.reorder(rows)
        history.reorder(rows)
        history.append(next_tokens.view(-1))

        best_length = steps if longest_bound else step + 1
        best_running = running_scores[:, :1] / (best_length**config.length_penalty)
        worst_done = torch.where(is_done, done_scores.min(-1, keepdim=True).values, _NEG)
        can_improve = can_improve & (best_running > worst_done).any(-1, keepdim=True)
        all_full = stop_when_full and bool(is_done.all())
        if step == steps - 1 or not bool(can_improve.any()) or all_full:
            break
        logits = session.step(next_tokens.view(-1, 1))[:, -1]

    sequences, reasons, final_scores = [], [], []
    for prompt in range(prompts):
        for rank in range(config.n):
            length = int(done_lengths[prompt, rank])
            sequences.append(done[prompt, rank, :length].tolist())
            reasons.append("stop" if bool(done_by_stop[prompt, rank]) else "length")
            final_scores.append(float(done_scores[prompt, rank]))
    return BeamResult(sequences, reasons, final_scores)  # type: ignore[arg-type]
