"""Causal-LM fine-tuning objectives: chat SFT with loss on assistant turns only, and plain text.

``chat``: each conversation is rendered with the tokenizer's chat template (as the model sees it
at inference) and tokenised with ``add_special_tokens=False`` (the template already holds the
special tokens, as in ``transformers``). Labels score only the assistant turns: each assistant
message's content plus its end-of-turn marker (the first special token after the content, e.g.
SmolLM2's ``<|im_end|>``); the system prompt, user turns and the headers that open each turn are
``-100``. The assistant spans are found by character offsets: the conversation is rendered once,
and again up to each assistant turn (with the generation prompt) and through it; the content must
appear verbatim (or stripped, for templates that ``trim``) after that header. A template that
rewrites the content (so it cannot be found) raises :class:`~lmforge.errors.ConfigError`.

Truncation to ``max_length`` keeps whole turns when possible: the sequence is cut right after the
last assistant turn (its end marker) that fits, so no assistant answer is cut mid-way and later
turns are dropped. When even the first assistant turn does not fit, the first ``max_length``
tokens are kept (that answer is scored in part); a conversation with no scored token left is
dropped (counted in ``info["dropped"]``).

``lm``: every token of a text is scored; the tokeniser's BOS (when its post-processor adds one)
and an EOS are added, and a text longer than ``max_length`` is cut into consecutive
``max_length``-token windows (no tokens are lost; each window's first token has no context and is
not scored).

The loss is the shifted causal cross-entropy: logits at position ``t`` predict the token at
``t + 1``, averaged over the scored tokens. ``labels[0]`` is always ``-100``, so the number of
labels that are not ``-100`` is exactly the number of scored tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.data import ChatData, LMData
from lmforge.errors import ConfigError
from lmforge.metrics.generation import perplexity_metrics
from lmforge.models import TransformerModel
from lmforge.tasks.base import LabelNames, References, Scores, Task, TaskSettings, TaskSplit, register_task
from lmforge.tasks.sources import IGNORE_INDEX, TaskSource, pad_id
from lmforge.tokenizers import Tokenizer

__all__ = [
    "CausalLMLoss",
    "ChatTask",
    "LMTask",
    "assistant_spans",
    "causal_lm_loss",
    "encode_chat",
    "encode_chat_example",
    "encode_lm",
    "predict_causal",
    "shifted_nll",
]

Message = Mapping[str, str]


def _markers(tokenizer: Tokenizer) -> list[str]:
    """Strings that can end a turn: the special added tokens and the EOS token."""
    decoder = tokenizer.backend.get_added_tokens_decoder()
    markers = {token.content for token in decoder.values() if token.special and token.content}
    if tokenizer.eos_token:
        markers.add(tokenizer.eos_token)
    return sorted(markers, key=len, reverse=True)


def _render(tokenizer: Tokenizer, messages: Sequence[Message], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), add_generation_prompt=generation_prompt)


def assistant_spans(tokenizer: Tokenizer, messages: Sequence[Message]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of each assistant turn (content + end marker).

    Args:
        tokenizer: a tokenizer with a ``chat_template``.
        messages: ``[{"role", "content"}, ...]``.

    Returns:
        ``(text, spans)``: the full rendering (no generation prompt) and ``(start, end)`` character
        offsets, one per assistant message in order.

    Raises:
        ConfigError: no chat template, or an assistant message's content does not appear in the
            rendering after its turn header (the template rewrites it).
    """
    full = _render(tokenizer, messages, False)
    markers = _markers(tokenizer)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        # Where the assistant turn's header ends: the rendering up to here with the generation
        # prompt, when the template renders the earlier turns the same way (the usual case).
        start = cursor
        if i > 0:
            head = _render(tokenizer, messages[:i], True)
            if full.startswith(head) and len(head) >= cursor:
                start = len(head)
        content = message["content"]
        position = full.find(content, start) if content else start
        if position < 0 and content.strip():
            content = content.strip()
            position = full.find(content, start)
        if position < 0:
            raise ConfigError(
                f"the chat template does not render assistant message {i} verbatim "
                f"({message['content'][:40]!r}...), so the assistant tokens cannot be told apart; "
                "use a template that inserts message['content'] unchanged"
            )
        content_end = position + len(content)
        through = _render(tokenizer, messages[: i + 1], False)
        turn_end = len(through) if full.startswith(through) and len(through) >= content_end else len(full)
        rest = full[content_end:turn_end]
        found = [(rest.find(m), -len(m), m) for m in markers if m in rest]
        end = content_end
        if found:  # the end-of-turn marker: the first special token after the content
            index, _, marker = min(found)
            end = content_end + index + len(marker)
        spans.append((position, end))
        cursor = end
    return full, spans


def encode_chat_example(
    tokenizer: Tokenizer, messages: Sequence[Message], max_length: int
) -> dict[str, list[int]] | None:
    """Token ids and assistant-only labels of one conversation, truncated at a turn boundary.

    Returns:
        ``{"input_ids", "labels"}`` (labels ``-100`` outside assistant turns), or ``None`` when no
        assistant token is left within ``max_length``.
    """
    text, spans = assistant_spans(tokenizer, messages)
    encoding = tokenizer.backend.encode(text, add_special_tokens=False)
    ids = list(encoding.ids)
    labels = [IGNORE_INDEX] * len(ids)
    cuts = []  # token index just after each assistant turn
    for start, end in spans:
        last = -1
        for t, (s, e) in enumerate(encoding.offsets):
            if s < end and e > start:  # the token overlaps the turn (byte-level pieces may straddle)
                labels[t] = ids[t]
                last = t
        if last >= 0:
            cuts.append(last + 1)
    labels[0] = IGNORE_INDEX  # nothing predicts the first token
    if len(ids) > max_length:
        fitting = [c for c in cuts if c <= max_length]
        cut = max(fitting) if fitting else max_length
        ids, labels = ids[:cut], labels[:cut]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return {"input_ids": ids, "labels": labels}


def encode_chat(
    tokenizer: Tokenizer, conversations: Sequence[Sequence[Message]], max_length: int
) -> tuple[list[dict[str, list[int]]], dict[str, Any]]:
    """Encode conversations (see :func:`encode_chat_example`).

    Returns:
        ``(encoded, info)``: the kept examples and ``info`` with ``dropped`` (conversations with no
        assistant token within ``max_length``) and ``truncated``.
    """
    if tokenizer.chat_template is None:
        raise ConfigError(
            "--task chat needs a tokenizer with a chat template (tokenizer_config.json 'chat_template' "
            "or chat_template.jinja next to the model); set tokenizer.chat_template"
        )
    encoded, dropped, truncated = [], 0, 0
    for messages in conversations:
        item = encode_chat_example(tokenizer, messages, max_length)
        if item is None:
            dropped += 1
            continue
        truncated += int(len(item["input_ids"]) == max_length)
        encoded.append(item)
    if not encoded:
        raise ConfigError(f"no conversation has an assistant token within max_length={max_length}")
    return encoded, {"dropped": dropped, "truncated": truncated}


def encode_lm(tokenizer: Tokenizer, texts: Sequence[str], max_length: int) -> list[dict[str, list[int]]]:
    """Texts as ``max_length`` windows with every token scored (each window's first token excepted)."""
    if max_length < 2:
        raise ConfigError(f"max_length must be at least 2 for language modelling, got {max_length}")
    eos = tokenizer.eos_token_id
    encoded = []
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=True)
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
        for begin in range(0, len(ids), max_length):
            window = ids[begin : begin + max_length]
            if len(window) >= 2:
                encoded.append({"input_ids": window, "labels": [IGNORE_INDEX, *window[1:]]})
    if not encoded:
        raise ConfigError("no text has two tokens or more: nothing to train on")
    return encoded


def shifted_nll(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Summed next-token NLL per sequence and the number of scored tokens.

    Args:
        logits: (B, T, V).
        labels: (B, T) token ids, ``-100`` where not scored; ``logits[:, t]`` predicts ``labels[:, t + 1]``.

    Returns:
        ``(nll, count)``: both (B,), float32 nats and int64.
    """
    shifted, targets = logits[:, :-1].float(), labels[:, 1:]  # (B, T-1, V), (B, T-1)
    nll = F.cross_entropy(
        shifted.reshape(-1, shifted.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(targets.shape)
    return nll.sum(1), (targets != IGNORE_INDEX).sum(1)


def causal_lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean shifted cross-entropy over the scored tokens of the batch (logits (B, T, V), labels (B, T))."""
    nll, count = shifted_nll(logits, labels)
    return nll.sum() / count.sum().clamp(min=1)


@torch.no_grad()
def predict_causal(model: torch.nn.Module, source: Any, batch_size: int = 16) -> tuple[np.ndarray, float]:
    """Summed NLL of each example of a :class:`~lmforge.tasks.sources.TaskSource` and the mean loss.

    Returns:
        ``(nll, loss)``: per-example summed NLL [N] float64 (nats) in example order, and the
        token-weighted mean NLL.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums, total, count = [], 0.0, 0
    try:
        for indices in source.ordered_batches(batch_size):
            batch = source.collate(indices, np.random.default_rng(0))
            ids = torch.from_numpy(batch["input_ids"]).to(device)
            mask = torch.from_numpy(batch["attention_mask"]).to(device)
            labels = torch.from_numpy(batch["token_labels"]).to(device)
            nll, scored = shifted_nll(model(ids, attention_mask=mask).logits, labels)
            sums.append(nll.double().cpu().numpy())
            total, count = total + float(nll.sum()), count + int(scored.sum())
    finally:
        model.train(was_training)
    return np.concatenate(sums) if sums else np.zeros(0), total / max(count, 1)


def scored_counts(encoded: Sequence[Mapping[str, Sequence[int]]]) -> list[int]:
    """Number of scored tokens of each encoded example (its references for evaluation)."""
    return [sum(1 for label in item["labels"] if label != IGNORE_INDEX) for item in encoded]


class CausalLMLoss(nn.Module):
    """The shifted next-token loss of a ``causal_lm`` head on the scored tokens of a batch.

    ``forward(batch)`` returns ``(loss, logits)`` with logits (B, T, V).
    """

    def __init__(self, model: TransformerModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        logits = self.model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        assert logits is not None, "causal LM fine-tuning needs a causal_lm head"
        return causal_lm_loss(logits, batch["token_labels"]), logits


class LMTask(Task):
    """Causal LM on plain text: every token scored; validation reports loss and perplexity."""

    name = "lm"
    head = "causal_lm"
    data_kind = "lm"
    default_metric = "loss"
    predict_batch_size = 8  # (B, T, vocab) float32 logits: 8 x 512 x 49152 is already 800 MB
    validation_metrics = ("loss", "perplexity", "nll_per_token", "bits_per_token")

    def read(self, source: Any, split: str, config: Any) -> LMData | ChatData:
        data = super().read(source, split, config)
        if not isinstance(data, (LMData, ChatData)):
            raise ConfigError(f"{source}: not {self.name} data")
        return data

    def configure(self, model: TransformerModel, train: Any, settings: TaskSettings) -> TaskSettings:
        settings.max_length = min(settings.max_length, model.config.max_positions)
        return settings

    def _encode(
        self, data: Any, tokenizer: Tokenizer, max_length: int
    ) -> tuple[list[dict[str, list[int]]], dict[str, Any]]:
        return encode_lm(tokenizer, data.texts, max_length), {}

    def encode(
        self, data: Any, tokenizer: Tokenizer, settings: TaskSettings, seed: int, training: bool = False
    ) -> TaskSplit:
        """References are each example's number of scored tokens; ``info`` counts examples,
        scored tokens and (chat) conversations dropped / truncated at ``max_length``."""
        encoded, info = self._encode(data, tokenizer, settings.max_length)
        counts = scored_counts(encoded)
        info.update(examples=len(encoded), scored_tokens=sum(counts))
        return TaskSplit(TaskSource(encoded, None, pad_id(tokenizer), seed), counts, info=info)

    def loss(
        self, model: TransformerModel, settings: TaskSettings, train: TaskSplit, num_labels: int
    ) -> nn.Module:
        return CausalLMLoss(model)

    def predict(self, model: TransformerModel, split: TaskSplit, batch_size: int = 64) -> tuple[Any, float]:
        """Outputs: summed NLL per example (nats); references: scored tokens per example."""
        return predict_causal(model, split.source, min(batch_size, self.predict_batch_size or batch_size))

    def score(
        self, outputs: Any, references: References, names: LabelNames, *, validation: bool, **options: Any
    ) -> Scores:
        return perplexity_metrics(outputs, references), {}

    def report_fields(
        self, train: Any, train_split: TaskSplit, val: Any, val_split: TaskSplit | None
    ) -> dict[str, Any]:
        return {
            "encoding": {
                "train": train_split.info,
                "validation": None if val_split is None else val_split.info,
            }
        }


class ChatTask(LMTask):
    """Chat SFT on conversations: only the assistant turns are scored."""

    name = "chat"
    data_kind = "chat"

    def _encode(
        self, data: Any, tokenizer: Tokenizer, max_length: int
    ) -> tuple[list[dict[str, list[int]]], dict[str, Any]]:
        if isinstance(data, ChatData):
            return encode_chat(tokenizer, [e.as_dicts() for e in data.examples], max_length)
        return super()._encode(data, tokenizer, max_length)


register_task(LMTask())
register_task(ChatTask())
