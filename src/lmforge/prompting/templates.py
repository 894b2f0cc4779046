"""Prompt templates: how an instruction, k demonstrations and an input become text pieces.

A prompt is an optional instruction, k demonstrations and the input, each rendered with one
template, e.g. ``"Review: {text}\\nSentiment: {label}"`` (a template without ``{label}`` gets
``" {label}"`` appended). Demonstrations carry their gold label word; the input's label slot is
where the model is asked for the class.

Pieces are cut *before* whitespace: the separator between demonstrations starts the next piece
and the space before a label word belongs to the label (``" positive"``), because byte-level BPE
and WordPiece start a new word at whitespace (see :mod:`lmforge.prompting.scorer`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lmforge.errors import ConfigError

__all__ = ["EncodedPrompt", "PromptSegments", "PromptTemplate"]


@dataclass(frozen=True)
class PromptTemplate:
    """How one example becomes text.

    Attributes:
        template: text with one ``{text}`` and at most one ``{label}`` after it.
        instruction: text put once before the demonstrations (may be empty).
        separator: between instruction, demonstrations and the input.
    """

    template: str
    instruction: str = ""
    separator: str = "\n\n"

    def __post_init__(self) -> None:
        t = self.template
        if t.count("{text}") != 1:
            raise ConfigError(f"template {t!r} must contain {{text}} exactly once")
        if t.count("{label}") > 1 or ("{label}" in t and t.index("{label}") < t.index("{text}")):
            raise ConfigError(f"template {t!r}: {{label}} may appear once, after {{text}}")
        unknown = sorted({m for m in re.findall(r"\{(\w+)\}", t) if m not in ("text", "label")})
        if unknown:  # a typo such as {txet} would otherwise be sent to the model verbatim
            raise ConfigError(
                f"template {t!r}: unknown placeholder {{{unknown[0]}}}; a template has {{text}} and "
                "optionally {label}"
            )

    @property
    def head(self) -> str:
        """The template up to the label slot, e.g. ``"Review: {text}\\nSentiment: "``."""
        t = self.template if "{label}" in self.template else self.template + " {label}"
        return t.split("{label}")[0]

    @property
    def tail(self) -> str:
        """The template after the label slot (e.g. ``"."``); not scored."""
        return self.template.split("{label}")[1] if "{label}" in self.template else ""

    @property
    def label_lead(self) -> str:
        """Spaces before the label slot: they are tokenized with the label word (``" positive"``)."""
        return self.head[len(self.head.rstrip(" ")) :]

    def demonstration(self, text: str, label_word: str) -> str:
        """A solved example: the template with its text and gold label word."""
        return self.head.replace("{text}", text) + label_word + self.tail

    def query(self, text: str) -> str:
        """The input up to (not including) the label slot and the spaces before it."""
        filled = self.head.replace("{text}", text)
        return filled[: len(filled) - len(self.label_lead)]

    def premise(self) -> str:
        """The domain premise of PMI scoring: the answer cue after ``{text}`` (e.g. ``"Sentiment:"``)."""
        return self.head.split("{text}", 1)[1].strip(" \n\t")


@dataclass
class PromptSegments:
    """The text pieces that are tokenized separately (see the module docstring)."""

    prefix: str
    queries: list[str]
    label_lead: str


@dataclass
class EncodedPrompt:
    """Token ids of a prompt: the shared prefix, each input's query and each label continuation."""

    prefix_ids: list[int]
    query_ids: list[list[int]]
    label_ids: list[list[int]]
    suffix_ids: list[int]
