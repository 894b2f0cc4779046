"""Multi-turn chat over a tokenizer's chat template.

A :class:`ChatSession` keeps the messages, renders them with ``Tokenizer.apply_chat_template``
and stops each reply at the template's end-of-turn token (found by rendering a reply and reading
what the template writes after it). A new turn reuses the token ids of the previous prompt and of
the reply the model generated, so the model sees its own tokens again, not a re-tokenisation of
their text; the oldest turns are dropped (the system message kept) when the context would overflow.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

from lmforge.errors import ConfigError
from lmforge.generate.config import GenerationConfig
from lmforge.generate.text import TextRun
from lmforge.models import TransformerModel
from lmforge.tokenizers import Tokenizer

__all__ = ["ChatSession", "end_of_turn"]

_SENTINEL = "\u2063lmforge-reply\u2063"


def end_of_turn(tokenizer: Tokenizer) -> tuple[list[int], list[str]]:
    """The token ids and strings that close an assistant turn in the tokenizer's chat template.

    Returns ``([id], [])`` when the template closes a reply with a special token (``<|im_end|>``,
    ``<|eot_id|>``), ``([], [text])`` when it closes it with plain text, and adds the EOS id.
    """
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _SENTINEL}]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=False)
    suffix = rendered.split(_SENTINEL, 1)[1] if _SENTINEL in rendered else ""
    ids: list[int] = []
    strings: list[str] = []
    encoded = tokenizer.encode(suffix.strip(), add_special_tokens=False) if suffix.strip() else []
    added = tokenizer.backend.get_added_tokens_decoder()
    if encoded and encoded[0] in added:
        ids.append(encoded[0])
    elif suffix.strip():
        strings.append(suffix.strip())
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids, strings


class ChatSession:
    """A conversation with a model.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer, with a chat template.
        config: how to decode each reply (end-of-turn ids and strings are added to its stops).
        system: an optional system message.
    """

    def __init__(
        self,
        model: TransformerModel,
        tokenizer: Tokenizer,
        config: GenerationConfig | None = None,
        system: str | None = None,
    ) -> None:
        if tokenizer.chat_template is None:
            raise ConfigError("this model's tokenizer has no chat template; chat needs one")
        config = config or GenerationConfig(max_new_tokens=256)
        if config.n != 1 or config.num_beams != 1:
            raise ConfigError("chat decodes one reply per turn: n and num_beams must be 1")
        ids, strings = end_of_turn(tokenizer)
        self.config = dataclasses.replace(
            config,
            stop_token_ids=list(dict.fromkeys([*config.stop_token_ids, *ids])),
            stop=list(dict.fromkeys([*config.stop, *strings])),
        )
        self.model, self.tokenizer = model, tokenizer
        self.messages: list[dict[str, str]] = []
        self.set_system(system)
        #: The ids of the last prompt sent to the model, and how many of them came from the last turn.
        self.last_prompt_ids: list[int] = []
        self.reused_tokens = 0
        self._transcript: tuple[str, list[int]] | None = None

    def set_system(self, text: str | None) -> None:
        """Replace (or with ``None`` remove) the system message; the turns stay."""
        self.messages = [m for m in self.messages if m["role"] != "system"]
        if text:
            self.messages.insert(0, {"role": "system", "content": text})
        self._transcript = None

    def reset(self) -> None:
        """Forget every turn, keep the system message."""
        self.messages = [m for m in self.messages if m["role"] == "system"]
        self._transcript = None

    def save(self, path: str | Path) -> Path:
        """Write the messages as JSON (a list of ``{"role", "content"}``)."""
        path = Path(path)
        path.write_text(json.dumps(self.messages, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        return path

    def stream(self, user: str) -> Iterator[str]:
        """Send a user message; yield the reply's text deltas. The reply joins the history at the end."""
        self.messages.append({"role": "user", "content": user})
        prompt_text, prompt_ids = self._prompt()
        run = TextRun(self.model, self.tokenizer, [prompt_ids], self.config, add_special_tokens=False)
        for step in run.steps():
            if step.deltas[0]:
                yield step.deltas[0]
        (reply,) = run.completions()
        self.messages.append({"role": "assistant", "content": reply.text})
        exact = self.tokenizer.decode(reply.token_ids) == reply.text
        self._transcript = (prompt_text + reply.text, prompt_ids + reply.token_ids) if exact else None

    def send(self, user: str) -> str:
        """Send a user message and return the whole reply."""
        return "".join(self.stream(user))

    def _prompt(self) -> tuple[str, list[int]]:
        limit = self.model.config.max_positions - self.config.max_new_tokens
        while True:
            text = self.tokenizer.apply_chat_template(self.messages, add_generation_prompt=True)
            ids, self.reused_tokens = self._encode(text)
            if len(ids) <= limit or self.model.config.positions == "relative":
                break
            turns = [i for i, m in enumerate(self.messages) if m["role"] != "system"]
            if len(turns) <= 1:
                raise ConfigError(
                    f"the message ({len(ids)} tokens) + max_new_tokens ({self.config.max_new_tokens}) "
                    f"exceeds the model's max_positions ({self.model.config.max_positions}); shorten it"
                )
            # Drop the oldest exchange (a user turn and the reply after it), keep the system message.
            del self.messages[turns[0] : turns[1] + 1 if len(turns) > 2 else turns[0] + 1]
            self._transcript = None
        self.last_prompt_ids = ids
        return text, ids

    def _encode(self, text: str) -> tuple[list[int], int]:
        """Ids of ``text``, reusing the last turn's ids when the text extends it at a special token."""
        if self._transcript is not None:
            previous_text, previous_ids = self._transcript
            if text.startswith(previous_text):
                tail = self.tokenizer.encode(text[len(previous_text) :], add_special_tokens=False)
                if tail and tail[0] in self.tokenizer.backend.get_added_tokens_decoder():
                    return previous_ids + tail, len(previous_ids)
        return self.tokenizer.encode(text, add_special_tokens=False), 0
