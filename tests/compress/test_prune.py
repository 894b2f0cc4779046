"""Pruning against references: the shrunk model equals the masked original, importance is the
gate gradient, masks reach their sparsity and stay zero through optimizer steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lmforge
from lmforge.compress.importance import gated, unit_importance
from lmforge.compress.magnitude import MagnitudePruner, cubic_sparsity
from lmforge.compress.prune import PruneConfig, prune
from lmforge.compress.structured import select_units, shrink_heads, shrink_neurons
from lmforge.errors import ConfigError, UnsupportedError
from lmforge.models import TransformerModel, preset_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed: int = 0, **changes: object) -> TransformerModel:
    torch.manual_seed(seed)
    config = preset_config(
        "bert-tiny", vocab_size=80, head="sequence_classification", hidden_size=32, num_heads=4,
        intermediate_size=48, num_layers=3, max_positions=32, **changes,
    )  # fmt: skip
    return TransformerModel(config).eval()


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 80, (3, 10), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1])}


def _loss(model: TransformerModel):
    return lambda b: torch.nn.functional.cross_entropy(
        model(b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]
    )


def test_the_pruned_model_equals_the_masked_original(tmp_path: Path) -> None:
    model = _model()
    batch = _batch()
    keep_heads = [torch.tensor([0, 2]), torch.tensor([1]), torch.tensor([0, 1, 3])]
    keep_neurons = [torch.arange(0, 48, 2), torch.tensor([5, 17, 40]), torch.arange(48)]
    head_gates = [torch.zeros(4).index_fill(0, k, 1.0) for k in keep_heads]
    neuron_gates = [torch.zeros(48).index_fill(0, k, 1.0) for k in keep_neurons]
    with torch.no_grad(), gated(model, head_gates, neuron_gates):
        masked = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    before = model.num_parameters()
    shrink_heads(model, keep_heads)
    shrink_neurons(model, keep_neurons)
    with torch.no_grad():
        pruned = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(pruned, masked, atol=1e-5)
    assert model.config.layer_num_heads == [2, 1, 3] and model.config.layer_intermediate_sizes == [24, 3, 48]
    per_head = 4 * 32 * 8 + 3 * 8  # q, k, v rows + o columns of one 8-wide head, and q/k/v biases
    per_neuron = 2 * 32 + 1
    assert before - model.num_parameters() == 6 * per_head + (24 + 45) * per_neuron
    lmforge.save(model, tmp_path / "pruned")
    back = lmforge.load(tmp_path / "pruned").model
    with torch.no_grad():
        assert torch.equal(back(batch["input_ids"], attention_mask=batch["attention_mask"]).logits, pruned)


def test_importance_is_the_gate_gradient() -> None:
    """Each head's score (before normalisation) is |dL/dxi_h|: checked against central differences
    of the loss in that head's gate; the normalised scores have unit norm per layer."""
    model = _model(1).double()  # float64: central differences need the precision
    batch = _batch(1)
    loss = _loss(model)
    scores = unit_importance(model, [batch], loss)
    assert all(abs(float(s.norm()) - 1) < 1e-5 for s in scores.heads + scores.neurons)
    eps, raw = 1e-5, []
    for head in range(4):
        values = []
        for sign in (1, -1):
            gates = [torch.ones(4) for _ in range(3)]
            gates[1][head] += sign * eps
            with torch.no_grad(), gated(model, gates, None):
                values.append(float(loss(batch)))
        raw.append(abs(values[0] - values[1]) / (2 * eps))
    expected = torch.tensor(raw) / torch.tensor(raw).norm()
    assert torch.allclose(scores.heads[1].double(), expected.double(), atol=1e-4)


def test_global_selection_removes_the_least_important_and_keeps_one_unit_per_layer() -> None:
    scores = [torch.tensor([0.9, 0.1, 0.5]), torch.tensor([0.01, 0.02]), torch.tensor([0.3, 0.8, 0.2, 0.7])]
    keep = select_units(scores, 0.5, "global")  # 4 of 9 go: 0.01 (then layer 1 keeps 0.02), 0.1, 0.2, 0.3
    assert [k.tolist() for k in keep] == [[0, 2], [1], [1, 3]]
    per_layer = select_units(scores, 0.5, "layer")
    assert [k.tolist() for k in per_layer] == [[0], [1], [1, 3]]  # round(1.5) = 2 of 3, 1 of 2, 2 of 4


def test_cubic_schedule() -> None:
    assert cubic_sparsity(0, 0.8, 100) == 0.0
    assert cubic_sparsity(50, 0.8, 100) == pytest.approx(0.8 * (1 - 0.5**3))
    assert cubic_sparsity(100, 0.8, 100) == cubic_sparsity(500, 0.8, 100) == 0.8


@pytest.mark.parametrize(("scope", "schedule"), [("global", "oneshot"), ("layer", "cubic")])
def test_masks_reach_their_sparsity_and_stay_zero_after_optimizer_steps(scope: str, schedule: str) -> None:
    model = _model(2).train()
    steps = 30
    pruner = MagnitudePruner(model, 0.6, scope, schedule, steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    seen = []
    with pruner.training():
        for step in range(steps):
            loss = _loss(model)(_batch(step))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            seen.append(pruner.current)
            for weight, mask in zip(pruner.weights, pruner.masks):
                assert torch.all(weight[~mask] == 0)
    assert pruner.sparsity() == pytest.approx(0.6, abs=1e-3)
    if scope == "layer":
        for weight in pruner.weights:
            assert float((weight == 0).float().mean()) == pytest.approx(0.6, abs=0.01)
    if schedule == "cubic":
        assert seen[0] < seen[10] < seen[19] == pytest.approx(0.6)
        assert seen == sorted(seen)
    # The unpruned weights did train.
    assert any(float(w.detach()[m].abs().sum()) > 0 for w, m in zip(pruner.weights, pruner.masks))


def test_structured_prune_with_recovery_writes_a_smaller_checkpoint(classifier: Path, tmp_path: Path) -> None:
    config = PruneConfig(
        heads=0.5, ffn=0.5, data=tmp_path / "train.csv", importance_batches=2, recovery_steps=3, batch_size=8
    )
    report = prune(classifier, tmp_path / "pruned", config)
    assert sum(report["heads_kept"]) == 4 and sum(report["neurons_kept"]) == 64
    assert report["parameters_after"] < report["parameters_before"]
    assert report["recovery"]["steps"] == 3
    assert (tmp_path / "pruned" / "model.safetensors").stat().st_size < (
        classifier / "model.safetensors"
    ).stat().st_size
    loaded = lmforge.load(tmp_path / "pruned")
    assert loaded.config.layer_num_heads == report["heads_kept"]
    assert json.loads((tmp_path / "pruned" / "compression.json").read_text())["kind"] == "prune"


def test_magnitude_prune_through_the_training_loop_keeps_its_zeros(classifier: Path, tmp_path: Path) -> None:
    config = PruneConfig(
        magnitude=0.7, schedule="cubic", data=tmp_path / "train.csv", recovery_steps=12, batch_size=8
    )
    report = prune(classifier, tmp_path / "sparse", config)
    assert report["sparsity"] == pytest.approx(0.7, abs=1e-3)
    model = lmforge.load(tmp_path / "sparse").model
    weights = [
        m.weight
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and n.startswith("stack.")
    ]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.7, abs=1e-3)


def test_bad_settings_and_models_are_refused_before_writing(classifier: Path, tmp_path: Path) -> None:
    data = tmp_path / "train.csv"
    cases = [
        (PruneConfig(heads=1.0, data=data), ConfigError, r"--heads 1.0: a share to remove, in \[0, 1\)"),
        (PruneConfig(magnitude=-0.1), ConfigError, "--magnitude -0.1"),
        (PruneConfig(), ConfigError, "nothing to prune"),
        (PruneConfig(heads=0.3, magnitude=0.5, data=data), ConfigError, "separate runs"),
        (PruneConfig(ffn=0.3), ConfigError, "--data"),
        (PruneConfig(magnitude=0.5, schedule="cubic"), ConfigError, "--recovery-steps"),
    ]
    for config, error, message in cases:
        with pytest.raises(error, match=message):
            prune(classifier, tmp_path / "out", config)
        assert not (tmp_path / "out").exists()
    gqa = preset_config("llama-tiny", head="causal_lm", vocab_size=64, num_heads=4, num_kv_heads=2)
    lmforge.save(TransformerModel(gqa), tmp_path / "llama")
    with pytest.raises(UnsupportedError, match="GQA"):
        prune(tmp_path / "llama", tmp_path / "out", PruneConfig(heads=0.25, data=data))
    assert not (tmp_path / "out").exists()


def test_a_pruned_model_is_not_exported_to_transformers(tmp_path: Path) -> None:
    from lmforge.models.io.hf import save_hf

    model = _model()
    shrink_neurons(model, [torch.arange(10)] * 3)
    with pytest.raises(UnsupportedError, match="per-layer widths"):
        save_hf(model, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
