"""What a model family provides: presets, config translation and weight-name maps.

Family files (``gpt2.py``, ``llama.py``, ``bert.py``, ``t5.py``) each build one or more
:class:`FamilySpec`; :mod:`lmforge.models.families.registry` collects them. What two families
share lives here (transformers config fields, the generic classification heads' weight names) or,
for modelling, in the core (:mod:`lmforge.models.blocks` and its parts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from lmforge.config import Head, ModelConfig
from lmforge.errors import ConfigError
from lmforge.models.io.convert import Rule, expand, rule


@dataclass(frozen=True)
class FamilySpec:
    """Everything lmforge needs to build, import and export one model family.

    Built positionally in the order below (``FamilySpec("gpt2", ARCHITECTURES, PRESETS, ...)``).

    Attributes:
        name: the ``ModelConfig.family`` value; also the transformers ``model_type`` unless
            ``hf_model_type`` says otherwise.
        hf_architectures: transformers class name for each supported head.
        presets: named configs (keyword arguments of :class:`ModelConfig`).
        config_from_hf: transformers config dict + head -> ModelConfig.
        config_to_hf: ModelConfig -> transformers config dict (without ``architectures`` and
            the label maps, which :meth:`hf_config` adds).
        hf_rules: ModelConfig -> weight rules with ``{i}`` per layer, foreign names relative to
            the base model; head rules are prefixed with ``"/"`` to mark them absolute.
        hf_base: attribute holding the base model inside a transformers head model (``"bert"``,
            ``"transformer"``); ``""`` when head models hold their layers directly (T5).
        hf_head_bases: heads whose class names the base model otherwise (Llama's QA model).
        hf_model_type: ``model_type`` in a transformers ``config.json``; ``""``: ``name``.
        gguf_rules: like ``hf_rules`` for llama.cpp tensor names (families GGUF files hold).
        init_parameters: the family's own initialisation of a fresh model (model, config), or
            None for the core's GPT-2 / BERT style N(0, 0.02).
        defaults: config fields the family implies when a saved config lacks them (written by
            an lmforge from before the field existed, when the family hard-wired its value).
        pooled_heads: heads whose transformers class has the pooler (dense + tanh), so that a
            checkpoint loaded with one of them as a new head gets a pooler.
    """

    name: str
    hf_architectures: dict[str, str]
    presets: dict[str, dict[str, Any]]
    config_from_hf: Callable[[dict[str, Any], Head | None], ModelConfig]
    config_to_hf: Callable[[ModelConfig], dict[str, Any]]
    hf_rules: Callable[[ModelConfig], list[Rule]]
    hf_base: str = ""
    hf_head_bases: dict[str, str] = field(default_factory=dict)
    hf_model_type: str = ""
    gguf_rules: Callable[[ModelConfig], list[Rule]] | None = None
    init_parameters: Callable[[nn.Module, ModelConfig], None] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    pooled_heads: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.hf_model_type:
            object.__setattr__(self, "hf_model_type", self.name)

    def hf_prefix(self, head: str) -> str:
        """Key prefix of the base model's weights in the transformers class of ``head``."""
        base = self.hf_head_bases.get(head, self.hf_base)
        return f"{base}." if base and head != "base" else ""

    def preset(self, name: str, **overrides: Any) -> ModelConfig:
        if name not in self.presets:
            raise ConfigError(f"unknown {self.name} preset {name!r}; known: {', '.join(self.presets)}")
        return ModelConfig(**{**self.presets[name], **overrides})

    def hf_weight_rules(self, config: ModelConfig) -> list[Rule]:
        """Rules with full transformers key names for ``config.head``."""
        if config.head not in self.hf_architectures:
            raise ConfigError(f"{self.name} has no transformers class for head {config.head!r}")
        prefix = self.hf_prefix(config.head)
        layers = config.num_layer_groups or config.num_layers
        rules = []
        for relative in expand(self.hf_rules(config), layers):
            name = relative.theirs
            theirs = name[1:] if name.startswith("/") else prefix + name
            rules.append(Rule(relative.ours, theirs, relative.to_ours, relative.to_theirs))
        return rules

    def hf_config(self, config: ModelConfig) -> dict[str, Any]:
        """A complete transformers ``config.json`` dict for ``config``.

        ``config_to_hf`` may name the architecture itself, for a layout no head maps to (T5's
        encoder alone, ``T5EncoderModel``).
        """
        return {
            "architectures": [self.hf_architectures[config.head]],
            **labels_to_hf(config),
            **self.config_to_hf(config),
            "model_type": self.hf_model_type,
        }


def head_from_architectures(architectures: list[str] | None, mapping: dict[str, str], default: Head) -> Head:
    """The lmforge head for the first known transformers architecture name."""
    reverse = {arch: head for head, arch in mapping.items()}
    for arch in architectures or []:
        if arch in reverse:
            return reverse[arch]  # type: ignore[return-value]
    return default


def common_hf_fields(
    hf: dict[str, Any], head: Head, defaults: dict[str, Any] | None = None
) -> dict[str, Any]:
    """ModelConfig fields every family reads the same way: special token ids, head, label count."""
    defaults = defaults or {}
    fields: dict[str, Any] = {
        name: hf.get(name, defaults.get(name)) for name in ("bos_token_id", "eos_token_id", "pad_token_id")
    }
    return {**fields, "head": head, "num_labels": num_labels(hf)}


def num_labels(hf: dict[str, Any]) -> int:
    if "id2label" in hf and hf["id2label"]:
        return len(hf["id2label"])
    return int(hf.get("num_labels", 2))


def labels_to_hf(config: ModelConfig) -> dict[str, Any]:
    labels = config.extra.get("id2label") or {str(i): f"LABEL_{i}" for i in range(config.num_labels)}
    return {"id2label": labels, "label2id": {v: int(k) for k, v in labels.items()}}


def generic_head_rules(config: ModelConfig, token_classifier: str) -> list[Rule]:
    """Weights of transformers' generic classification / QA heads, which GPT-2 and Llama share.

    ``token_classifier`` names the token-classification layer (GPT-2 ``classifier``, Llama
    ``score``); sequence classification is ``score`` and QA ``qa_outputs`` in both.
    """
    name = {
        "sequence_classification": "score",
        "token_classification": token_classifier,
        "question_answering": "qa_outputs",
    }.get(config.head)
    if name is None:
        return []
    rules = [rule("classifier.linear.weight", f"/{name}.weight")]
    if config.head != "sequence_classification" or config.classifier_bias:
        rules.append(rule("classifier.linear.bias", f"/{name}.bias"))
    return rules


def generic_classifier_dropout(hf: dict[str, Any], head: Head) -> float:
    """Dropout before transformers' generic heads (GPT-2, Llama): none before sequence
    classification or QA; token classification takes ``classifier_dropout``, else
    ``hidden_dropout``, else 0.1 (``GenericForTokenClassification``)."""
    if head != "token_classification":
        return 0.0
    for key in ("classifier_dropout", "hidden_dropout"):
        if hf.get(key) is not None:
            return float(hf[key])
    return 0.1


def site_rate(rate: float, dropout: float) -> float | None:
    """A site's dropout rate as a config field: None (follow ``dropout``) when it is the same, so
    an imported config equals the one it was exported from."""
    return None if rate == dropout else float(rate)


def decoder_fields(
    hf: dict[str, Any],
    head: Head | None,
    architectures: dict[str, str],
    dropout: float,
    attention: float,
    embedding: float | None = None,
) -> dict[str, Any]:
    """The ModelConfig fields transformers' decoders (GPT-2, GPT-Neo, Llama) read alike.

    The head (``head``, else the one of the config's ``architectures``, else ``causal_lm``), its
    label count, special token ids, and dropout rates per site: ``dropout`` on the residual
    branches, ``attention`` on the probabilities, ``embedding`` after the embeddings (default
    ``dropout``) and the generic heads' classifier dropout.
    """
    head = head or head_from_architectures(hf.get("architectures"), architectures, "causal_lm")
    return {
        "dropout": dropout,
        "attention_dropout": site_rate(attention, dropout),
        "embedding_dropout": site_rate(dropout if embedding is None else embedding, dropout),
        "classifier_dropout": site_rate(generic_classifier_dropout(hf, head), dropout),
        **common_hf_fields(hf, head),
    }
