"""ERNIE 1.0 / 3.0 encoders as transformers defines them: BERT plus task-type embeddings.

``ErnieModel`` is BERT's layout (post-norm blocks, learned positions, token types, the pooler and
the MLM / NSP heads under ``cls.``) under the attribute ``ernie``; with ``use_task_id`` its
embeddings also add ``task_type_embeddings`` (``task_type_vocab_size`` rows, task 0 by default),
which lmforge has as ``ModelConfig.task_type_vocab_size``. ERNIE's pretraining idea, knowledge
masking, lives with the data (:mod:`lmforge.data.knowledge_masking`).
"""

from __future__ import annotations

from typing import Any

from lmforge.config import Head, ModelConfig
from lmforge.models.families import bert
from lmforge.models.io.convert import Rule, rule

_ERNIE: dict[str, Any] = {**bert.BERT_PRESETS["bert-base"], "family": "ernie", "vocab_size": 18000}
_TASK_TYPES = 3  # ErnieConfig's default task_type_vocab_size


def _shape(hidden: int, layers: int, heads: int, tasks: int = 0) -> dict[str, int]:
    sizes = {"hidden_size": hidden, "num_layers": layers, "num_heads": heads, "intermediate_size": 4 * hidden}
    return {**sizes, "task_type_vocab_size": tasks}


PRESETS: dict[str, dict[str, Any]] = {
    "ernie-tiny": {**_ERNIE, **_shape(128, 2, 2, _TASK_TYPES)},
    # nghuyong/ernie-1.0-base-zh and ernie-3.0-base-zh, as transformers ports them.
    "ernie-1.0-base-zh": {**_ERNIE, **_shape(768, 12, 12), "activation": "relu", "max_positions": 513},
    "ernie-3.0-base-zh": {
        **_ERNIE,
        **_shape(768, 12, 12, _TASK_TYPES),
        "vocab_size": 40000,
        "max_positions": 2048,
        "type_vocab_size": 4,
    },
}

ARCHITECTURES = {head: name.replace("Bert", "Ernie") for head, name in bert.BERT_ARCHITECTURES.items()}


def config_from_hf(hf: dict[str, Any], head: Head | None = None) -> ModelConfig:
    tasks = int(hf.get("task_type_vocab_size", _TASK_TYPES)) if hf.get("use_task_id") else 0
    base = {**_ERNIE, "task_type_vocab_size": tasks}
    return bert.encoder_config_from_hf(hf, head, base, ARCHITECTURES)


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    tasks = config.task_type_vocab_size
    hf = bert.config_to_hf(config.replace(task_type_vocab_size=0))  # BERT's fields, which refuse task types
    return {**hf, "use_task_id": bool(tasks), "task_type_vocab_size": tasks or _TASK_TYPES}


def hf_rules(config: ModelConfig) -> list[Rule]:
    rules = bert.bert_rules(config)
    if config.task_type_vocab_size:
        rules.append(rule("embeddings.task_type.weight", "embeddings.task_type_embeddings.weight"))
    return rules


SPEC = bert.encoder_spec("ernie", PRESETS, config_from_hf, config_to_hf, hf_rules, ARCHITECTURES)
