"""Chat / instruction data for supervised fine-tuning: JSONL conversations.

Each line is ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``
(the field name is an option). Instruction pairs are accepted too and become a two-turn
conversation: ``{"prompt": ..., "response": ...}`` (or ``"completion"``), or Alpaca's
``{"instruction": ..., "input": ..., "output": ...}`` (the input, when present, follows the
instruction after a blank line). A conversation needs at least one assistant turn, since the loss
is taken on assistant turns only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.data.readers import ErrorLog, OnError
from lmforge.data.records import iter_records

__all__ = ["ROLES", "ChatData", "ChatExample", "ChatMessage", "load_chat"]

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class ChatMessage:
    """One turn."""

    role: str
    content: str


@dataclass(frozen=True)
class ChatExample:
    """One conversation (``line``: where it is in the file)."""

    messages: tuple[ChatMessage, ...]
    line: int | None = None

    def as_dicts(self) -> list[dict[str, str]]:
        """The messages as ``[{"role", "content"}]``, the form chat templates take."""
        return [{"role": m.role, "content": m.content} for m in self.messages]


@dataclass
class ChatData:
    """Conversations of one file."""

    examples: list[ChatExample]
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)


def _from_instruction(record: dict[str, Any]) -> list[Any] | None:
    """An instruction record as messages, or ``None`` when it is none of the known shapes."""
    response = record.get("response", record.get("completion", record.get("output")))
    if "prompt" in record:
        prompt = record["prompt"]
    elif "instruction" in record:
        prompt = record["instruction"]
        extra = record.get("input")
        if isinstance(prompt, str) and isinstance(extra, str) and extra.strip():
            prompt = f"{prompt}\n\n{extra}"
    else:
        return None
    if response is None:
        return None
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def _messages(raw: Any) -> tuple[tuple[ChatMessage, ...] | None, str]:
    """Validated messages, or ``(None, problem)``."""
    if not isinstance(raw, list) or not raw:
        return None, "'messages' must be a non-empty list"
    messages = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            return None, f"messages[{i}] is not an object with 'role' and 'content'"
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            return None, f"messages[{i}] has role {role!r}; use one of {', '.join(ROLES)}"
        if not isinstance(content, str):
            return None, f"messages[{i}] has no text 'content'"
        messages.append(ChatMessage(role, content))
    if not any(m.role == "assistant" and m.content.strip() for m in messages):
        return None, "no non-empty assistant message: nothing to train on"
    return tuple(messages), ""


def load_chat(
    path: str | Path,
    *,
    messages_column: str = "messages",
    on_error: OnError = "raise",
    limit: int | None = None,
) -> ChatData:
    """Load conversations from a JSONL file (optionally ``.gz``).

    Raises:
        DataError: naming file:line: no messages (nor prompt/response), an unknown role, content
            that is not text, or no assistant turn (with ``on_error="raise"``).
    """
    path = Path(path)
    errors = ErrorLog(on_error)
    examples = []
    for line, record in iter_records(path, errors, limit=limit):
        raw = record.get(messages_column)
        if raw is None:
            raw = _from_instruction(record)
        if raw is None:
            errors.bad(
                path,
                line,
                f"no {messages_column!r} list and no prompt/response or instruction/output fields "
                f"(found {sorted(record)})",
            )
            continue
        messages, problem = _messages(raw)
        if messages is None:
            errors.bad(path, line, problem)
            continue
        examples.append(ChatExample(messages, line))
    errors.require(path, examples, "conversations")
    return ChatData(examples, str(path), errors.info(path))
