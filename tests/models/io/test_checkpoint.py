"""Saving, loading and converting checkpoints; bad input gives LmforgeError naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import transformers
from parity_utils import padded_batch

import lmforge
from lmforge.errors import CheckpointError, ConfigError, LmforgeError, UnsupportedError
from lmforge.models import TransformerModel, preset_config


@pytest.fixture(scope="module")
def tiny_llama() -> TransformerModel:
    torch.manual_seed(0)
    config = preset_config(
        "llama-tiny", head="causal_lm", vocab_size=300, tie_embeddings=False, pad_token_id=0
    )
    return TransformerModel(config).eval()


def _logits(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def test_lmforge_round_trip(tmp_path: Path, tiny_llama: TransformerModel) -> None:
    lmforge.save(tiny_llama, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded = lmforge.load(tmp_path / "ckpt")
    assert loaded.config == tiny_llama.config
    ids, mask = padded_batch(300, [7, 4])
    torch.testing.assert_close(
        _logits(loaded.model, ids, mask), _logits(tiny_llama, ids, mask), rtol=0, atol=0
    )


@pytest.mark.parametrize("preset", ["gpt2-tiny", "llama-tiny"])
def test_export_to_transformers_round_trip(tmp_path: Path, preset: str) -> None:
    """lmforge -> HF dir -> transformers -> same logits; and HF dir -> lmforge.load -> same logits."""
    torch.manual_seed(1)
    config = preset_config(preset, head="causal_lm", vocab_size=300, pad_token_id=0)
    model = TransformerModel(config).eval()
    lmforge.save_hf(model, tmp_path / "hf")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids, mask = padded_batch(300, [9, 6, 3])
    expected = _logits(model, ids, mask)
    assert (_logits(hf_model, ids, mask) - expected)[mask.bool()].abs().max() <= 1e-4
    reloaded = lmforge.load(tmp_path / "hf")
    assert (_logits(reloaded.model, ids, mask) - expected)[mask.bool()].abs().max() <= 1e-5


def test_load_with_new_head_keeps_body(tmp_path: Path, tiny_llama: TransformerModel) -> None:
    lmforge.save(tiny_llama, tmp_path / "ckpt")
    loaded = lmforge.load(tmp_path / "ckpt", head="sequence_classification", num_labels=4)
    assert loaded.config.head == "sequence_classification"
    torch.testing.assert_close(loaded.model.embeddings.token.weight, tiny_llama.embeddings.token.weight)
    ids, mask = padded_batch(300, [5, 3])
    assert loaded.model(ids, mask).logits.shape == (2, 4)


def test_corrupt_and_truncated_safetensors(tmp_path: Path, tiny_llama: TransformerModel) -> None:
    lmforge.save(tiny_llama, tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        lmforge.load(tmp_path / "ckpt")
    weights.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        lmforge.load(tmp_path / "ckpt")


def test_shape_mismatch_names_weight(tmp_path: Path, tiny_llama: TransformerModel) -> None:
    lmforge.save(tiny_llama, tmp_path / "ckpt")
    config_file = tmp_path / "ckpt" / "config.json"
    payload = json.loads(config_file.read_text())
    payload["lmforge"]["intermediate_size"] = 64
    config_file.write_text(json.dumps(payload))
    with pytest.raises(CheckpointError, match=r"mlp\..*shape"):
        lmforge.load(tmp_path / "ckpt")


def test_bad_config_field(tmp_path: Path, tiny_llama: TransformerModel) -> None:
    lmforge.save(tiny_llama, tmp_path / "ckpt")
    config_file = tmp_path / "ckpt" / "config.json"
    payload = json.loads(config_file.read_text())
    payload["lmforge"]["norm"] = "batchnorm"
    config_file.write_text(json.dumps(payload))
    with pytest.raises(ConfigError, match=r"config.json.*'norm'"):
        lmforge.load(tmp_path / "ckpt")
    config_file.write_text("{ not json")
    with pytest.raises(CheckpointError, match="invalid JSON at line 1"):
        lmforge.load(tmp_path / "ckpt")


def test_unknown_model_and_unsupported_type(tmp_path: Path) -> None:
    with pytest.raises(LmforgeError, match="not-a-model"):
        lmforge.load("not-a-model")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    with pytest.raises(UnsupportedError, match="mamba"):
        lmforge.load(tmp_path)


def test_pytorch_bin_loaded_with_weights_only(tmp_path: Path) -> None:
    torch.manual_seed(2)
    config = preset_config("gpt2-tiny", head="causal_lm", vocab_size=300)
    model = TransformerModel(config).eval()
    lmforge.save_hf(model, tmp_path)
    weights = tmp_path / "model.safetensors"
    from safetensors.torch import load_file

    torch.save(load_file(str(weights)), tmp_path / "pytorch_model.bin")
    weights.unlink()
    loaded = lmforge.load(tmp_path)
    ids, mask = padded_batch(300, [4, 4])
    torch.testing.assert_close(_logits(loaded.model, ids, mask), _logits(model, ids, mask))
    # A pickle with arbitrary objects is refused, never executed.
    torch.save({"evil": object()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        lmforge.load(tmp_path)


def test_load_with_other_label_count_reinitialises_classifier(tmp_path: Path) -> None:
    torch.manual_seed(3)
    config = preset_config("gpt2-tiny", head="sequence_classification", vocab_size=300, num_labels=2)
    lmforge.save(TransformerModel(config), tmp_path / "ckpt")
    loaded = lmforge.load(tmp_path / "ckpt", num_labels=5)
    assert loaded.model.classifier is not None
    assert loaded.model.classifier.linear.weight.shape == (5, 128)


def test_saved_files_are_readable_by_others(tmp_path: Path, tiny_llama: TransformerModel) -> None:
    lmforge.save(tiny_llama, tmp_path / "ckpt")
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "ckpt" / name).stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_older_checkpoint_takes_its_family_defaults(tmp_path: Path) -> None:
    """A T5 checkpoint written before ``scale_tied_lm_head`` existed still scales its tied head."""
    torch.manual_seed(4)
    model = TransformerModel(preset_config("t5-tiny", vocab_size=300)).eval()
    lmforge.save(model, tmp_path / "ckpt")
    config_file = tmp_path / "ckpt" / "config.json"
    payload = json.loads(config_file.read_text())
    del payload["lmforge"]["scale_tied_lm_head"]
    config_file.write_text(json.dumps(payload))
    loaded = lmforge.load(tmp_path / "ckpt")
    assert loaded.config == model.config and loaded.model.lm_head is not None
    assert loaded.model.lm_head.scale == 64**-0.5  # hidden_size ** -0.5


@pytest.mark.parametrize("preset", ["bert-tiny", "roberta-tiny", "ernie-tiny"])
def test_masked_lm_loads_as_classifier_with_pooler(tmp_path: Path, preset: str) -> None:
    """Each family's transformers classifier has a pooler (RoBERTa's head dense): a new
    sequence-classification head gets one, whatever the checkpoint's head had."""
    torch.manual_seed(5)
    config = preset_config(preset, head="masked_lm", vocab_size=300, max_positions=64, pooler=False)
    model = TransformerModel(config).eval()
    lmforge.save_hf(model, tmp_path / "mlm")
    loaded = lmforge.load(tmp_path / "mlm", head="sequence_classification", num_labels=3)
    assert loaded.config.pooler
    torch.testing.assert_close(loaded.model.embeddings.token.weight, model.embeddings.token.weight)
    ids, mask = padded_batch(300, [6, 3], pad_id=config.pad_token_id or 0)
    assert loaded.model(ids, mask).logits.shape == (2, 3)
