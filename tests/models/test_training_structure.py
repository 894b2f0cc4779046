"""Training-time structure: where dropout acts (inside the MLP only for T5, every site reachable by
set_dropout) and T5's own init."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmforge.models import TransformerModel, preset_config


def _mlp_input_zero_fraction(preset: str, **overrides: object) -> float:
    torch.manual_seed(0)
    model = TransformerModel(preset_config(preset, dropout=0.5, **overrides)).train()
    seen: list[torch.Tensor] = []
    stack = model.decoder if model.decoder is not None else model.stack
    mlp = stack.layers[0].mlp
    mlp.down_proj.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach()))
    ids = torch.randint(3, model.config.vocab_size, (2, 16))
    kwargs = {"decoder_input_ids": ids} if model.config.family == "t5" else {}
    model(ids, **kwargs)
    return float((seen[0] == 0).float().mean())


@pytest.mark.parametrize("preset", ["bert-tiny", "gpt2-tiny", "llama-tiny"])
def test_no_dropout_inside_the_mlp(preset: str) -> None:
    # BertIntermediate/GPT2MLP/LlamaMLP drop out nothing between the two projections.
    assert _mlp_input_zero_fraction(preset) == 0.0


def test_t5_drops_out_the_inner_activation() -> None:
    # T5DenseGatedActDense: wo(dropout(gelu(wi_0(x)) * wi_1(x))); gated GELU is never exactly 0.
    fraction = _mlp_input_zero_fraction("t5-tiny", activation="gelu_tanh", gated_mlp=True)
    assert 0.4 < fraction < 0.6


def test_t5_uses_its_own_initialisation() -> None:
    torch.manual_seed(0)
    config = preset_config("t5-tiny", tie_embeddings=False)
    model = TransformerModel(config)
    d, dk = config.hidden_size, config.head_dim or config.hidden_size // config.num_heads
    layer = model.stack.layers[0]
    expected = {
        model.embeddings.token.weight: 1.0,
        layer.attn.q_proj.weight: (d * dk) ** -0.5,
        layer.attn.k_proj.weight: d**-0.5,
        layer.mlp.down_proj.weight: config.intermediate_size**-0.5,
        model.lm_head.decoder.weight: d**-0.5,
    }
    for weight, std in expected.items():
        assert abs(float(weight.detach().std()) / std - 1) < 0.15
    bert = TransformerModel(preset_config("bert-tiny"))
    assert abs(float(bert.embeddings.token.weight.detach().std()) - 0.02) < 0.002  # others keep N(0, 0.02)


def test_set_dropout_reaches_every_site_and_the_config(tmp_path: Path) -> None:
    import lmforge

    model = TransformerModel(preset_config("albert-tiny", head="question_answering"))
    model.set_dropout(0.3)
    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    # embeddings + per shared block: attention probabilities and the attention branch; ALBERT has
    # no MLP-output dropout and no family drops out before QA, so those sites stay absent.
    assert rates == [0.3] * 3
    config = model.config
    assert (config.dropout, config.attention_dropout_rate, config.embedding_dropout_rate) == (0.3, 0.3, 0.3)
    lmforge.save(model, tmp_path / "ckpt")
    reloaded = lmforge.load(tmp_path / "ckpt").model
    assert [m.p for m in reloaded.modules() if isinstance(m, torch.nn.Dropout)] == rates
