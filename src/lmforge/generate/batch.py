"""Continuous batching: decode many requests in one batch that they join and leave at token boundaries.

A :class:`BatchDecoder` owns a fixed number of slots (the maximum batch) over one
:class:`SlotKVCache`. A queued request is prefilled (with the others admitted at the same
boundary) and its keys/values are copied into a free slot; every :meth:`BatchDecoder.step` then
runs one forward over all occupied slots, each row at its own position and attending to its own
valid cache span only (a boolean mask). A finished or cancelled request frees its slot at once.

Occupied slots are always rows ``0 .. rows-1`` of the cache: when a row leaves, the last row moves
into its place (one copy per departure), so a decode step reads views, never a gather.

Each request keeps its own :class:`GenerationConfig` (temperature, top-k/top-p/min-p, penalties,
stop ids, ``max_new_tokens``, ``seed``): tokens are chosen per row with the request's own history
and random generator, so with temperature 0, and with a seed, a request's tokens are those of
:func:`lmforge.generate.generate` run on it alone, whatever else shares the batch.

Not thread-safe: one thread (the scheduler's decode loop) calls :meth:`~BatchDecoder.add`,
:meth:`~BatchDecoder.cancel` and :meth:`~BatchDecoder.step`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count

import torch
from torch import Tensor

from lmforge.errors import ConfigError, UnsupportedError
from lmforge.generate.config import GenerationConfig, check_generation
from lmforge.generate.constrain import Constraint, mask_logits
from lmforge.generate.sampling import TokenHistory, alternatives, choose, token_logprobs
from lmforge.generate.steps import FinishReason, TokenStep
from lmforge.models import KVCache, TransformerModel
from lmforge.models.kv_cache import StaticKVCache


class SlotKVCache(KVCache):
    """Keys/values of ``slots`` rows, each row with its own length (``lengths[row]`` positions).

    Per layer, buffers (slots, nkv, width, hd) are allocated when a first prompt is stored and
    widened (doubling, up to ``capacity``) when a row needs more positions. During a decode step
    (:meth:`begin_step`) the stack sees ``length`` = the longest row, so keys span
    ``longest + 1`` columns; :meth:`update` writes each row's new key at that row's own length.
    """

    def __init__(self, slots: int, capacity: int, device: torch.device, initial_width: int = 256) -> None:
        super().__init__()
        self.slots, self.capacity, self.device = slots, capacity, device
        self.width = min(initial_width, capacity)
        self.rows = 0  # occupied rows: 0 .. rows-1
        self.lengths = [0] * slots
        self._buffers: dict[int, tuple[Tensor, Tensor]] = {}
        self._span = 0
        self._row_index = torch.arange(slots, device=device)
        self._columns = torch.zeros(slots, dtype=torch.long, device=device)

    @property
    def length(self) -> int:
        return self._span

    def store(self, row: int, prompt_kv: dict[int, tuple[Tensor, Tensor]]) -> None:
        """Put one prompt's keys/values ``{layer: (nkv, T, hd) pair}`` in ``row`` (positions 0..T-1)."""
        length = next(iter(prompt_kv.values()))[0].shape[1]
        self._widen(length)
        for layer, (key, value) in prompt_kv.items():
            if layer not in self._buffers:
                shape = (self.slots, key.shape[0], self.width, key.shape[2])
                self._buffers[layer] = (key.new_zeros(shape), value.new_zeros(shape))
            key_buffer, value_buffer = self._buffers[layer]
            key_buffer[row, :, :length] = key
            value_buffer[row, :, :length] = value
        self.lengths[row] = length

    def move(self, source: int, target: int) -> None:
        """Copy row ``source`` over row ``target`` (compaction when ``target`` leaves)."""
        length = self.lengths[source]
        for key_buffer, value_buffer in self._buffers.values():
            key_buffer[target, :, :length] = key_buffer[source, :, :length]
            value_buffer[target, :, :length] = value_buffer[source, :, :length]
        self.lengths[target] = length

    def begin_step(self) -> tuple[Tensor, Tensor]:
        """Prepare one decode step over the occupied rows: their positions (rows, 1) and the
        boolean mask (rows, longest + 1) of the keys each row may see (its own span + new token)."""
        rows, lengths = self.rows, self.lengths[: self.rows]
        self._span = max(lengths)
        self._widen(self._span + 1)
        self._columns[:rows] = torch.tensor(lengths, device=self.device)
        positions = self._columns[:rows, None].clone()  # (rows, 1)
        keys = torch.arange(self._span + 1, device=self.device)[None]  # (1, S)
        return positions, keys <= positions  # (rows, S)

    def update(self, layer: int, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Write ``key``/``value`` (rows, nkv, 1, hd) at each row's own length; keys (rows, nkv, S, hd)."""
        rows = self.rows
        key_buffer, value_buffer = self._buffers[layer]
        index, columns = self._row_index[:rows], self._columns[:rows]
        key_buffer[index, :, columns] = key[:, :, 0]  # (rows, nkv, hd)
        value_buffer[index, :, columns] = value[:, :, 0]
        span = self._span + 1
        return key_buffer[:rows, :, :span], value_buffer[:rows, :, :span]

    def advance(self, length: int) -> None:
        for row in range(self.rows):
            self.lengths[row] += length
        self._span = 0

    def _widen(self, needed: int) -> None:
        if needed > self.capacity:
            raise RuntimeError(f"slot KV cache full: {needed} positions > capacity {self.capacity}")
        if needed <= self.width:
            return
        width = min(self.capacity, max(needed, 2 * self.width))
        for layer, (key_buffer, value_buffer) in self._buffers.items():
            wider = []
            for buffer in (key_buffer, value_buffer):
                new = buffer.new_zeros(buffer.shape[0], buffer.shape[1], width, buffer.shape[3])
                new[:, :, : self.width] = buffer
                wider.append(new)
            self._buffers[layer] = (wider[0], wider[1])
        self.width = width


@dataclass
class _Request:
    """One request's decoding state."""

    id: int
    prompt: Tensor  # (T,) token ids on the model's device
    config: GenerationConfig
    stops: Tensor  # (k,) stop token ids
    stop_set: frozenset[int]
    generator: torch.Generator | None
    history: TokenHistory | None = None
    forbid: Tensor | None = None  # (V,) stop tokens, while fewer than min_new_tokens were generated
    constraint: Constraint | None = None  # the row's grammar state (structured output)
    generated: int = 0
    pending: int = 0  # the last chosen token, fed at the next decode step

    @property
    def plain_greedy(self) -> bool:
        """Greedy without penalties, logprobs or min_new_tokens: rows like this share one argmax."""
        config = self.config
        return (
            config.temperature == 0
            and not config.has_penalties
            and not config.logprobs
            and self.generated >= config.min_new_tokens
        )


class BatchDecoder:
    """Slot-based continuous batching over a decoder-only model.

    Args:
        model: a decoder-only causal LM (RoPE or learned positions; no sliding windows).
        max_batch: slots, i.e. the most requests decoded together.
        max_length: positions per slot (prompt + new tokens); default the model's ``max_positions``.
        token_budget: most tokens one step processes (one per decoding row plus the prompts
            admitted at that step); None: unbounded. A prompt longer than the budget is still
            admitted, alone, when it heads the queue.
    """

    def __init__(
        self,
        model: TransformerModel,
        max_batch: int = 8,
        max_length: int | None = None,
        token_budget: int | None = None,
    ) -> None:
        self.model, self.max_batch, self.token_budget = model, max_batch, token_budget
        self._queue: deque[_Request] = deque()
        self._slots: list[_Request] = []  # the request in each occupied cache row
        self._ids = count()
        self._finished_early: list[tuple[int, TokenStep]] = []
        config = model.config
        if config.is_encoder_decoder or config.head != "causal_lm":
            raise UnsupportedError(
                f"continuous batching needs a decoder-only causal LM; this model is {config.family!r} "
                f"with head {config.head!r} (use lmforge.generate.generate for encoder-decoder models)"
            )
        if config.positions == "relative" or any(w is not None for w in config.layer_windows()):
            raise UnsupportedError(
                "continuous batching does not support relative position buckets or sliding-window "
                f"(local) attention ({config.family!r}); use lmforge.generate.generate"
            )
        if not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ConfigError(f"max_batch must be an integer >= 1, got {self.max_batch!r}")
        self.max_length = config.max_positions if max_length is None else max_length
        if not isinstance(self.max_length, int) or self.max_length < 2:
            raise ConfigError(f"max_length must be an integer >= 2, got {self.max_length!r}")
        if self.token_budget is not None and (
            not isinstance(self.token_budget, int) or self.token_budget < 1
        ):
            raise ConfigError(f"token_budget must be an integer >= 1 or None, got {self.token_budget!r}")
        self.device = next(self.model.parameters()).device
        self.cache = SlotKVCache(self.max_batch, self.max_length, self.device)

    # -- requests -------------------------------------------------------------------------------

    def check(self, prompt_ids: Sequence[int], config: GenerationConfig) -> None:
        """Raise :class:`ConfigError` when this decoder cannot serve the request (safe from any thread)."""
        config.validate()
        if not prompt_ids:
            raise ConfigError("prompt_ids is empty: a request needs at least one prompt token")
        vocab = self.model.config.vocab_size
        if any(not isinstance(t, int) or not 0 <= t < vocab for t in prompt_ids):
            raise ConfigError(f"prompt_ids must be token ids in [0, {vocab}) (the model's vocab_size)")
        for name, value, plain in (
            ("n", config.n, 1),
            ("num_beams", config.num_beams, 1),
            ("prompt_lookup_num_tokens", config.prompt_lookup_num_tokens, 0),
        ):
            if value != plain:
                raise ConfigError(
                    f"{name}={value} is not supported by continuous batching (one row per request): "
                    f"submit n requests instead, or use lmforge.generate.generate"
                )
        check_generation(config, self.model.config, len(prompt_ids))
        if len(prompt_ids) + config.max_new_tokens > self.max_length:
            raise ConfigError(
                f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({config.max_new_tokens}) exceeds "
                f"the batch decoder's max_length ({self.max_length}); lower max_new_tokens"
            )

    def add(self, prompt_ids: Sequence[int], config: GenerationConfig | None = None) -> int:
        """Queue a request; its id. It joins the batch at a coming :meth:`step`."""
        config = config or GenerationConfig()
        self.check(prompt_ids, config)
        request_id = next(self._ids)
        if config.max_new_tokens == 0:  # nothing to decode: it finishes at the next step
            self._finished_early.append((request_id, TokenStep(tokens=[[]], finished=["length"])))
            return request_id
        generator = None
        if config.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(config.seed)
        stops = torch.tensor(config.stop_ids(self.model.config), dtype=torch.long, device=self.device)
        prompt = torch.tensor(list(prompt_ids), dtype=torch.long, device=self.device)
        self._queue.append(_Request(request_id, prompt, config, stops, frozenset(stops.tolist()), generator))
        return request_id

    def cancel(self, request_id: int) -> bool:
        """Drop a queued or running request, freeing its slot; False when it is not here (finished)."""
        for request in self._queue:
            if request.id == request_id:
                self._queue.remove(request)
                return True
        for row, request in enumerate(self._slots):
            if request.id == request_id:
                with torch.inference_mode():
                    self._release([row])
                return True
        return False

    @property
    def running(self) -> int:
        """Requests holding a slot."""
        return len(self._slots)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def has_work(self) -> bool:
        return bool(self._slots or self._queue or self._finished_early)

    # -- decoding -------------------------------------------------------------------------------

    def step(self) -> list[tuple[int, TokenStep]]:
        """Admit queued requests into free slots (prefill + their first token), then decode one token
        for every running request. Returns ``(request_id, one-row TokenStep)`` events in order; a
        request's last event has ``finished[0]`` set."""
        events, self._finished_early = self._finished_early, []
        with torch.inference_mode():
            self._admit(events)
            if self._slots:
                self._decode(events)
        return events

    def _admit(self, events: list[tuple[int, TokenStep]]) -> None:
        free = self.max_batch - len(self._slots)
        budget = None if self.token_budget is None else self.token_budget - len(self._slots)
        group: list[_Request] = []
        while self._queue and len(group) < free:
            size = len(self._queue[0].prompt)
            if budget is not None and group and size > budget:
                break
            group.append(self._queue.popleft())
            if budget is not None:
                budget -= size
        if group:
            self._prefill(group, events)

    def _prefill(self, group: list[_Request], events: list[tuple[int, TokenStep]]) -> None:
        """Run the group's prompts together (left-padded), store them in new rows, choose first tokens."""
        lengths = [len(r.prompt) for r in group]
        longest = max(lengths)
        ids = torch.zeros(len(group), longest, dtype=torch.long, device=self.device)
        mask = torch.zeros(len(group), longest, dtype=torch.bool, device=self.device)
        for i, request in enumerate(group):
            ids[i, longest - lengths[i] :] = request.prompt
            mask[i, longest - lengths[i] :] = True
        padded = min(lengths) != longest
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        prefill_cache = StaticKVCache(longest)
        model = self.model
        hidden = model.encode(
            ids, mask.long() if padded else None, position_ids=positions, cache=prefill_cache
        )
        assert model.lm_head is not None
        logits = model.lm_head(hidden[:, -1:])[:, -1]  # (G, V)
        first_row = len(self._slots)
        for i, request in enumerate(group):
            start = longest - lengths[i]
            kv = {
                layer: (k[i, :, start:], v[i, :, start:]) for layer, (k, v) in prefill_cache.self_kv.items()
            }
            self.cache.store(first_row + i, kv)
            self._start(request, logits.shape[-1])
            self._slots.append(request)
        self.cache.rows = len(self._slots)
        self._choose(list(range(first_row, len(self._slots))), logits, events)

    def _start(self, request: _Request, vocab: int) -> None:
        prompt = request.prompt[None]
        config = request.config
        request.history = TokenHistory(
            prompt, torch.ones_like(prompt, dtype=torch.bool), vocab, config.has_penalties
        )
        if config.constraint is not None:
            request.constraint = config.constraint.start(sorted(request.stop_set))
        if config.min_new_tokens:
            request.forbid = torch.zeros(vocab, dtype=torch.bool, device=self.device)
            request.forbid[request.stops] = True

    def _decode(self, events: list[tuple[int, TokenStep]]) -> None:
        tokens = torch.tensor([[r.pending] for r in self._slots], dtype=torch.long, device=self.device)
        positions, mask = self.cache.begin_step()
        hidden = self.model.encode(tokens, mask.long(), position_ids=positions, cache=self.cache)
        assert self.model.lm_head is not None
        logits = self.model.lm_head(hidden)[:, -1]  # (rows, V)
        self._choose(list(range(len(self._slots))), logits, events)

    def _choose(self, rows: list[int], logits: Tensor, events: list[tuple[int, TokenStep]]) -> None:
        """Pick each row's next token with its request's config; ``logits[i]`` belongs to ``rows[i]``."""
        chosen: dict[int, int] = {}
        logprobs: dict[int, tuple[float, list[tuple[int, float]]]] = {}
        constraints = [self._slots[row].constraint for row in rows]
        # Log-probabilities stay the model's (raw logits); tokens are chosen among those allowed.
        masked = mask_logits(logits, constraints) if any(c is not None for c in constraints) else logits
        greedy = [i for i, row in enumerate(rows) if self._slots[row].plain_greedy]
        if greedy:
            picks = masked[greedy].float().argmax(-1).tolist()
            chosen.update({rows[i]: token for i, token in zip(greedy, picks, strict=True)})
        for i, row in enumerate(rows):
            if row in chosen:
                continue
            request = self._slots[row]
            config = request.config
            assert request.history is not None
            forbid = request.forbid if request.generated < config.min_new_tokens else None
            picked = choose(masked[i : i + 1], request.history, config, request.generator, forbid)
            chosen[row] = int(picked)
            if config.logprobs:
                value, ids, values = token_logprobs(logits[i : i + 1], picked, config.top_logprobs)
                logprobs[row] = (float(value), alternatives(ids, values)[0] if ids is not None else [])
        done: list[int] = []
        for row in rows:
            request, token = self._slots[row], chosen[row]
            config = request.config
            step = TokenStep(tokens=[[]], finished=[None])
            if config.logprobs:
                step.logprobs = [[]]
                step.top_logprobs = [[]] if config.top_logprobs else None
            reason: FinishReason | None = None
            if token in request.stop_set:
                reason = "stop"
            else:
                step.tokens[0].append(token)
                if step.logprobs is not None:
                    step.logprobs[0].append(logprobs[row][0])
                if step.top_logprobs is not None:
                    step.top_logprobs[0].append(logprobs[row][1])
                request.generated += 1
                request.pending = token
                if request.history is not None and request.history.track:
                    request.history.append(torch.tensor([token], device=self.device))
                if request.constraint is not None:
                    request.constraint.advance(token)
                if request.constraint is not None and request.constraint.is_finished():
                    reason = "stop"  # the grammar takes no further token
                elif request.generated == config.max_new_tokens:
                    reason = "length"
            step.finished[0] = reason
            events.append((request.id, step))
            if reason is not None:
                done.append(row)
        self._release(done)

    def _release(self, rows: list[int]) -> None:
        """Free ``rows``; the last occupied row moves into each hole (descending order keeps indices valid)."""
        for row in sorted(rows, reverse=True):
            last = len(self._slots) - 1
            if row != last:
                self.cache.move(last, row)
                self._slots[row] = self._slots[last]
            self._slots.pop()
        self.cache.rows = len(self._slots)
