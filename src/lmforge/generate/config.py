"""What a generation call may ask for, validated field by field before any decoding starts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Literal

from lmforge.config import ModelConfig
from lmforge.errors import ConfigError

if TYPE_CHECKING:
    from lmforge.generate.constrain import ConstraintSpec


@dataclass
class GenerationConfig:
    """How to pick tokens. ``temperature == 0`` means greedy decoding.

    Stop conditions: ``eos_token_id`` (one id or several; default the model's; none with
    ``ignore_eos``), extra ``stop_token_ids``, and ``stop`` strings (matched on decoded text by
    :mod:`lmforge.generate.text`). Beam search's ``early_stopping`` is transformers': True stops
    once every prompt has ``num_beams`` finished hypotheses, False when no running beam can still
    beat them at its current length, ``"never"`` when none could even at ``max_new_tokens``.
    Logit processors run in this order: repetition penalty (prompt and output tokens),
    frequency / presence penalties (output tokens, OpenAI's definition), ``no_repeat_ngram_size``,
    then temperature and the truncations top-k, top-p, min-p and typical-p.
    ``logprobs`` reports each chosen token's log-probability under the model (raw logits), with
    ``top_logprobs`` alternatives. ``prompt_lookup_num_tokens > 0`` turns on prompt-lookup
    speculative decoding (greedy only; the output is the greedy output). ``constraint`` (a
    :class:`lmforge.generate.constrain.Grammar`: JSON schema, regex, choice) masks every row's
    logits so that its text follows the grammar, before the penalties and truncations.
    """

    max_new_tokens: int = 32
    min_new_tokens: int = 0
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | Literal["never"] = False
    n: int = 1
    eos_token_id: int | list[int] | None = None
    ignore_eos: bool = False
    stop_token_ids: list[int] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    prompt_lookup_num_tokens: int = 0
    prompt_lookup_max_ngram: int = 3
    constraint: ConstraintSpec | None = None

    def __post_init__(self) -> None:
        if self.stop is None:  # a request's "stop": null
            self.stop = []
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first field with a bad value."""
        # 0 is allowed: no new token (the server's echo of a prompt's log-probabilities, max_tokens 0).
        _int("max_new_tokens", self.max_new_tokens, low=0)
        _int("min_new_tokens", self.min_new_tokens, low=0)
        if self.min_new_tokens > self.max_new_tokens:
            raise ConfigError(
                f"min_new_tokens ({self.min_new_tokens}) must be <= max_new_tokens ({self.max_new_tokens})"
            )
        _float("temperature", self.temperature, low=0.0)
        if self.top_k is not None:
            _int("top_k", self.top_k, low=1)
        for name in ("top_p", "typical_p"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and 0 < value <= 1):
                raise ConfigError(f"{name} must be in (0, 1], got {value!r}")
        if self.min_p is not None and not (_is_number(self.min_p) and 0 <= self.min_p <= 1):
            raise ConfigError(f"min_p must be in [0, 1], got {self.min_p!r}")
        _float("repetition_penalty", self.repetition_penalty, low=0.0, strict=True)
        for name in ("frequency_penalty", "presence_penalty"):
            value = getattr(self, name)
            if not (_is_number(value) and -2 <= value <= 2):
                raise ConfigError(f"{name} must be in [-2, 2] (OpenAI's range), got {value!r}")
        _int("no_repeat_ngram_size", self.no_repeat_ngram_size, low=0)
        _int("num_beams", self.num_beams, low=1)
        _float("length_penalty", self.length_penalty)
        _int("n", self.n, low=1)
        if self.num_beams > 1:
            if self.temperature > 0:
                raise ConfigError(
                    "num_beams > 1 is beam search: set temperature to 0 (beam sampling is not supported)"
                )
            if self.n > self.num_beams:
                raise ConfigError(
                    f"n ({self.n}) must be <= num_beams ({self.num_beams}): beam search returns its n best beams"
                )
        elif self.n > 1 and self.temperature == 0:
            raise ConfigError(f"n={self.n} greedy samples would all be identical: set temperature > 0")
        if self.eos_token_id is not None and not isinstance(self.eos_token_id, int):
            _ids("eos_token_id", self.eos_token_id)
            if not self.eos_token_id:
                raise ConfigError("eos_token_id must be an id or a non-empty list of ids, got []")
        elif self.eos_token_id is not None:
            _int("eos_token_id", self.eos_token_id, low=0)
        _ids("stop_token_ids", self.stop_token_ids)
        if not isinstance(self.stop, list | tuple) or not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError(f"stop must be a list of non-empty strings, got {self.stop!r}")
        if self.seed is not None:
            _int("seed", self.seed, low=0)
        for name in ("logprobs", "ignore_eos"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not (isinstance(self.early_stopping, bool) or self.early_stopping == "never"):
            raise ConfigError(f"early_stopping must be true, false or 'never', got {self.early_stopping!r}")
        _int("top_logprobs", self.top_logprobs, low=0, high=20)
        _int("prompt_lookup_num_tokens", self.prompt_lookup_num_tokens, low=0)
        _int("prompt_lookup_max_ngram", self.prompt_lookup_max_ngram, low=1)
        plain_greedy = self.temperature == 0 and self.num_beams == 1 and not self.has_penalties
        if self.prompt_lookup_num_tokens and not (plain_greedy and self.min_new_tokens == 0):
            raise ConfigError(
                "prompt_lookup_num_tokens (speculative decoding) needs plain greedy decoding: "
                "temperature 0, num_beams 1, no penalties and min_new_tokens 0"
            )
        if self.constraint is not None:
            if not callable(getattr(self.constraint, "start", None)):
                raise ConfigError(
                    f"constraint must be a lmforge.generate.constrain.Grammar (or have start()), "
                    f"got {self.constraint!r}"
                )
            for name, value, plain in (
                ("num_beams", self.num_beams, 1),
                ("prompt_lookup_num_tokens", self.prompt_lookup_num_tokens, 0),
                ("min_new_tokens", self.min_new_tokens, 0),
            ):
                if value != plain:
                    raise ConfigError(
                        f"{name}={value} cannot be combined with a constraint (structured output)"
                    )

    @property
    def has_penalties(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.frequency_penalty != 0.0
            or self.presence_penalty != 0.0
            or self.no_repeat_ngram_size > 0
        )

    def eos_ids(self) -> list[int]:
        if self.eos_token_id is None:
            return []
        return [self.eos_token_id] if isinstance(self.eos_token_id, int) else list(self.eos_token_id)

    def stop_ids(self, model_config: ModelConfig) -> list[int]:
        """Every token id that ends a row: ``eos_token_id`` (else the model's) and ``stop_token_ids``."""
        ids = self.eos_ids() or ([model_config.eos_token_id] if model_config.eos_token_id is not None else [])
        if self.ignore_eos:
            ids = []
        return list(dict.fromkeys(ids + list(self.stop_token_ids)))

    @classmethod
    def from_dict(cls, values: dict[str, object]) -> GenerationConfig:
        """Build from a mapping (a request, a YAML file), refusing unknown fields by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown generation field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)  # type: ignore[arg-type]


def check_generation(config: GenerationConfig, model_config: ModelConfig, prompt_length: int) -> None:
    """Refuse what the model cannot do: no LM head, stop ids outside its vocabulary, or prompt +
    new tokens beyond its positions."""
    if model_config.head not in ("causal_lm", "seq2seq_lm"):
        raise ConfigError(
            f"generation needs a causal or seq2seq LM head; this model's head is {model_config.head!r}"
        )
    for name, ids in (("eos_token_id", config.eos_ids()), ("stop_token_ids", config.stop_token_ids)):
        outside = [token for token in ids if token >= model_config.vocab_size]
        if outside:
            raise ConfigError(
                f"{name} {outside} outside the model's vocabulary (vocab_size {model_config.vocab_size})"
            )
    if model_config.is_encoder_decoder or model_config.positions == "relative":
        return
    tokens_used = prompt_length + config.max_new_tokens + config.prompt_lookup_num_tokens
    if tokens_used > model_config.max_positions:
        drafts = config.prompt_lookup_num_tokens
        raise ConfigError(
            f"prompt ({prompt_length} tokens) + max_new_tokens ({config.max_new_tokens})"
            + (f" + prompt_lookup_num_tokens ({drafts})" if drafts else "")
            + f" exceeds the model's max_positions ({model_config.max_positions}); "
            "shorten the prompt or lower max_new_tokens"
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _int(name: str, value: object, low: int | None = None, high: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be <= {high}, got {value}")


def _float(name: str, value: object, low: float | None = None, strict: bool = False) -> None:
    if not _is_number(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    assert isinstance(value, int | float)
    if low is not None and (value <= low if strict else value < low):
        raise ConfigError(f"{name} must be {'>' if strict else '>='} {low}, got {value}")


def _ids(name: str, values: object) -> None:
    if not isinstance(values, list | tuple):
        raise ConfigError(f"{name} must be a list of token ids, got {values!r}")
    for value in values:
        _int(name, value, low=0)
