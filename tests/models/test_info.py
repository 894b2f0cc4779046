"""lmforge.models.info.model_info: what `lmforge info` prints, as a Python call."""

from __future__ import annotations

from pathlib import Path

import torch

from lmforge.models.info import model_info


def test_model_info_of_a_preset_is_built_on_meta_and_counts_gpt2_small() -> None:
    info = model_info("gpt2-124m")
    assert info["source"] == "preset"
    assert info["num_parameters"] == 124_439_808  # GPT-2 small, tied embeddings
    assert info["memory_bytes"] == 4 * info["num_parameters"]  # fp32


def test_model_info_of_a_checkpoint_reads_its_dtype(tmp_path: Path) -> None:
    import lmforge
    from lmforge.models import TransformerModel, preset_config

    model = TransformerModel(preset_config("gpt2-tiny", head="causal_lm", vocab_size=256)).to(torch.bfloat16)
    lmforge.save(model, tmp_path / "m")
    info = model_info(str(tmp_path / "m"))
    assert (info["family"], info["head"], info["vocab_size"]) == ("gpt2", "causal_lm", 256)
    assert info["num_parameters"] == model.num_parameters()
    assert info["memory_bytes"] == info["num_parameters"] * (2 if info["dtype"] == "bfloat16" else 4)
