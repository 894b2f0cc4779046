"""Fine-tuning / pretraining settings refused before work starts, as the Python API sees them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lmforge.errors import ConfigError, DataError
from lmforge.tasks import get_task
from lmforge.train import OptimConfig, load_config
from lmforge.train.finetune import FinetuneConfig
from lmforge.train.tune import TuneConfig
from lmforge.train.validation import (
    validate_cross_validation,
    validate_finetune_config,
    validate_train_config,
)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"epochs": 0}, r"--epochs \(epochs\) = 0"),
        ({"epochs": -1.0}, r"--epochs \(epochs\) = -1.0: must be > 0"),
        ({"batch_size": 0}, r"--batch-size \(batch_size\) = 0: must be >= 1"),
        ({"optim": OptimConfig(lr=-1.0)}, r"--lr \(optim.lr\) = -1.0: must be > 0"),
        ({"optim": OptimConfig(lr=float("nan"))}, r"optim.lr"),
        ({"dropout": 1.0}, r"--dropout \(dropout\) = 1.0: must be in \[0, 1\)"),
        ({"warmup_ratio": 1.0}, r"warmup_ratio"),
        ({"layer_decay": 0.0}, r"layer_decay"),
        ({"label_smoothing": -0.1}, r"label_smoothing"),
        ({"max_steps": 0}, r"--max-steps \(max_steps\) = 0: must be >= 1 \(or unset\)"),
        ({"threads": 0}, r"threads"),
        ({"freeze": "head"}, r"--freeze \(freeze\) = 'head': must be one of none, embeddings, body"),
        ({"metric": "bleu"}, r"classification validation does not report it"),
        ({"task": "seq2seq", "metric": "macro_f1"}, r"seq2seq validation does not report"),
        ({"task": "regression"}, r"unknown task 'regression'"),
    ],
)
def test_bad_finetune_settings_are_refused_naming_flag_and_field(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_finetune_config(dataclasses.replace(FinetuneConfig(), **fields))


def test_good_finetune_settings_pass_unchanged() -> None:
    config = FinetuneConfig(task="token-classification", metric="entity_f1", epochs=0.5, dropout=0.0)
    assert validate_finetune_config(config) is config
    with pytest.raises(ConfigError, match=r"--cv = 1: must be an integer >= 2"):
        validate_cross_validation(1)


def _numeric(metrics: dict[str, Any]) -> set[str]:
    return {k for k, v in metrics.items() if isinstance(v, float) and not k.startswith("num_")}


def test_validation_metric_table_matches_what_the_tasks_report() -> None:
    """Every name the table allows is one the task's validation reports, and none is missing."""
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.5], [0.2, 0.9]])
    reported = {
        "classification": get_task("classification").metrics(
            logits, [0, 1, 1, 0], ["a", "b"], validation=True
        ),
        "token-classification": get_task("token-classification").metrics(
            [[1, 0, 2]], [[1, 0, 0]], ["O", "B-PER", "I-PER"], validation=True
        ),
        "seq2seq": get_task("seq2seq").metrics(["a b c d"], ["a b c e"], validation=True),
        "qa": get_task("qa").metrics(["x", ""], [["x"], []], validation=True),
        "lm": get_task("lm").metrics([6.0, 3.0], [3, 2], validation=True),
        "chat": get_task("chat").metrics([6.0, 3.0], [3, 2], validation=True),
    }
    for task, (metrics, _) in reported.items():
        names = _numeric(metrics) | {"loss"}
        assert set(get_task(task).validation_metrics) == names, task


def test_train_config_ranges(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("max_steps: 2\noptim: {weight_decay: -0.1}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"r.yaml: field 'optim.weight_decay' = -0.1: must be >= 0"):
        validate_train_config(load_config(recipe), str(recipe))
    config = load_config(None, ["max_steps=2"])
    assert validate_train_config(config) is config


def test_tune_config_refuses_zero_trials_and_unknown_sampler() -> None:
    with pytest.raises(ConfigError, match=r"--trials \(trials\) = 0"):
        TuneConfig(trials=0)
    with pytest.raises(ConfigError, match="use tpe or random"):
        TuneConfig(sampler="grid")  # type: ignore[arg-type]


def test_training_data_needs_two_classes_and_class_labels(tmp_path: Path) -> None:
    from lmforge.data import TaskDataConfig, load_task_data

    (tmp_path / "one.csv").write_text("text,label\na b,1\nc d,1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"one.csv: every training example has the label '1' in 'label'"):
        load_task_data("classification", tmp_path / "one.csv")
    assert load_task_data("classification", tmp_path / "one.csv", split="test").label_names == ["1"]
    (tmp_path / "scores.csv").write_text("text,score\na b,0.25\nc d,0.75\ne f,1\n", encoding="utf-8")
    with pytest.raises(
        DataError, match=r"'score' holds numbers such as 0.25 \(3 distinct values\), not classes"
    ):
        load_task_data("classification", tmp_path / "scores.csv", config=TaskDataConfig(label_column="score"))
    (tmp_path / "ints.csv").write_text(
        "text,stars\na b,1.0\nc d,5.0\n", encoding="utf-8"
    )  # whole numbers: classes
    assert load_task_data(
        "classification", tmp_path / "ints.csv", config=TaskDataConfig(label_column="stars")
    )
    with pytest.raises(DataError, match="--limit 0"):
        TaskDataConfig(limit=0)


def test_python_entry_points_refuse_bad_settings_before_writing(tmp_path: Path) -> None:
    """run_finetune / run_cross_validation / pretrain check like the CLI: nothing is read or written."""
    from lmforge.train import pretrain
    from lmforge.train.finetune_run import run_cross_validation, run_finetune

    out = tmp_path / "run"
    missing = tmp_path / "no-such-model"  # never reached: the settings fail first
    with pytest.raises(ConfigError, match=r"--epochs \(epochs\) = 0"):
        run_finetune(missing, tmp_path / "train.csv", out, FinetuneConfig(epochs=0))
    with pytest.raises(ConfigError, match=r"--cv = 1"):
        run_cross_validation(missing, tmp_path / "train.csv", out, FinetuneConfig(), folds=1)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("max_steps: 2\noptim: {lr: -1.0}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"optim.lr"):
        pretrain(load_config(recipe), out, data=tmp_path / "no-data")
    assert not out.exists()
