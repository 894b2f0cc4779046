"""ERNIE beyond the shared encoder parity tests: transformers directories both ways, task types
that matter, new heads on a base checkpoint, and layouts BERT cannot hold."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from parity_utils import hf_twin, max_diff_on_real_tokens, padded_batch

import lmforge
from lmforge.errors import UnsupportedError
from lmforge.models import TransformerModel, family, preset_config

TOLERANCE = 1e-4


def _inputs() -> dict[str, torch.Tensor]:
    ids, mask = padded_batch(300, [11, 7, 4])
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "task_type_ids": torch.tensor([[1], [2], [0]]).expand_as(ids),
    }


def test_transformers_directories_both_ways(tmp_path: Path) -> None:
    """ErnieForMaskedLM.save_pretrained -> lmforge.load -> save_hf -> from_pretrained, same logits."""
    config = preset_config("ernie-tiny", head="masked_lm", vocab_size=300, max_positions=64, pooler=False)
    hf_model, _ = hf_twin(config, seed=3)
    hf_model.save_pretrained(tmp_path / "theirs")
    loaded = lmforge.load(tmp_path / "theirs")
    assert (loaded.config.family, loaded.config.head, loaded.config.task_type_vocab_size) == (
        "ernie",
        "masked_lm",
        3,
    )
    lmforge.save_hf(loaded.model, tmp_path / "ours")
    again = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "ours").eval()
    assert type(again).__name__ == "ErnieForMaskedLM" and again.config.use_task_id
    inputs = _inputs()
    with torch.no_grad():
        expected = hf_model(**inputs).logits
        for actual in (loaded.model(**inputs).logits, again(**inputs).logits):
            assert max_diff_on_real_tokens(expected, actual, inputs["attention_mask"]) <= TOLERANCE


def test_task_types_change_the_output() -> None:
    """A test that passes with task types ignored would be vacuous: they must move the output."""
    _, ours = hf_twin(preset_config("ernie-tiny", vocab_size=300, max_positions=64, pooler=True))
    inputs = _inputs()
    with torch.no_grad():
        given = ours(**inputs).last_hidden_state
        default = ours(inputs["input_ids"], inputs["attention_mask"]).last_hidden_state
    assert float((given[2] - default[2]).abs().max()) == 0.0  # task 0 is the default
    assert float((given[0] - default[0]).abs().max()) > 1e-3


def test_base_checkpoint_fine_tunes_with_pooler(tmp_path: Path) -> None:
    """Loading a base ERNIE dir as a sequence classifier adds the pooler transformers' class has
    and keeps the body's weights."""
    config = preset_config("ernie-tiny", vocab_size=300, max_positions=64, pooler=True)
    hf_model, _ = hf_twin(config, seed=4)
    hf_model.save_pretrained(tmp_path / "base")
    loaded = lmforge.load(tmp_path / "base", head="sequence_classification", num_labels=4)
    assert loaded.config.pooler and loaded.model.pooler is not None
    torch.testing.assert_close(loaded.model.pooler.dense.weight, hf_model.pooler.dense.weight)
    assert loaded.model(**_inputs()).logits.shape == (3, 4)


def test_bert_refuses_task_types() -> None:
    config = preset_config("bert-tiny", task_type_vocab_size=3)
    assert TransformerModel(config).embeddings.task_type is not None  # the core supports them ...
    with pytest.raises(UnsupportedError, match="family 'ernie'"):  # ... BertModel does not
        family("bert").hf_config(config)
