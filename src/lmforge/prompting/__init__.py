"""Prompting stage: zero- and few-shot prompted classification with causal or masked LMs.

Each class is scored by the log-probability of its label word(s) after a prompt built from a
template, an optional instruction and k demonstrations; the shared prefix is encoded once and
its KV cache reused. :func:`run_prompt_protocol` (``lmforge prompt``) evaluates templates × shots
× seeds × calibrations; the calibrations themselves (contextual, batch, PMI and the post-hoc
calibrators) live in :mod:`lmforge.calibrate`.

    >>> scorer = PromptScorer(model, tokenizer)
    >>> scores = scorer.score(PromptTemplate("Review: {text}\\nSentiment:"), texts, ["negative", "positive"])
"""

from lmforge.prompting.data import BUNDLED_DATASETS, LabelledData, hash_split, load_labelled, parse_label_spec
from lmforge.prompting.protocol import (
    PROMPT_CALIBRATIONS,
    PromptRunConfig,
    aggregate_rows,
    macro_f1,
    run_prompt_protocol,
    sample_demonstrations,
)
from lmforge.prompting.scorer import PromptScorer
from lmforge.prompting.scoring import (
    SCORINGS,
    Scoring,
    causal_label_logprobs,
    masked_label_logprobs,
    reduce_label_logprobs,
)
from lmforge.prompting.templates import EncodedPrompt, PromptSegments, PromptTemplate

__all__ = [
    "BUNDLED_DATASETS",
    "PROMPT_CALIBRATIONS",
    "SCORINGS",
    "EncodedPrompt",
    "LabelledData",
    "PromptRunConfig",
    "PromptScorer",
    "PromptSegments",
    "PromptTemplate",
    "Scoring",
    "aggregate_rows",
    "causal_label_logprobs",
    "hash_split",
    "load_labelled",
    "macro_f1",
    "masked_label_logprobs",
    "parse_label_spec",
    "reduce_label_logprobs",
    "run_prompt_protocol",
    "sample_demonstrations",
]
