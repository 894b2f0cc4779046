"""LoRA adapters: wrap in place, train only the adapters, merge back to identical outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmforge.errors import ConfigError
from lmforge.models import TransformerModel, preset_config
from lmforge.train.lora import LoRALinear, apply_lora, lora_parameters, merge_lora


def tiny_model(seed: int = 0) -> TransformerModel:
    torch.manual_seed(seed)
    config = preset_config(
        "bert-tiny", head="sequence_classification", num_labels=3, vocab_size=50,
        hidden_size=32, num_heads=2, intermediate_size=64, max_positions=32,
    )  # fmt: skip
    return TransformerModel(config).eval()


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    return ids, mask


def test_fresh_adapters_do_not_change_outputs_and_only_adapters_train() -> None:
    model = tiny_model()
    ids, mask = inputs()
    before = model(ids, mask).logits
    names = apply_lora(model, targets=("q_proj", "v_proj"), rank=4, alpha=8)
    assert len(names) == 2 * model.config.num_layers
    assert all(isinstance(model.get_submodule(n), LoRALinear) for n in names)
    torch.testing.assert_close(model(ids, mask).logits, before)  # B = 0 at start
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_a", "lora_b")) for n in trainable)
    assert len(lora_parameters(model)) == len(trainable)


def test_merged_outputs_equal_unmerged() -> None:
    model = tiny_model()
    ids, mask = inputs()
    apply_lora(
        model, targets=("q_proj", "k_proj", "v_proj", "o_proj", "up_proj"), rank=3, alpha=6, dropout=0.1
    )
    with torch.no_grad():  # as if trained: non-zero updates everywhere
        for param in lora_parameters(model):
            param.normal_(0, 0.2)
    model.eval()
    unmerged = model(ids, mask).logits
    base = tiny_model()(ids, mask).logits
    assert (unmerged - base).abs().max() > 1e-3  # the adapters do change the outputs
    assert merge_lora(model) == 5 * model.config.num_layers
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert all(type(m) is nn.Linear for n, m in model.named_modules() if n.endswith("q_proj"))
    assert (model(ids, mask).logits - unmerged).abs().max() <= 1e-5
    assert not any("lora" in k for k in model.state_dict())


def test_lora_gradients_reach_only_adapters() -> None:
    model = tiny_model()
    apply_lora(model, rank=2)
    for name, param in model.named_parameters():
        if name.startswith("classifier."):
            param.requires_grad_(True)
    ids, mask = inputs()
    model.train()
    model(ids, mask).logits.sum().backward()
    a = model.stack.layers[0].attn.q_proj.lora_a  # type: ignore[union-attr]
    assert a.grad is not None and a.grad.abs().sum() == 0  # B = 0: no signal to A on step one
    b = model.stack.layers[0].attn.q_proj.lora_b  # type: ignore[union-attr]
    assert b.grad is not None and b.grad.abs().sum() > 0
    assert model.stack.layers[0].attn.q_proj.base.weight.grad is None  # type: ignore[union-attr]


def test_unknown_target_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no nn.Linear"):
        apply_lora(tiny_model(), targets=("qkv",))
