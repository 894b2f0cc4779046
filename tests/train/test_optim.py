"""Optimizer groups, schedules, accumulation, activation checkpointing, bf16 autocast and L1."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from pretrain_utils import OBJECTIVES, QUIET, memory_data, train_losses

from lmforge.models import TransformerModel, preset_config
from lmforge.train import OptimConfig, load_config, pretrain
from lmforge.train.optim import build_optimizer, learning_rate, parameter_groups


def test_no_decay_on_biases_norms_and_embeddings() -> None:
    model = TransformerModel(preset_config("bert-tiny", head="masked_lm", vocab_size=50, num_layers=1))
    decay, no_decay = parameter_groups(model, OptimConfig(weight_decay=0.1))
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decayed and all(
        n.endswith("weight") and "norm" not in n and "embeddings" not in n for n in decayed
    )
    assert "stack.layers.0.attn.q_proj.weight" in decayed
    assert {"embeddings.token.weight", "embeddings.norm.weight", "stack.layers.0.attn.q_proj.bias"} <= {
        names[id(p)] for p in no_decay["params"]
    }
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))  # tied once
    groups = parameter_groups(model, OptimConfig(decay_embeddings=True))
    assert "embeddings.token.weight" in {names[id(p)] for p in groups[0]["params"]}
    assert isinstance(build_optimizer(model, OptimConfig(name="sgd")), torch.optim.SGD)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_warmup_then_schedule(schedule: str) -> None:
    config = OptimConfig(lr=1.0, warmup_steps=10, schedule=schedule, min_lr_ratio=0.1)
    lrs = [learning_rate(step, 110, config) for step in range(111)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warmup, never 0
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))
    if schedule == "constant":
        assert set(lrs[10:]) == {1.0}
    else:
        assert lrs[10] == pytest.approx(1.0) and lrs[110] == pytest.approx(0.1)
        assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
        middle = 0.1 + 0.9 * (0.5 if schedule == "linear" else 0.5 * (1 + math.cos(math.pi / 2)))
        assert lrs[60] == pytest.approx(middle)


def _training_batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The rows of every micro-batch the loss sees with gradients on (validation runs without)."""
    from lmforge.tasks.pretraining import PretrainingLoss

    sizes: list[int] = []
    forward = PretrainingLoss.forward

    def recording(self: PretrainingLoss, batch: dict[str, torch.Tensor]) -> Any:
        if torch.is_grad_enabled():
            sizes.append(int(batch["input_ids"].shape[0]))
        return forward(self, batch)

    monkeypatch.setattr(PretrainingLoss, "forward", recording)
    return sizes


def test_accumulation_matches_one_big_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = [*OBJECTIVES["bert_nsp_wwm"], *QUIET, "data.batch_size=8", "max_steps=3"]
    sizes = _training_batch_sizes(monkeypatch)
    pretrain(load_config(None, base), tmp_path / "one", data=memory_data())
    assert sizes == [8] * 3
    sizes.clear()
    pretrain(load_config(None, [*base, "data.micro_batch_size=2"]), tmp_path / "four", data=memory_data())
    assert sizes == [2] * 12  # really four micro-batches a step, not one batch of 8
    assert train_losses(tmp_path / "four") == pytest.approx(train_losses(tmp_path / "one"), abs=1e-5)


def test_activation_checkpointing_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.utils.checkpoint

    calls = []
    checkpoint = torch.utils.checkpoint.checkpoint

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return checkpoint(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    base = [*OBJECTIVES["gpt2_clm"], *QUIET, "max_steps=3"]
    pretrain(load_config(None, base), tmp_path / "plain", data=memory_data())
    assert not calls
    pretrain(
        load_config(None, [*base, "activation_checkpointing=true"]), tmp_path / "ckpt", data=memory_data()
    )
    assert len(calls) >= 3 * 2  # every block of every training step was recomputed
    assert train_losses(tmp_path / "ckpt") == pytest.approx(train_losses(tmp_path / "plain"), abs=1e-6)


def test_bf16_autocast_tracks_fp32(tmp_path: Path) -> None:
    base = [*OBJECTIVES["roberta_mlm"], *QUIET, "max_steps=3"]
    pretrain(load_config(None, base), tmp_path / "fp32", data=memory_data())
    report = pretrain(load_config(None, [*base, "precision=bf16"]), tmp_path / "bf16", data=memory_data())
    assert report["precision"] == "bf16"
    fp32, bf16 = train_losses(tmp_path / "fp32"), train_losses(tmp_path / "bf16")
    assert bf16 == pytest.approx(fp32, abs=0.05)
    assert bf16 != fp32  # the steps really ran in bf16: an ignored setting would repeat fp32 exactly


def test_l1_penalty_shrinks_weights(tmp_path: Path) -> None:
    base = [*OBJECTIVES["gpt2_clm"], *QUIET, "max_steps=4", "optim.name=sgd", "optim.schedule=constant"]
    pretrain(load_config(None, base), tmp_path / "plain", data=memory_data())
    pretrain(load_config(None, [*base, "optim.l1=0.5"]), tmp_path / "l1", data=memory_data())
    plain, l1 = lmforge_weights(tmp_path / "plain"), lmforge_weights(tmp_path / "l1")
    name = "stack.layers.0.mlp.up_proj.weight"
    assert l1[name].abs().sum() < plain[name].abs().sum()


def lmforge_weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "model" / "model.safetensors"))
