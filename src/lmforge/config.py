"""Typed configuration dataclasses: the single source of truth for every model lmforge builds.

One :class:`ModelConfig` describes every family (GPT-2, GPT-Neo, Llama, BERT, RoBERTa, ALBERT,
ERNIE, T5) through flags: norm type and placement, MLP type, position scheme, attention shape, embedding layout and
the task head. Family modules only provide presets and weight-name maps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from lmforge.errors import ConfigError

Family = Literal["gpt2", "gpt_neo", "llama", "bert", "roberta", "albert", "ernie", "t5"]
Head = Literal[
    "base",
    "causal_lm",
    "masked_lm",
    "pretraining",
    "sequence_classification",
    "token_classification",
    "question_answering",
    "seq2seq_lm",
]
Activation = Literal["gelu", "gelu_tanh", "relu", "silu"]
Norm = Literal["layernorm", "rmsnorm"]
Positions = Literal["learned", "rope", "relative", "none"]
AttentionKind = Literal["global", "local"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "family": get_args(Family),
    "head": get_args(Head),
    "activation": get_args(Activation),
    "norm": get_args(Norm),
    "positions": get_args(Positions),
    "norm_position": ("pre", "post"),
    "pooling": ("cls", "last"),
}


@dataclass
class ModelConfig:
    """Shape and behaviour of one Transformer model.

    Attributes mirror the architecture choices the core supports. ``head_dim`` defaults to
    ``hidden_size // num_heads``; ``num_kv_heads`` defaults to ``num_heads`` (plain MHA); fewer KV
    heads give GQA, one gives MQA.
    """

    family: Family
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    head: Head = "base"
    num_kv_heads: int | None = None
    head_dim: int | None = None
    max_positions: int = 1024
    # Blocks
    norm: Norm = "layernorm"
    norm_eps: float = 1e-5
    norm_position: Literal["pre", "post"] = "pre"
    final_norm: bool = True
    activation: Activation = "gelu"
    gated_mlp: bool = False
    attention_bias: bool = True
    attention_out_bias: bool | None = None
    mlp_bias: bool = True
    attention_scale: float | None = None  # None: 1/sqrt(head_dim); T5 uses 1.0
    causal: bool = True
    # Sliding-window attention: a "local" layer's query sees itself and the ``local_window - 1``
    # keys before it (GPT-Neo). ``attention_layers`` is each layer's kind, or a pattern repeated
    # over the depth (GPT-Neo: ["global", "local"]); None: all global, or all local when
    # ``local_window`` is set (Mistral).
    local_window: int | None = None
    attention_layers: list[AttentionKind] | None = None
    # Positions
    positions: Positions = "learned"
    position_offset: int = 0  # RoBERTa: padding_idx + 1
    positions_from_padding: bool = False  # RoBERTa counts positions over non-pad tokens only
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    relative_buckets: int = 32
    relative_max_distance: int = 128
    # Embeddings
    embedding_size: int | None = None  # ALBERT factorized embeddings; None: hidden_size
    type_vocab_size: int = 0
    task_type_vocab_size: int = 0  # ERNIE's task-type embeddings (use_task_id); 0: none
    embedding_norm: bool = False
    tie_embeddings: bool = True
    num_layer_groups: int | None = None  # ALBERT cross-layer sharing; None: no sharing
    # Structured pruning (lmforge prune) leaves layers of their own widths: per layer of the main
    # stack, its attention heads (MHA) and its MLP width; None: num_heads / intermediate_size.
    layer_num_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None
    # Encoder-decoder (T5)
    num_decoder_layers: int | None = None
    decoder_start_token_id: int | None = None
    # Special tokens
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    # Heads
    num_labels: int = 2
    pooling: Literal["cls", "last"] = "cls"
    pooler: bool = False  # dense + tanh over the pooled token (BERT pooler / RoBERTa head)
    classifier_bias: bool = True  # bias of the sequence-classification layer (decoders: none)
    mlm_transform: bool = True  # dense + act + norm before the MLM decoder (BERT style)
    # T5 scales the hidden states by hidden_size ** -0.5 before an LM decoder tied to the embedding.
    scale_tied_lm_head: bool = False
    # Dropout: rates per site (None: ``dropout``) and which family-specific sites exist.
    dropout: float = 0.0  # residual branches: GPT-2 resid_pdrop, BERT hidden_dropout_prob, T5 dropout_rate
    attention_dropout: float | None = None  # attention probabilities (GPT-2 attn_pdrop, BERT attention_probs)
    embedding_dropout: float | None = None  # after the embeddings (GPT-2 embd_pdrop)
    classifier_dropout: float | None = None  # before the classification / NSP-SOP layer (never before QA)
    mlp_dropout: bool = False  # also inside the MLP, after the activation (T5)
    mlp_output_dropout: bool = True  # on the MLP's residual branch (ALBERT has none)
    final_norm_dropout: bool = False  # after each stack's final norm (T5)
    pooler_dropout: bool = False  # also before the pooler's dense (RoBERTa's classification head)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise ConfigError(f"config field {name!r}: {value!r} is not one of {', '.join(choices)}")
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"config field {name!r} must be a positive integer, got {value!r}")
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ConfigError(
                    f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}; "
                    "set head_dim explicitly"
                )
            self.head_dim = self.hidden_size // self.num_heads
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}"
            )
        if self.embedding_size is None:
            self.embedding_size = self.hidden_size
        if self.attention_out_bias is None:
            self.attention_out_bias = self.attention_bias
        for name in ("dropout", "attention_dropout", "embedding_dropout", "classifier_dropout"):
            rate = getattr(self, name)
            if rate is not None and not (isinstance(rate, int | float) and 0 <= rate < 1):
                raise ConfigError(f"config field {name!r} must be a probability in [0, 1), got {rate!r}")
        self._check_attention_layers()
        self._check_layer_widths()
        if self.num_layer_groups is not None and self.num_layers % self.num_layer_groups:
            raise ConfigError(
                f"num_layers {self.num_layers} is not a multiple of num_layer_groups {self.num_layer_groups}"
            )

    def _check_attention_layers(self) -> None:
        window, kinds = self.local_window, self.attention_layers
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window <= 0):
            raise ConfigError(f"config field 'local_window' must be a positive integer, got {window!r}")
        if window is not None and window > self.max_positions:
            raise ConfigError(
                f"config field 'local_window' ({window}) is larger than the context "
                f"(max_positions {self.max_positions}); use a window of at most {self.max_positions}"
            )
        if window is not None and not self.causal:
            raise ConfigError(
                "config field 'local_window': sliding-window attention is causal only (causal=True)"
            )
        if kinds is None:
            return
        kinds = list(kinds)
        if not kinds or self.num_layers % len(kinds):
            raise ConfigError(
                f"config field 'attention_layers' has {len(kinds)} entries, which does not divide "
                f"{self.num_layers} layers; give one kind per layer or a pattern that repeats"
            )
        unknown = sorted({str(kind) for kind in kinds} - set(get_args(AttentionKind)))
        if unknown:
            raise ConfigError(f"config field 'attention_layers': {', '.join(unknown)} not global or local")
        if "local" in kinds and window is None:
            raise ConfigError(
                "config field 'attention_layers' has local layers but 'local_window' is not set"
            )
        self.attention_layers = kinds

    def _check_layer_widths(self) -> None:
        for name in ("layer_num_heads", "layer_intermediate_sizes"):
            widths = getattr(self, name)
            if widths is None:
                continue
            widths = list(widths)
            if len(widths) != self.num_layers or not all(
                isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths
            ):
                raise ConfigError(
                    f"config field {name!r} must hold {self.num_layers} positive integers (one per layer), "
                    f"got {widths!r}"
                )
            if self.num_layer_groups is not None or self.num_decoder_layers is not None:
                raise ConfigError(
                    f"config field {name!r}: per-layer widths need one stack of distinct layers "
                    "(no num_layer_groups, no decoder stack)"
                )
            setattr(self, name, widths)
        if self.layer_num_heads is not None and self.num_kv_heads != self.num_heads:
            raise ConfigError(
                "config field 'layer_num_heads' needs multi-head attention (num_kv_heads = num_heads)"
            )

    def layer_config(self, index: int) -> ModelConfig:
        """The config of layer ``index`` of the main stack: this one, with that layer's heads and
        MLP width when the model was pruned to per-layer widths."""
        if self.layer_num_heads is None and self.layer_intermediate_sizes is None:
            return self
        heads = self.num_heads if self.layer_num_heads is None else self.layer_num_heads[index]
        kv_heads = self.num_kv_heads if self.layer_num_heads is None else heads  # per-layer heads are MHA
        inner = (
            self.intermediate_size
            if self.layer_intermediate_sizes is None
            else self.layer_intermediate_sizes[index]
        )
        return self.replace(
            num_heads=heads, num_kv_heads=kv_heads, intermediate_size=inner,
            layer_num_heads=None, layer_intermediate_sizes=None,
        )  # fmt: skip

    def layer_windows(self) -> list[int | None]:
        """Per layer, the sliding window of its self-attention, or None for full (global) attention."""
        if self.attention_layers is None:
            return [self.local_window] * self.num_layers
        pattern = self.attention_layers
        return [
            self.local_window if pattern[i % len(pattern)] == "local" else None
            for i in range(self.num_layers)
        ]

    @property
    def is_encoder_decoder(self) -> bool:
        return self.num_decoder_layers is not None

    @property
    def attention_dropout_rate(self) -> float:
        """Dropout on attention probabilities: ``attention_dropout``, else ``dropout``."""
        return self.dropout if self.attention_dropout is None else self.attention_dropout

    @property
    def embedding_dropout_rate(self) -> float:
        """Dropout after the embeddings: ``embedding_dropout``, else ``dropout``."""
        return self.dropout if self.embedding_dropout is None else self.embedding_dropout

    @property
    def classifier_dropout_rate(self) -> float:
        """Dropout before a classification layer: ``classifier_dropout``, else ``dropout``."""
        return self.dropout if self.classifier_dropout is None else self.classifier_dropout

    def replace(self, **changes: Any) -> ModelConfig:
        """Return a copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> ModelConfig:
        """Build a config from a dict, naming ``source`` and the field in any error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown config field(s) {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:  # missing required fields
            raise ConfigError(f"{source}: {exc}") from None
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
