"""`lmforge tune`: a resumable Optuna study over tiny fine-tuning runs, pruning, search-space files."""

from __future__ import annotations

import csv
import json
import random
import re
import sqlite3
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from typer.testing import CliRunner

import lmforge
from lmforge.cli import app
from lmforge.errors import ConfigError
from lmforge.models import TransformerModel, preset_config
from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer
from lmforge.train.finetune import FinetuneConfig
from lmforge.train.search_space import DEFAULT_SPACE, apply_params, load_search_space
from lmforge.train.tune import TuneConfig, run_tune

runner = CliRunner()
POSITIVE, NEGATIVE = ["good", "great", "lovely"], ["bad", "awful", "poor"]
FILLER = ["the", "movie", "was", "a", "film", "plot"]
SPACE = (
    "lr: {low: 1.0e-4, high: 3.0e-3, log: true}\nbatch_size: {choices: [16, 32]}\nepochs: {low: 1, high: 2}\n"
)


def sentence(rng: random.Random, label: int) -> str:
    words = [rng.choice(FILLER) for _ in range(3)] + [rng.choice(POSITIVE if label else NEGATIVE)] * 2
    rng.shuffle(words)
    return " ".join(words)


def write_csv(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "stars"])
        for i in range(n):
            writer.writerow([sentence(rng, i % 2), "pos" if i % 2 else "neg"])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tune")
    rng = random.Random(0)
    tokenizer = train_tokenizer(
        [sentence(rng, i % 2) for i in range(100)],
        TokenizerTrainConfig(kind="wordpiece", vocab_size=60, lowercase=True),
    )
    torch.manual_seed(0)
    config = preset_config(
        "bert-tiny", vocab_size=tokenizer.vocab_size, hidden_size=16, num_heads=2, num_layers=1,
        intermediate_size=32, max_positions=128,
    )  # fmt: skip
    lmforge.save(TransformerModel(config), root / "tiny", tokenizer)
    write_csv(root / "train.csv", 64, 1)
    write_csv(root / "val.csv", 16, 2)
    (root / "space.yaml").write_text(SPACE, encoding="utf-8")
    return root


def tune_args(root: Path, out: Path, trials: int) -> list[str]:
    return [
        "tune", "--task", "classification", "--model", str(root / "tiny"), "--data", str(root / "train.csv"),
        "--validation", str(root / "val.csv"), "--text-column", "review", "--label-column", "stars",
        "--sampler", "random", "--trials", str(trials), "--study-name", "s1",
        "--storage", f"sqlite:///{out / 'study.db'}", "--out", str(out), "--search-space", str(root / "space.yaml"),
        "--max-length", "16", "--threads", "1",
    ]  # fmt: skip


def test_tune_writes_best_recipe_and_resumes(workspace: Path) -> None:
    out = workspace / "run"
    out.mkdir()
    result = runner.invoke(app, tune_args(workspace, out, 3))
    assert result.exit_code == 0, result.output
    trials = json.loads((out / "trials.json").read_text())
    assert len(trials) == 3 and all(t["state"] in ("complete", "pruned") for t in trials)
    summary = json.loads((out / "tune.json").read_text())
    assert summary["ran"] == 3 and summary["metric"] == "macro_f1"
    # The study is in SQLite: optuna reads it back from the file.
    stored = optuna.load_study(study_name="s1", storage=f"sqlite:///{out / 'study.db'}")
    assert len(stored.trials) == 3
    with sqlite3.connect(out / "study.db") as db:
        assert db.execute("select count(*) from trials").fetchone()[0] == 3
    best = summary["best"]
    assert best["value"] == max(t["value"] for t in trials if t["state"] == "complete")
    recipe = yaml.safe_load((out / "best.yaml").read_text())
    assert recipe["lr"] == pytest.approx(best["params"]["lr"])
    assert recipe["batch_size"] == best["params"]["batch_size"]
    assert recipe["epochs"] == best["params"]["epochs"] and recipe["label_column"] == "stars"
    # Only the best trial keeps its weights.
    weights = sorted(p.parent.name for p in (out / "trials").rglob("*.safetensors"))
    assert weights == [str(best["number"])]

    # Same command with --trials 5: the study resumes and runs only the 2 missing trials.
    result = runner.invoke(app, tune_args(workspace, out, 5))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "tune.json").read_text())
    assert summary["ran"] == 2
    assert [t["number"] for t in json.loads((out / "trials.json").read_text())] == [0, 1, 2, 3, 4]
    # A resumed session must not re-propose the first session's points.
    params = [t["params"]["lr"] for t in json.loads((out / "trials.json").read_text())]
    assert len(set(params)) == 5

    # The recipe drives `lmforge finetune --config`; a flag given on the command line wins.
    final = workspace / "final"
    result = runner.invoke(
        app, ["finetune", "--config", str(out / "best.yaml"), "--out", str(final), "--epochs", "1"]
    )
    assert result.exit_code == 0, result.output
    settings = json.loads((final / "finetune.json").read_text())
    recipe = yaml.safe_load((out / "best.yaml").read_text())
    assert (
        settings["optim"]["lr"] == pytest.approx(recipe["lr"])
        and settings["batch_size"] == recipe["batch_size"]
    )
    assert settings["epochs"] == 1.0
    assert lmforge.load(final).config.num_labels == 2


def test_pruning_hook_reports_each_validation(workspace: Path, tmp_path: Path) -> None:
    base = FinetuneConfig(max_length=16, eval_every=1, max_steps=3, metric="macro_f1", threads=1)
    space = {**DEFAULT_SPACE, "batch_size": load_search_space(None)["batch_size"]}
    from lmforge.data import TaskDataConfig

    # Any macro-F1 is below 2: the threshold pruner stops every trial at its first report.
    summary = run_tune(
        workspace / "tiny", workspace / "train.csv", tmp_path, base, TuneConfig(trials=2, sampler="random"),
        space, workspace / "val.csv", TaskDataConfig(text_column="review", label_column="stars"),
        pruner=optuna.pruners.ThresholdPruner(lower=2.0), log=lambda line: None,
    )  # fmt: skip
    assert summary["states"] == {"pruned": 2} and summary["best"] is None
    trials = json.loads((tmp_path / "trials.json").read_text())
    assert all(list(t["intermediate_values"]) == ["1"] for t in trials)
    assert not (tmp_path / "best.yaml").exists()
    # Without pruning, one report per validation (eval_every=1, 3 steps).
    summary = run_tune(
        workspace / "tiny", workspace / "train.csv", tmp_path / "full", base,
        TuneConfig(trials=1, sampler="tpe", pruner="none"), space, workspace / "val.csv",
        TaskDataConfig(text_column="review", label_column="stars"), log=lambda line: None,
    )  # fmt: skip
    trial = json.loads((tmp_path / "full" / "trials.json").read_text())[0]
    assert trial["state"] == "complete" and list(trial["intermediate_values"]) == ["1", "2", "3"]
    assert trial["value"] == max(trial["intermediate_values"].values())


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("learning_rate: {low: 0.1, high: 0.2}", "'learning_rate'"),
        ("lr: {low: 0.1, hgh: 0.2}", "'lr.hgh'"),
        ("lr: {low: 0.2, high: 0.1}", "'lr.low'"),
        ("lr: {low: 0.0, high: 0.1, log: true}", "'lr.low'"),
        ("weight_decay: {high: 0.1}", "'weight_decay.low'"),
        ("batch_size: {choices: [16, 8.5]}", "'batch_size.choices[1]'"),
        ("epochs: {low: 1, high: 3, step: 0}", "'epochs.step'"),
        ("dropout: {low: 0.0, high: 'a lot'}", "'dropout.high'"),
        ("- lr", "mapping"),
    ],
)
def test_search_space_errors_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(field)) as info:
        load_search_space(path)
    assert str(path) in str(info.value)


def test_search_space_file_overrides_defaults(workspace: Path) -> None:
    space = load_search_space(workspace / "space.yaml")
    assert space["lr"].log and space["lr"].low == pytest.approx(1e-4)
    assert space["batch_size"].choices == (16, 32) and space["epochs"].kind == "int"
    assert space["dropout"] == DEFAULT_SPACE["dropout"]  # left out of the file: the default range
    config = apply_params(FinetuneConfig(), {"lr": 1e-3, "weight_decay": 0.05, "epochs": 2, "dropout": 0.1})
    assert (config.optim.lr, config.optim.weight_decay) == (1e-3, 0.05)
    assert (config.epochs, config.dropout) == (2.0, 0.1)


def test_finetune_recipe_with_an_unknown_key_names_it(workspace: Path) -> None:
    recipe = workspace / "bad.yaml"
    recipe.write_text(f"model: {workspace / 'tiny'}\nlearning_rate: 0.1\n", encoding="utf-8")
    result = runner.invoke(app, ["finetune", "--config", str(recipe), "--out", str(workspace / "x")])
    assert isinstance(result.exception, ConfigError)
    assert "learning_rate" in str(result.exception) and str(recipe) in str(result.exception)


def test_tune_token_classification_optimises_entity_f1(workspace: Path) -> None:
    rows = [("alice", "B-PER"), ("went", "O"), ("to", "O"), ("paris", "B-LOC")]
    for name in ("ner-train.conll", "ner-val.conll"):
        (workspace / name).write_text("\n\n".join(["\n".join(f"{w} {t}" for w, t in rows)] * 12) + "\n")
    out = workspace / "ner-study"
    result = runner.invoke(
        app,
        ["tune", "--task", "token-classification", "--model", str(workspace / "tiny"),
         "--data", str(workspace / "ner-train.conll"), "--validation", str(workspace / "ner-val.conll"),
         "--sampler", "random", "--trials", "2", "--out", str(out), "--search-space", str(workspace / "space.yaml"),
         "--threads", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "tune.json").read_text())
    assert summary["metric"] == "entity_f1" and len(json.loads((out / "trials.json").read_text())) == 2
