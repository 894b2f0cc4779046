"""`lmforge finetune` / `lmforge evaluate` end to end on a tiny random BERT, CV folds, early stopping."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from finetune_utils import make_workspace
from typer.testing import CliRunner

import lmforge
from lmforge.cli import app
from lmforge.train.finetune import FinetuneConfig, TaskSplit, finetune_model, layerwise_groups, prepare_model
from lmforge.train.finetune_run import make_split, stratified_folds

runner = CliRunner()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT with a WordPiece tokenizer trained on the test vocabulary, and data files."""
    return make_workspace(tmp_path_factory.mktemp("finetune"))


def invoke(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


COMMON = ("--text-column", "review", "--label-column", "stars")


def test_finetune_then_evaluate_classification(workspace: Path) -> None:
    run, evaluation = workspace / "run", workspace / "eval"
    invoke(
        "finetune", "--task", "classification", "--model", workspace / "tiny", "--data", workspace / "train.csv",
        "--validation", workspace / "val.csv", *COMMON, "--out", run, "--epochs", "8", "--lr", "3e-3",
        "--layer-decay", "0.9", "--class-weights", "balanced", "--label-smoothing", "0.05", "--threads", "1",
    )  # fmt: skip
    loaded = lmforge.load(run)
    assert loaded.config.head == "sequence_classification" and loaded.config.extra["id2label"] == ["1", "5"]
    report = json.loads((run / "report.json").read_text())
    assert report["best"]["macro_f1"] >= 0.9  # the keywords are easy to learn
    invoke("evaluate", "--model", run, "--data", workspace / "test.csv", *COMMON, "--out", evaluation)
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.9 and metrics["macro_f1"] >= 0.9
    arrays = np.load(evaluation / "logits.npz")
    assert arrays["logits"].shape == (32, 2) and arrays["labels"].shape == (32,)
    assert list(arrays["label_names"]) == ["1", "5"]
    # The saved logits are the model's: recompute them through lmforge.load's predict_proba path.
    with open(workspace / "test.csv", encoding="utf-8") as f:
        texts = [row["review"] for row in csv.DictReader(f)]
    np.testing.assert_allclose(loaded.logits(texts), arrays["logits"], atol=1e-4)
    assert (
        arrays["labels"] == [0 if r == "1" else 1 for r in _column(workspace / "test.csv", "stars")]
    ).all()


def _column(path: Path, name: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [row[name] for row in csv.DictReader(f)]


def test_lora_finetune_saves_merged_plain_checkpoint(workspace: Path) -> None:
    run = workspace / "lora"
    invoke(
        "finetune", "--task", "classification", "--model", workspace / "tiny", "--data", workspace / "train.csv",
        *COMMON, "--out", run, "--max-steps", "6", "--lora-rank", "4", "--lr", "1e-2", "--threads", "1",
    )  # fmt: skip
    loaded = lmforge.load(run)
    assert not any("lora" in name for name in loaded.model.state_dict())
    base = lmforge.load(workspace / "tiny")
    changed = loaded.model.stack.layers[0].attn.q_proj.weight - base.model.stack.layers[0].attn.q_proj.weight
    assert changed.abs().max() > 0  # the trained adapter was merged into q_proj
    unchanged = (
        loaded.model.stack.layers[0].attn.k_proj.weight - base.model.stack.layers[0].attn.k_proj.weight
    )
    assert unchanged.abs().max() == 0  # not a LoRA target, frozen


def test_token_classification_end_to_end(workspace: Path) -> None:
    run, evaluation = workspace / "ner", workspace / "ner-eval"
    invoke(
        "finetune", "--task", "token-classification", "--model", workspace / "tiny",
        "--data", workspace / "train.conll", "--validation", workspace / "test.conll", "--out", run,
        "--epochs", "6", "--lr", "5e-3", "--threads", "1",
    )  # fmt: skip
    invoke("evaluate", "--model", run, "--data", workspace / "test.conll", "--out", evaluation)
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["entity_f1"] >= 0.8
    assert lmforge.load(run).config.extra["id2label"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_long_sentences_are_split_at_word_boundaries(workspace: Path) -> None:
    from lmforge.tasks.token_classification import encode_token_classification
    from lmforge.train.finetune import predict

    tokenizer = lmforge.load(workspace / "tiny").tokenizer
    assert tokenizer is not None
    words = [["alice", "visited", "paris"] * 7, ["bob"]]  # 21 words; max_length 10 leaves 8 per item
    tags = [[1, 0, 2] * 7, [1]]
    items = encode_token_classification(tokenizer, words, tags, max_length=10)
    assert [item["example"][0] for item in items][-1] == 1 and len(items) >= 4
    assert all(len(item["input_ids"]) <= 10 for item in items)
    seen = sorted(w for item in items if item["example"] == [0] for w in item["word_index"] if w >= 0)
    assert seen == list(range(21))  # every word scored once, none lost to truncation
    labels = [lab for item in items if item["example"] == [0] for lab in item["labels"] if lab != -100]
    assert labels == tags[0]
    model = lmforge.load(workspace / "tiny", head="token_classification", num_labels=3).model
    from lmforge.tasks.sources import TaskSource

    split = TaskSplit(TaskSource(items, None, 0, 0), tags, [21, 1])
    outputs, _ = predict(model, split, "token-classification", batch_size=3)
    assert [len(o) for o in outputs] == [21, 1]


def test_cross_validation_reports_mean_and_std(workspace: Path) -> None:
    out = workspace / "cv"
    invoke(
        "finetune", "--task", "classification", "--model", workspace / "tiny", "--data", workspace / "train.csv",
        *COMMON, "--out", out, "--cv", "3", "--max-steps", "3", "--threads", "1",
    )  # fmt: skip
    summary = json.loads((out / "cv.json").read_text())
    assert len(summary["per_fold"]) == 3
    accuracies = [fold["accuracy"] for fold in summary["per_fold"]]
    assert summary["mean"]["accuracy"] == pytest.approx(np.mean(accuracies))
    assert summary["std"]["accuracy"] == pytest.approx(np.std(accuracies))
    assert "macro_f1" in summary["mean"]
    # fold runs are never resumed (--cv refuses --resume), so they keep no optimizer checkpoints
    assert not any((out / f"fold-{i}" / "checkpoints").exists() for i in range(3))
    assert all((out / f"fold-{i}" / "model.safetensors").is_file() for i in range(3))


def test_stratified_folds_are_disjoint_and_stratified() -> None:
    labels = np.array([0] * 50 + [1] * 23 + [2] * 7)
    np.random.default_rng(0).shuffle(labels)
    folds = stratified_folds(labels, 5, seed=3)
    joined = np.concatenate(folds)
    assert len(joined) == len(labels) and len(np.unique(joined)) == len(labels)  # disjoint, complete
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    for value in (0, 1, 2):
        counts = [int((labels[f] == value).sum()) for f in folds]
        assert max(counts) - min(counts) <= 1  # each class spread evenly
    assert [f.tolist() for f in stratified_folds(labels, 5, seed=3)] == [f.tolist() for f in folds]


def _train_split(workspace: Path, tokenizer: object) -> TaskSplit:
    """The tiny train.csv tokenised at 32 tokens for the in-process fine-tuning tests."""
    from lmforge.data import load_classification

    data = load_classification(workspace / "train.csv", text_column="review", label_column="stars")
    return make_split("classification", data, tokenizer, 32, 0)  # type: ignore[arg-type]


def _assert_weights_equal(saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    for name, value in expected.items():
        torch.testing.assert_close(saved[name], value)


def test_early_stopping_keeps_the_best_checkpoint(workspace: Path, tmp_path: Path) -> None:
    loaded = lmforge.load(workspace / "tiny", head="sequence_classification", num_labels=2)
    assert loaded.tokenizer is not None
    config = FinetuneConfig(
        max_steps=40,
        batch_size=8,
        eval_every=2,
        patience=2,
        metric="score",
        progress=False,
        threads=1,
        max_length=32,
    )
    config.optim.lr = 1e-2
    prepare_model(loaded.model, config)
    split = _train_split(workspace, loaded.tokenizer)
    scores = iter([0.2, 0.7, 0.5, 0.6, 0.9])  # best at the 2nd evaluation, then 2 worse: stop
    snapshots = []

    def evaluator(task: str, outputs: object, references: object, names: object) -> dict[str, float]:
        snapshots.append({k: v.clone() for k, v in loaded.model.state_dict().items()})
        return {"score": next(scores)}

    report = finetune_model(
        loaded.model, loaded.tokenizer, split, tmp_path, config, ["1", "5"], split, evaluator
    )
    assert report["stopped_early"] and report["steps"] == 8 and report["best"]["step"] == 4
    saved = lmforge.load(tmp_path).model.state_dict()
    _assert_weights_equal(saved, snapshots[1])
    assert (saved["classifier.linear.weight"] - snapshots[-1]["classifier.linear.weight"]).abs().max() > 0
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [2, 4, 6, 8]


def test_freezing_and_layer_decay_groups(workspace: Path) -> None:
    loaded = lmforge.load(workspace / "tiny", head="sequence_classification", num_labels=2)
    model = loaded.model
    prepare_model(model, FinetuneConfig(freeze="embeddings", freeze_layers=1))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("embeddings.", "stack.layers.0.")) for n in trainable)
    assert any(n.startswith("stack.layers.1.") for n in trainable)
    groups = layerwise_groups(model, FinetuneConfig().optim, 0.5, num_layers=2)
    scales = {g["lr_scale"] for g in groups}
    assert scales == {0.5, 1.0}  # layer 1 at decay**1, head at 1; frozen depths have no group
    body = lmforge.load(workspace / "tiny", head="sequence_classification", num_labels=2).model
    prepare_model(body, FinetuneConfig(freeze="body"))
    assert {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad} == {
        "classifier",
        "pooler",
    }


def test_max_length_beyond_learned_positions_is_a_clear_error(workspace: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["finetune", "--task", "classification", "--model", str(workspace / "tiny"), "--data", str(workspace / "train.csv"), *COMMON,
         "--out", str(tmp_path / "run"), "--max-length", "129", "--max-steps", "1"],
    )  # fmt: skip
    # The CLI's main() prints a ConfigError as one line; through CliRunner it is the exception.
    assert "max_length 129 is longer than the model's 128 learned positions" in str(result.exception)


def test_interrupt_keeps_the_best_checkpoint(workspace: Path, tmp_path: Path) -> None:
    loaded = lmforge.load(workspace / "tiny", head="sequence_classification", num_labels=2)
    config = FinetuneConfig(
        max_steps=40, batch_size=8, eval_every=2, metric="score", progress=False, threads=1, max_length=32
    )
    config.optim.lr = 1e-2
    split = _train_split(workspace, loaded.tokenizer)
    snapshots = []

    def evaluator(task: str, outputs: object, references: object, names: object) -> dict[str, float]:
        snapshots.append({k: v.clone() for k, v in loaded.model.state_dict().items()})
        if len(snapshots) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the 3rd validation
        return {"score": [0.3, 0.8][len(snapshots) - 1]}

    report = finetune_model(
        loaded.model, loaded.tokenizer, split, tmp_path, config, ["1", "5"], split, evaluator
    )
    assert report["interrupted"] and report["steps"] == 6 and report["best"]["step"] == 4
    saved = lmforge.load(tmp_path).model.state_dict()
    _assert_weights_equal(saved, snapshots[1])
    with pytest.raises(KeyboardInterrupt):  # no validated checkpoint yet: the interrupt stands
        snapshots.clear()
        config.eval_every = 100
        finetune_model(
            loaded.model, loaded.tokenizer, split, tmp_path / "none", config, ["1", "5"], split,
            lambda *args: (_ for _ in ()).throw(KeyboardInterrupt()),
        )  # fmt: skip


def _train_losses(workspace: Path, run: Path, precision: str) -> tuple[list[float], dict]:
    torch.manual_seed(0)
    loaded = lmforge.load(workspace / "tiny", head="sequence_classification", num_labels=2)
    config = FinetuneConfig(
        max_steps=6,
        batch_size=8,
        progress=False,
        threads=1,
        max_length=32,
        precision=precision,  # type: ignore[arg-type]
    )
    config.optim.lr = 1e-3
    split = _train_split(workspace, loaded.tokenizer)
    report = finetune_model(loaded.model, loaded.tokenizer, split, run, config, ["1", "5"], split)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "train"], report


def test_bf16_autocast_tracks_fp32_and_evaluates_in_fp32(workspace: Path, tmp_path: Path) -> None:
    fp32, _ = _train_losses(workspace, tmp_path / "fp32", "fp32")
    bf16, report = _train_losses(workspace, tmp_path / "bf16", "bf16")
    assert report["precision"] == "bf16"
    assert fp32 != bf16  # autocast really ran in bf16 ...
    np.testing.assert_allclose(bf16, fp32, rtol=0.05)  # ... and trains the same model
    assert lmforge.load(tmp_path / "bf16").model.classifier.linear.weight.dtype == torch.float32
    with pytest.raises(Exception, match="fp16 needs CUDA"):
        _train_losses(workspace, tmp_path / "fp16", "fp16")


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _check_shipping_an_mc_dropout_calibrator(
    run: Path, single: Path, mc: list[Path], ensemble: Path, tmp_path: Path, workspace: Path
) -> None:
    """logits.npz says how it was made; calibrate refuses to mix predictives or to ship an ensemble's
    calibrator in one checkpoint, and ships an MC-dropout one that lmforge.load then reproduces."""
    from lmforge.calibrate.bayesian import mc_dropout_predict
    from lmforge.calibrate.io import read_predictive
    from lmforge.calibrate.registry import calibrator_from_state_dict

    predictive = read_predictive(mc[0] / "logits.npz")
    assert predictive is not None and (predictive["method"], predictive["mc_passes"], predictive["seed"]) == (
        "mc_dropout", 5, 3,
    )  # fmt: skip
    assert read_predictive(single / "logits.npz") is None
    mixed = ["calibrate", "--method", "temperature", "--fit", str(mc[0] / "logits.npz"),
             "--eval", str(single / "logits.npz"), "--out", str(tmp_path / "cal-mixed")]  # fmt: skip
    assert "evaluate both splits the same way" in str(runner.invoke(app, mixed).exception)
    shipped_ensemble = ["calibrate", "--method", "temperature", "--fit", str(ensemble / "logits.npz"),
                        "--eval", str(ensemble / "logits.npz"), "--out", str(tmp_path / "cal-ens"),
                        "--save-into", str(run)]  # fmt: skip
    assert "cannot be shipped" in str(runner.invoke(app, shipped_ensemble).exception)
    assert not (run / "calibrator.json").exists()

    invoke("calibrate", "--method", "temperature", "--fit", mc[0] / "logits.npz", "--eval", mc[1] / "logits.npz",
           "--out", tmp_path / "cal-mc", "--save-into", run)  # fmt: skip
    loaded = lmforge.load(run)
    assert loaded.predictive == {"method": "mc_dropout", "mc_passes": 5, "seed": 3}
    with (workspace / "test.csv").open(encoding="utf-8") as f:
        texts = [row["review"] for row in csv.DictReader(f)][:8]
    probs = loaded.predict_proba(texts)
    np.testing.assert_array_equal(probs, loaded.predict_proba(texts))  # seeded passes
    averaged = mc_dropout_predict(loaded.model, loaded._batches(texts, 32), 5, 3).probs
    assert loaded.calibrator is not None
    np.testing.assert_allclose(probs, loaded.calibrator.predict_proba(np.log(averaged)), atol=1e-12)
    # T = 1 (six training steps leave a near-constant classifier, whose fitted T flattens everything):
    # predict_proba is then the averaged dropout passes themselves, not the deterministic softmax
    state = loaded.calibrator.state_dict()
    state["arrays"] = {"log_temperature": np.zeros(1)}
    loaded.calibrator = calibrator_from_state_dict(state)
    np.testing.assert_allclose(loaded.predict_proba(texts), averaged, atol=1e-9)
    assert np.abs(averaged - _softmax(loaded.logits(texts))).max() > 1e-4  # the dropout passes were run
    (run / "calibrator.json").unlink()
    (run / "calibrator.safetensors").unlink(missing_ok=True)


def test_evaluate_as_deep_ensemble_and_with_mc_dropout(workspace: Path, tmp_path: Path) -> None:
    runs = [tmp_path / f"seed{seed}" for seed in (0, 1)]
    threads = torch.get_num_threads()
    for seed, run in enumerate(runs):
        invoke(
            "finetune", "--task", "classification", "--model", workspace / "tiny", "--data", workspace / "train.csv",
            *COMMON, "--out", run, "--max-steps", "6", "--lr", "3e-3", "--dropout", "0.2", "--seed", seed,
            "--threads", "1",
        )  # fmt: skip
        invoke(
            "evaluate",
            "--model",
            run,
            "--data",
            workspace / "test.csv",
            *COMMON,
            "--out",
            run / "eval",
            "--threads",
            "1",
        )
    single = [np.load(run / "eval" / "logits.npz")["logits"] for run in runs]
    assert torch.get_num_threads() == threads  # evaluate --threads 1 restores the caller's setting

    ensemble = tmp_path / "ensemble"
    invoke("evaluate", "--model", runs[0], "--ensemble", runs[1], "--data", workspace / "test.csv", *COMMON,
           "--out", ensemble)  # fmt: skip
    arrays = np.load(ensemble / "logits.npz")
    expected = (_softmax(single[0]) + _softmax(single[1])) / 2  # the mean of the members' probabilities
    np.testing.assert_allclose(_softmax(arrays["logits"]), expected, atol=1e-5)
    metrics = json.loads((ensemble / "metrics.json").read_text())
    assert metrics["predictive"]["method"] == "deep_ensemble" and metrics["predictive"]["members"] == 2
    uncertainty = np.load(ensemble / "uncertainty.npz")
    assert uncertainty["predictive_entropy"].shape == (32,)
    assert (uncertainty["mutual_information"] >= -1e-9).all()  # Jensen: never negative

    mc = [tmp_path / "mc-a", tmp_path / "mc-b"]
    for out in mc:
        invoke("evaluate", "--model", runs[0], "--mc-dropout", "5", "--seed", "3", "--data", workspace / "test.csv",
               *COMMON, "--out", out)  # fmt: skip
    mc_logits = [np.load(out / "logits.npz")["logits"] for out in mc]
    np.testing.assert_array_equal(mc_logits[0], mc_logits[1])  # seeded masks: reproducible
    assert np.abs(_softmax(mc_logits[0]) - _softmax(single[0])).max() > 1e-4  # dropout really was on
    assert json.loads((mc[0] / "metrics.json").read_text())["predictive"]["members"] == 5
    # the averaged predictive calibrates like any logits file
    invoke("calibrate", "--method", "temperature", "--eval", mc[0] / "logits.npz", "--cv", "2",
           "--out", tmp_path / "cal")  # fmt: skip
    assert json.loads((tmp_path / "cal" / "metrics.json").read_text())["method"] == "temperature"
    _check_shipping_an_mc_dropout_calibrator(runs[0], runs[0] / "eval", mc, ensemble, tmp_path, workspace)

    bad = ["evaluate", "--model", str(runs[0]), "--data", str(workspace / "test.csv"), *COMMON,
           "--out", str(tmp_path / "bad"), "--ensemble"]  # fmt: skip
    assert "is not a fine-tuned" in str(runner.invoke(app, [*bad, str(workspace / "tiny")]).exception)


def test_training_steps_run_in_train_mode_and_validation_in_eval_mode(
    workspace: Path, tmp_path: Path
) -> None:
    """lmforge.load returns a model in eval mode; fine-tuning must still train with dropout on
    (the tiny BERT's 0.1) and validate without it."""
    loaded = lmforge.load(workspace / "tiny", head="sequence_classification", num_labels=2)
    assert not loaded.model.training
    modes: list[tuple[bool, bool]] = []
    loaded.model.register_forward_pre_hook(lambda m, _: modes.append((torch.is_grad_enabled(), m.training)))
    config = FinetuneConfig(max_steps=3, eval_every=3, batch_size=8, progress=False, threads=1, max_length=32)
    split = _train_split(workspace, loaded.tokenizer)
    finetune_model(loaded.model, loaded.tokenizer, split, tmp_path, config, ["1", "5"], split)
    assert {training for grad, training in modes if grad} == {True}  # the 3 training steps
    assert {training for grad, training in modes if not grad} == {False}  # validation
