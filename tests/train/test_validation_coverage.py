"""Validation sees every example exactly once (issue 14, defect 5).

A sampler that fills the last batch with examples from the start, or drops the short last batch,
shifts the validation mean silently. These tests count which examples a validation pass reads,
for pretraining (``ExampleSource.eval_batch``) and fine-tuning (the task's ``predict``), with split
sizes that batch sizes do not divide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from finetune_utils import make_workspace
from pretrain_utils import OBJECTIVES, QUIET, memory_data

import lmforge
from lmforge.tasks.base import TaskSplit
from lmforge.tasks.classification import encode_classification
from lmforge.tasks.sources import ExampleSource, TaskSource
from lmforge.train import load_config, pretrain
from lmforge.train.finetune import predict


class _Numbered(ExampleSource):
    """``num_examples`` examples; a batch is its indices."""

    def __init__(self, num_examples: int) -> None:
        super().__init__()
        self.num_examples, self.seed = num_examples, 0

    def collate(self, indices: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"input_ids": np.asarray(indices)[:, None]}


@pytest.mark.parametrize(("num_examples", "batch_size"), [(10, 4), (9, 3), (1, 8), (17, 16)])
def test_eval_batches_cover_the_split_once(num_examples: int, batch_size: int) -> None:
    source = _Numbered(num_examples)
    seen = np.concatenate(
        [
            source.eval_batch(i, batch_size)["input_ids"][:, 0]
            for i in range(source.num_eval_batches(batch_size))
        ]
    )
    assert sorted(seen.tolist()) == list(range(num_examples))
    assert [len(b) for b in source.ordered_batches(batch_size)][-1] == num_examples - (
        source.num_eval_batches(batch_size) - 1
    ) * batch_size
    with pytest.raises(IndexError, match="past the split"):  # no wrap-around to the first examples
        source.eval_batch(source.num_eval_batches(batch_size), batch_size)


def test_pretraining_validation_reads_each_example_once_per_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through ``pretrain``: record the example indices every validation batch collates."""
    passes: list[tuple[int, list[int]]] = []
    original = ExampleSource.eval_batch

    def recording(self: ExampleSource, index: int, batch_size: int) -> dict[str, np.ndarray]:
        if index == 0:
            passes.append((self.num_examples, []))
        inner = self.collate

        def collate(indices: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
            passes[-1][1].extend(int(i) for i in indices)
            return inner(indices, rng)

        self.collate = collate  # type: ignore[method-assign]
        try:
            return original(self, index, batch_size)
        finally:
            del self.collate

    monkeypatch.setattr(ExampleSource, "eval_batch", recording)
    # batch 7 leaves a short last batch; eval_batches above the split's count asks for all of it.
    settings = [*OBJECTIVES["gpt2_clm"], *QUIET, "max_steps=2", "eval_every=1", "data.batch_size=7"]
    pretrain(load_config(None, [*settings, "eval_batches=1000"]), tmp_path, data=memory_data())
    assert len(passes) >= 2
    for num_examples, seen in passes:
        assert num_examples % 7 != 0, "the split must not divide into full batches for this test"
        assert sorted(seen) == list(range(num_examples))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("coverage"))


def test_finetuning_validation_predicts_each_example_once_as_alone(workspace: Path) -> None:
    """11 examples in batches of 4: 11 logit rows, each the example's own (padding ignored)."""
    loaded = lmforge.load(workspace / "tiny", head="sequence_classification", num_labels=2)
    assert loaded.tokenizer is not None
    texts = [" ".join(["good", "movie"] * (1 + i % 5)) for i in range(11)]
    labels = [i % 2 for i in range(11)]
    items: list[dict[str, Any]] = encode_classification(loaded.tokenizer, texts, max_length=32)
    split = TaskSplit(TaskSource(items, np.array(labels), 0, 0), labels)
    logits, _ = predict(loaded.model, split, "classification", batch_size=4)
    assert logits.shape == (11, 2)
    with torch.no_grad():
        alone = [loaded.model(torch.tensor([item["input_ids"]])).logits[0].numpy() for item in items]
    np.testing.assert_allclose(logits, np.stack(alone), atol=1e-5)
