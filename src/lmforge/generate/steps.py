"""What the engine hands back: one :class:`TokenStep` per decoding step, or a whole
:class:`GenerationOutput`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length"]

# Called after each step with (row, the row's new tokens so far); True ends the row with
# finish reason "stop" (the text layer matches stop strings this way).
StopPredicate = Callable[[int, Sequence[int]], bool]


@dataclass
class TokenStep:
    """The tokens one decoding step added, per row (rows are prompt-major: prompt i's j-th
    sample is row ``i * n + j``).

    ``tokens[r]`` is empty for a row that had already finished, and may hold several tokens
    (speculative decoding accepts drafts). A row's stop token is not in ``tokens``: the step that
    meets it only sets ``finished[r]``. ``logprobs[r]`` / ``top_logprobs[r]`` line up with
    ``tokens[r]`` when asked for (each alternative a ``(token_id, logprob)`` pair).
    """

    tokens: list[list[int]]
    finished: list[FinishReason | None]
    logprobs: list[list[float]] | None = None
    top_logprobs: list[list[list[tuple[int, float]]]] | None = None


@dataclass
class GenerationOutput:
    """Every row's new tokens (stop token excluded), why it finished, and its log-probabilities."""

    sequences: list[list[int]]
    finish_reasons: list[FinishReason]
    logprobs: list[list[float]] | None = None
    top_logprobs: list[list[list[tuple[int, float]]]] | None = None
    prompt_lengths: list[int] = field(default_factory=list)

    def add(self, step: TokenStep) -> None:
        """Fold one step in."""
        for row, tokens in enumerate(step.tokens):
            self.sequences[row].extend(tokens)
            if step.logprobs is not None and self.logprobs is not None:
                self.logprobs[row].extend(step.logprobs[row])
            if step.top_logprobs is not None and self.top_logprobs is not None:
                self.top_logprobs[row].extend(step.top_logprobs[row])
            reason = step.finished[row]
            if reason is not None:
                self.finish_reasons[row] = reason
