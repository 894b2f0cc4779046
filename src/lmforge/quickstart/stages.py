"""The quickstart's stages, each a thin call into the stage package that does the work.

Every stage takes the run's :class:`~lmforge.quickstart.plan.Plan`, the run directory and what
earlier stages returned, writes its files under the run directory and returns a JSON-ready
summary (what the report shows). They run in :data:`STAGES` order; :mod:`lmforge.quickstart.run`
times them and reuses finished ones.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.fileio import atomic_write_bytes, atomic_write_text
from lmforge.quickstart.plan import Plan, write_splits

__all__ = ["OUTPUTS", "RESUMABLE", "STAGES", "Context"]

Summary = dict[str, Any]


class Context:
    """What a stage sees: the plan, the run directory, the summaries of earlier stages."""

    def __init__(self, plan: Plan, out: Path, seed: int, done: dict[str, Summary]) -> None:
        self.plan, self.out, self.seed, self.done = plan, out, seed, done

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def split(self, name: str) -> Path:
        return self.path("data", f"{name}.csv")

    def rows(self, name: str) -> list[dict[str, str]]:
        """The ``text,label`` rows of a split file."""
        with self.split(name).open(encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))


def scores(probs: np.ndarray, labels: np.ndarray, seed: int = 0) -> Summary:
    """Accuracy, ECE (15 bins) with its noise floor (the ECE a perfectly calibrated model with these
    probabilities would show on as many examples: mean, 95% range, p-value), NLL, and macro-F1."""
    from lmforge.compress.report import calibration_metrics
    from lmforge.metrics.classification import precision_recall_f1

    probs = np.asarray(probs, dtype=np.float64)
    macro_f1 = precision_recall_f1(labels, probs.argmax(1), probs.shape[1])["macro_f1"]
    return {
        **calibration_metrics(probs, labels, seed=seed),
        "macro_f1": float(macro_f1),
        "examples": len(labels),
    }


def _logit_scores(path: Path, seed: int) -> Summary:
    from lmforge.calibrate.base import softmax

    saved = np.load(path)
    return scores(softmax(saved["logits"].astype(np.float64)), saved["labels"], seed)


def data(ctx: Context) -> Summary:
    """Classification splits as CSV files, and the pretraining corpus as one text file."""
    from lmforge.data import clean_text, iter_texts

    stats = write_splits(ctx.plan, ctx.path("data"))
    train_texts = [row["text"] for row in ctx.rows("train")]
    lines: list[str] = []
    for text in iter_texts(list(ctx.plan.corpus)):
        text = clean_text(text)
        if text.strip():
            lines.append(text.replace("\n", " "))
        if len(lines) >= ctx.plan.corpus_lines:
            break
    # The classifier's validation and test texts never reach the pretraining corpus.
    corpus = lines + train_texts
    atomic_write_text(ctx.path("data", "corpus.txt"), "\n".join(corpus) + "\n")
    stats["corpus"] = {
        "sources": [*ctx.plan.corpus, "train split texts"],
        "lines": len(corpus),
        "characters": sum(len(line) for line in corpus),
    }
    return stats


def tokenizer(ctx: Context) -> Summary:
    """A tokenizer trained on the corpus, and the corpus tokenized for pretraining."""
    from lmforge.data import prepare
    from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

    plan = ctx.plan
    config = TokenizerTrainConfig(plan.tokenizer_kind, plan.vocab_size, plan.tokenizer_family)  # type: ignore[arg-type]
    corpus = ctx.path("data", "corpus.txt")
    with corpus.open(encoding="utf-8") as lines:
        trained = train_tokenizer(lines, config)
    trained.save(ctx.path("tokenizer"))
    manifest = prepare(
        [str(corpus)], trained, ctx.path("tokens"), validation_fraction=0.05,
        word_segmentation=plan.word_segmentation, workers=1, force=True,  # type: ignore[arg-type]
    )  # fmt: skip
    return {
        "kind": plan.tokenizer_kind,
        "family": plan.tokenizer_family,
        "vocab_size": trained.vocab_size,
        "splits": {
            k: {"documents": v["num_documents"], "tokens": v["num_tokens"]}
            for k, v in manifest["splits"].items()
        },
    }


def pretrain(ctx: Context) -> Summary:
    """A tiny model pretrained from scratch on the corpus (MLM + whole-word masking + NSP, or causal LM)."""
    from lmforge.train import load_config
    from lmforge.train import pretrain as run_pretraining
    from lmforge.train.validation import validate_train_config

    plan = ctx.plan
    overrides = [
        f"model.preset={plan.preset}", "model.hidden_size=128", "model.num_layers=2", "model.num_heads=2",
        "model.intermediate_size=512", "model.max_positions=128", "model.dropout=0.0",
        *plan.objective, "objective.seq_len=128", "data.batch_size=16", "optim.lr=1e-3",
        "optim.warmup_steps=10", "optim.schedule=cosine", "optim.clip_grad_norm=1.0",
        f"max_steps={plan.pretrain_steps}", f"eval_every={max(10, plan.pretrain_steps // 4)}",
        "eval_batches=4", "log_every=5", f"checkpoint_every={plan.pretrain_steps}", "keep_last=1",
        f"seed={ctx.seed}",
    ]  # fmt: skip
    recipe = validate_train_config(load_config(None, overrides), "quickstart")
    report = run_pretraining(recipe, ctx.path("pretrain"), data=ctx.path("tokens"), resume=True)
    from lmforge.evaluate.plots import learning_curves_png, read_metrics_log

    log = ctx.path("pretrain", "metrics.jsonl")
    curves = learning_curves_png(read_metrics_log(log)) if log.is_file() else None
    if curves is not None:
        atomic_write_bytes(ctx.path("pretrain", "learning_curves.png"), curves)
    keys = ("steps", "final_val_loss", "val_perplexity", "tokens_per_second", "num_parameters")
    return {"overrides": overrides, **{k: report.get(k) for k in keys}}


def _finetune(ctx: Context, model: str, run: str, epochs: float, lr: float, max_length: int) -> Summary:
    from lmforge.train import OptimConfig
    from lmforge.train.finetune_config import FinetuneConfig
    from lmforge.train.finetune_run import run_finetune

    config = FinetuneConfig(
        task="classification", max_length=max_length, batch_size=16, epochs=epochs,
        optim=OptimConfig(lr=lr, weight_decay=0.01, schedule="linear", min_lr_ratio=0.0),
        metric="accuracy", keep_last=1, seed=ctx.seed,
    )  # fmt: skip
    report = run_finetune(
        model, ctx.split("train"), ctx.path(run), config, ctx.split("validation"), resume=True
    )
    best = report.get("best") or {}
    return {
        "model": model,
        "steps": report["steps"],
        "examples_per_second": report.get("examples_per_second"),
        "best_step": best.get("step"),
        "validation_accuracy": best.get("accuracy"),
    }


def finetune_tiny(ctx: Context) -> Summary:
    """The pretrained tiny model fine-tuned on the training split."""
    return _finetune(
        ctx,
        str(ctx.path("pretrain", "model")),
        "finetune-tiny",
        ctx.plan.finetune_epochs,
        5e-4,
        ctx.plan.max_length,
    )


def finetune_minilm(ctx: Context) -> Summary:
    """The bundled all-MiniLM-L6-v2 fine-tuned on the same split."""
    summary = _finetune(
        ctx, "minilm-l6", "finetune-minilm", ctx.plan.minilm_epochs, 1e-4, ctx.plan.minilm_max_length
    )
    from lmforge.tokenizers import Tokenizer

    tokenizer = Tokenizer.from_dir(ctx.path("finetune-minilm"))  # MiniLM's, saved with the run
    unknown = tokenizer.backend.token_to_id("[UNK]")
    ids = [i for row in ctx.rows("train") for i in tokenizer.encode(row["text"], add_special_tokens=False)]
    summary["unknown_token_rate"] = sum(i == unknown for i in ids) / max(1, len(ids))
    return summary


def baseline(ctx: Context) -> Summary:
    """TF-IDF + logistic regression on the same split."""
    from lmforge.baselines.runner import BaselineConfig, run_baseline

    config = BaselineConfig(
        kind="tfidf-lr", data=str(ctx.split("train")), out=ctx.path("baseline"), test=str(ctx.split("test")),
        seed=ctx.seed,
    )  # fmt: skip
    metrics = run_baseline(config)
    return {
        **_logit_scores(ctx.path("baseline", "logits.npz"), ctx.seed),
        "train_seconds": metrics.get("train_seconds"),
    }


def evaluate(ctx: Context) -> Summary:
    """Both fine-tuned models on the validation and test splits (logits, metrics, ROC, confusion)."""
    from lmforge.api import evaluate_model

    summary: Summary = {}
    for run in ("finetune-tiny", "finetune-minilm"):
        for split in ("validation", "test"):
            name = f"{run.removeprefix('finetune-')}-{split}"
            evaluate_model(ctx.path(run), ctx.split(split), ctx.path("eval", name), split=split)
            summary[name] = _logit_scores(ctx.path("eval", name, "logits.npz"), ctx.seed)
    tiny, minilm = summary["tiny-validation"]["accuracy"], summary["minilm-validation"]["accuracy"]
    summary["best"] = "minilm" if minilm >= tiny else "tiny"  # chosen on validation, never on test
    return summary


def calibrate(ctx: Context) -> Summary:
    """Temperature, isotonic and histogram binning fitted on validation, measured on test; the best
    by test ECE is saved into the chosen classifier (``lmforge.load`` then predicts calibrated)."""
    from lmforge.calibrate.pipeline import CalibrateConfig, run_calibration

    best = ctx.done["evaluate"]["best"]
    config = CalibrateConfig(
        "temperature,isotonic,histogram", ctx.path("eval", f"{best}-test", "logits.npz"),
        ctx.path("calibration"), ctx.path("eval", f"{best}-validation", "logits.npz"),
        save_into=ctx.path(f"finetune-{best}"), seed=ctx.seed,
    )  # fmt: skip
    metrics = run_calibration(config)
    keys = ("accuracy", "ece", "nll", "brier")
    floors = metrics["ece_floor"]
    rows = {"uncalibrated": {**{k: metrics["before"][k] for k in keys}, "ece_floor": floors["before"]}}
    rows.update(
        {m: {**{k: v[k] for k in keys}, "ece_floor": floors[m]} for m, v in metrics["methods"].items()}
    )
    return {
        "model": best,
        "rows": rows,
        "saved": metrics.get("saved_into", {}).get("method"),
        "figures": metrics.get("figures", []),
    }


def prompt(ctx: Context) -> Summary:
    """SmolLM2-135M-Instruct zero- and few-shot on the test split, raw and calibrated
    (contextual calibration with content-free inputs; batch calibration)."""
    from lmforge.calibrate.contextual import (
        CONTENT_FREE_INPUTS,
        batch_calibrate,
        contextual_calibrate,
        prompt_probs,
    )
    from lmforge.models.io.checkpoint import load
    from lmforge.prompting.data import LabelledData
    from lmforge.prompting.protocol import sample_demonstrations
    from lmforge.prompting.scorer import PromptScorer
    from lmforge.prompting.templates import PromptTemplate

    def rows(split: str) -> tuple[list[str], np.ndarray]:
        records = ctx.rows(split)
        return [r["text"][: ctx.plan.prompt_chars] for r in records], np.asarray(
            [ctx.plan.labels.index(r["label"]) for r in records]
        )

    texts, labels = rows("test")
    texts, labels = texts[: ctx.plan.prompt_examples], labels[: ctx.plan.prompt_examples]
    pool, pool_labels = rows("train")
    # Balanced demonstrations, distinct, in shuffled order: the prompting protocol's own draw.
    pool_data = LabelledData(pool, pool_labels.tolist(), list(ctx.plan.labels), "train")
    demo = sample_demonstrations(pool_data, ctx.plan.shots, ctx.seed)
    words = list(ctx.plan.labels)
    bundle = load("smollm2-135m-instruct")
    assert bundle.tokenizer is not None
    scorer = PromptScorer(bundle.model, bundle.tokenizer, "sum", False, 16, cached=True)
    template = PromptTemplate(ctx.plan.template, "", "\n\n")
    results: Summary = {
        "examples": len(texts),
        "template": ctx.plan.template,
        "label_words": words,
        "rows": [],
    }
    for shots in (0, ctx.plan.shots):
        start = time.perf_counter()
        demos = [(pool[i], words[pool_labels[i]]) for i in demo[:shots]]
        logprobs = scorer.score(template, texts + list(CONTENT_FREE_INPUTS), words, demos)
        test, content_free = logprobs[: len(texts)], logprobs[len(texts) :]
        methods = {
            "none": prompt_probs(test),
            "contextual": contextual_calibrate(test, content_free),
            "batch": batch_calibrate(test),
        }
        for method, probs in methods.items():
            row = {"shots": shots, "calibration": method, **scores(probs, labels, ctx.seed)}
            results["rows"].append({**row, "seconds": time.perf_counter() - start})
    return results


def compress(ctx: Context) -> Summary:
    """The chosen classifier quantized to int8 (dynamic): accuracy, ECE and NLL before, after and
    recalibrated, weight file size, and test-set throughput of both."""
    from lmforge.api import load
    from lmforge.compress import QuantizeConfig, quantize
    from lmforge.compress.report import EvalData
    from lmforge.data import TaskDataConfig
    from lmforge.models.io.checkpoint import WEIGHTS_NAME

    best = ctx.done["evaluate"]["best"]
    source = ctx.path(f"finetune-{best}")
    evaluation = EvalData(
        data=str(ctx.split("test")), fit_data=str(ctx.split("validation")),
        config=TaskDataConfig(label_names=ctx.plan.labels),
    )  # fmt: skip
    report = quantize(source, ctx.path("compressed"), QuantizeConfig("int8"), evaluation)
    texts = [row["text"] for row in ctx.rows("test")]
    speed = {}
    for name, path in (("before", source), ("after", ctx.path("compressed"))):
        model = load(path)
        model.logits(texts[:32])  # warm-up
        start = time.perf_counter()
        model.logits(texts)
        speed[name] = len(texts) / (time.perf_counter() - start)
    return {
        "model": best,
        "method": "int8",
        "calibration": report.get("calibration"),
        "file_bytes_before": (source / WEIGHTS_NAME).stat().st_size,  # as file_bytes_after counts
        "file_bytes_after": report.get("file_bytes"),
        "examples_per_second": speed,
    }


#: Stage name -> function, in run order.
STAGES: dict[str, Callable[[Context], Summary]] = {
    "data": data,
    "tokenizer": tokenizer,
    "pretrain": pretrain,
    "finetune-tiny": finetune_tiny,
    "finetune-minilm": finetune_minilm,
    "baseline": baseline,
    "evaluate": evaluate,
    "calibrate": calibrate,
    "prompt": prompt,
    "compress": compress,
}

#: Stage name -> the folders it writes (cleared before it runs again, unless it resumes).
OUTPUTS: dict[str, tuple[str, ...]] = {
    "data": ("data",),
    "tokenizer": ("tokenizer", "tokens"),
    "pretrain": ("pretrain",),
    "finetune-tiny": ("finetune-tiny",),
    "finetune-minilm": ("finetune-minilm",),
    "baseline": ("baseline",),
    "evaluate": ("eval",),
    "calibrate": ("calibration",),
    "prompt": (),
    "compress": ("compressed",),
}

#: Stages that continue from their newest checkpoint when an earlier run was interrupted.
RESUMABLE = frozenset({"pretrain", "finetune-tiny", "finetune-minilm"})
