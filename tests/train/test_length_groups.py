"""Length-sorted micro-batches give the whole batch's loss and gradients with less padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmforge.models import TransformerModel, preset_config
from lmforge.tasks.sources import IGNORE_INDEX, ClassifierLoss, TaskSource, to_tensors
from lmforge.train.length_groups import length_grouped_batch

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(num_labels: int, head: str) -> TransformerModel:
    torch.manual_seed(0)
    config = preset_config(
        "bert-tiny", vocab_size=50, hidden_size=16, num_heads=2, num_layers=2, intermediate_size=32,
        max_positions=64, dropout=0.0, head=head, num_labels=num_labels,
    )  # fmt: skip
    return TransformerModel(config).train()


def _encoded(rng: np.random.Generator, n: int, tagged: bool) -> list[dict[str, list[int]]]:
    rows = []
    for i in range(n):
        length = 40 if i % 8 == 0 else int(rng.integers(3, 12))  # a few long rows force wide padding
        ids = [2, *rng.integers(5, 50, length - 2).tolist(), 3]
        row: dict[str, list[int]] = {"input_ids": ids, "token_type_ids": [0] * length}
        if tagged:
            labels = rng.integers(0, 3, length).tolist()
            row["labels"] = [IGNORE_INDEX, *labels[1:-1], IGNORE_INDEX]
            del row["token_type_ids"]
        rows.append(row)
    return rows


def _gradients(
    model: TransformerModel, loss_module: ClassifierLoss, parts: list
) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    total = 0.0
    for batch, share in parts:
        loss, _ = loss_module(to_tensors(batch, torch.device("cpu")))
        (loss * share).backward()
        total += float(loss.detach()) * share
    return total, [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("task", ["classification", "token-classification"])
def test_grouped_update_equals_the_whole_batch(task: str) -> None:
    rng = np.random.default_rng(0)
    tagged = task == "token-classification"
    encoded = _encoded(rng, 64, tagged)
    labels = None if tagged else rng.integers(0, 3, 64).tolist()
    source = TaskSource(encoded, labels, pad_id=0, seed=1)
    model = _model(3, "token_classification" if tagged else "sequence_classification")
    weights = torch.tensor([0.5, 2.0, 1.0])
    loss_module = ClassifierLoss(model, tagged, weights, label_smoothing=0.1)
    target_key = "token_labels" if tagged else "labels"
    for step in range(3):
        parts = length_grouped_batch(source, step, 16, 4, target_key, weights)
        assert len(parts) > 1 and sum(share for _, share in parts) == pytest.approx(1.0)
        whole = [(source.train_batch(step, 16), 1.0)]
        # The same examples (row token sums as a fingerprint), in fewer padded positions.
        rows = sorted(int(r.sum()) for b, _ in parts for r in b["input_ids"])
        assert rows == sorted(int(r.sum()) for r in whole[0][0]["input_ids"])
        padded = sum(b["input_ids"].size for b, _ in parts)
        assert padded < 0.6 * whole[0][0]["input_ids"].size
        loss_whole, grads_whole = _gradients(model, loss_module, whole)
        loss_parts, grads_parts = _gradients(model, loss_module, parts)
        assert loss_parts == pytest.approx(loss_whole, rel=1e-5)
        for a, b in zip(grads_parts, grads_whole):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_no_split_when_it_saves_little() -> None:
    encoded = [{"input_ids": [2, 7, 8, 3], "token_type_ids": [0] * 4} for _ in range(32)]
    source = TaskSource(encoded, [0, 1] * 16, pad_id=0, seed=0)
    parts = length_grouped_batch(source, 0, 32, 4, "labels")
    assert len(parts) == 1 and parts[0][1] == 1.0
    np.testing.assert_array_equal(parts[0][0]["input_ids"], source.train_batch(0, 32)["input_ids"])
    # Too few rows for a group of MIN_GROUP_ROWS: one batch.
    assert len(length_grouped_batch(source, 0, 6, 4, "labels")) == 1
