"""Hyperparameter search over fine-tuning runs with Optuna (``lmforge tune``).

Each trial samples a point of the search space (:mod:`lmforge.train.search_space`) and runs the
ordinary fine-tuning harness (:func:`~lmforge.train.finetune_run.run_finetune`) into
``RUN/trials/<number>/``; its value is the trial's best validation metric. After every validation
the trial reports the metric (step = the k-th validation, which is the epoch when validating once
an epoch, so trials with different batch sizes compare at the same point) and a median pruner may
stop it early. The study lives in an SQL database (SQLite by default, ``RUN/study.db``): running the
same command again loads it and runs only the trials still missing to reach ``trials``.

Outputs, rewritten after every trial so an interrupted search still leaves them:
``RUN/trials.json`` (every trial's state, value, parameters and intermediate values),
``RUN/tune.json`` (settings, space, best trial) and ``RUN/best.yaml``, a recipe of
``lmforge finetune`` options that reproduces the best trial (``lmforge finetune --config
RUN/best.yaml --out DIR``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml

from lmforge.data import TaskDataConfig
from lmforge.errors import ConfigError
from lmforge.fileio import atomic_write_text, check_output_dir
from lmforge.tasks import get_task
from lmforge.train.finetune import Evaluator, FinetuneConfig
from lmforge.train.finetune_run import run_finetune
from lmforge.train.search_space import ParamSpace, apply_params, load_search_space
from lmforge.train.validation import validate_finetune_config

__all__ = ["TuneConfig", "finetune_recipe", "run_tune"]

_LOWER_IS_BETTER = ("loss", "log_loss", "val_loss")
_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@dataclass
class TuneConfig:
    """How to search (the options of ``lmforge tune`` beyond the fine-tuning ones).

    Attributes:
        trials: total finished (complete or pruned) trials the study should hold; a re-run of a
            study that has ``k`` runs ``trials - k`` more.
        sampler: ``tpe`` (Bayesian: tree-structured Parzen estimator) or ``random``.
        study_name: the study's name in the storage.
        storage: an Optuna storage URL; ``None``: ``sqlite:///RUN/study.db``.
        pruner: ``median`` (stop a trial whose intermediate metric is below the median of earlier
            trials at the same validation) or ``none``.
        pruner_startup_trials: finished trials before the pruner may stop any.
        tpe_startup_trials: random trials before TPE starts modelling.
        keep_models: keep every trial's weights; by default only the best trial's are kept.
        seed: seeds the sampler (each resumed session offsets it by the trials already run).
    """

    trials: int = 20
    sampler: Literal["tpe", "random"] = "tpe"
    study_name: str = "lmforge-tune"
    storage: str | None = None
    pruner: Literal["median", "none"] = "median"
    pruner_startup_trials: int = 2
    tpe_startup_trials: int = 5
    keep_models: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ConfigError(f"--trials (trials) = {self.trials}: need at least one trial")
        if self.sampler not in ("tpe", "random"):
            raise ConfigError(f"--sampler (sampler) = {self.sampler!r}: use tpe or random")
        if self.pruner not in ("median", "none"):
            raise ConfigError(f"--pruner (pruner) = {self.pruner!r}: use median or none")
        if self.pruner_startup_trials < 0 or self.tpe_startup_trials < 0:
            raise ConfigError("pruner_startup_trials and tpe_startup_trials must be >= 0")


def _sampler(config: TuneConfig, offset: int) -> optuna.samplers.BaseSampler:
    # A resumed session gets a fresh seed: the same seed would re-propose the first trials' points.
    seed = config.seed + offset
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=config.tpe_startup_trials)
    raise ConfigError(f"sampler={config.sampler!r}: use tpe or random")


def _pruner(config: TuneConfig) -> optuna.pruners.BasePruner:
    if config.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=config.pruner_startup_trials, n_warmup_steps=0)
    if config.pruner == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"pruner={config.pruner!r}: use median or none")


def _local(path: str | Path | None) -> str | None:
    """Absolute path for a file or folder that exists (recipes work from any directory), else as given."""
    if path is None:
        return None
    return str(Path(path).resolve()) if Path(path).exists() else str(path)


def finetune_recipe(
    model: str | Path,
    data: str | Path,
    config: FinetuneConfig,
    validation: str | Path | None = None,
    data_config: TaskDataConfig | None = None,
) -> dict[str, Any]:
    """The ``lmforge finetune`` options (as recipe keys) that run ``config`` on this model and data."""
    data_config = data_config or TaskDataConfig()
    recipe: dict[str, Any] = {
        "task": config.task, "model": _local(model), "data": _local(data), "validation": _local(validation),
        "text_column": data_config.text_column, "label_column": data_config.label_column,
        "text_pair_column": data_config.text_pair_column, "limit": data_config.limit,
        "on_error": data_config.on_error if data_config.on_error != "raise" else None,
        "max_length": config.max_length, "batch_size": config.batch_size, "epochs": config.epochs,
        "max_steps": config.max_steps, "lr": config.optim.lr, "weight_decay": config.optim.weight_decay,
        "warmup_ratio": config.warmup_ratio, "schedule": config.optim.schedule, "freeze": config.freeze,
        "freeze_layers": config.freeze_layers, "layer_decay": config.layer_decay,
        "class_weights": config.class_weights, "resample": config.resample,
        "label_smoothing": config.label_smoothing, "dropout": config.dropout, "metric": config.metric,
        "patience": config.patience, "eval_every": config.eval_every, "seed": config.seed,
        "length_groups": config.length_groups,
    }  # fmt: skip
    if config.lora_rank:
        recipe.update(
            lora_rank=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_targets=",".join(config.lora_targets),
        )
    return {k: v for k, v in recipe.items() if v is not None}


def _trial_record(trial: optuna.trial.FrozenTrial, out: Path) -> dict[str, Any]:
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "value": trial.value,
        "params": trial.params,
        "intermediate_values": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
        "seconds": duration,
        "dir": str(out / "trials" / str(trial.number)),
        **{k: v for k, v in trial.user_attrs.items() if k in ("steps", "config")},
    }


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return study.best_trial if complete else None


def _drop_weights(out: Path, keep: int | None) -> None:
    """Delete the weights of every trial but ``keep`` (a search of N trials would hold N models)."""
    trials_dir = out / "trials"
    if not trials_dir.is_dir():
        return
    for trial_dir in trials_dir.iterdir():
        if trial_dir.name != str(keep):
            for weights in trial_dir.rglob("*.safetensors"):
                weights.unlink()


def _write_outputs(study: optuna.Study, out: Path, summary: dict[str, Any]) -> dict[str, Any]:
    records = [_trial_record(t, out) for t in study.trials]
    atomic_write_text(out / "trials.json", json.dumps(records, indent=2) + "\n")
    best = _best_trial(study)
    counts: dict[str, int] = {}
    for trial in study.trials:
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    summary = {**summary, "states": counts, "best": None}
    if best is not None:
        recipe = best.user_attrs["recipe"]
        summary["best"] = {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "recipe": recipe,
        }
        header = (
            f"# lmforge tune: study {study.study_name!r}, best of {len(records)} trials: trial {best.number}, "
            f"validation {summary['metric']} {best.value:.6g}\n"
            f"# lmforge finetune --config {out / 'best.yaml'} --out RUN   (flags override these values)\n"
        )
        atomic_write_text(out / "best.yaml", header + yaml.safe_dump(recipe, sort_keys=False))
    atomic_write_text(out / "tune.json", json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def run_tune(
    model: str | Path,
    data: str | Path,
    out_dir: str | Path,
    base: FinetuneConfig,
    tune: TuneConfig,
    space: Mapping[str, ParamSpace] | str | Path | None = None,
    validation: str | Path | None = None,
    data_config: TaskDataConfig | None = None,
    evaluator: Evaluator | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Search fine-tuning hyperparameters; resume the study if ``tune.storage`` already holds it.

    Args:
        model: checkpoint dir, transformers dir or model asset (as ``run_finetune``).
        data: training file or named dataset.
        out_dir: ``RUN``: trial runs, ``study.db`` (default storage) and the outputs.
        base: settings shared by every trial; the searched fields are replaced per trial, and
            ``base.metric`` is the objective (maximised, minimised for losses).
        tune: search settings.
        space: a search space, a YAML file of one, or ``None`` for the default.
        validation: validation file (named datasets use their validation split); required.
        data_config: columns and error handling.
        evaluator: validation metrics (the CLI passes ``lmforge.evaluate``'s).
        pruner: an Optuna pruner replacing ``tune.pruner`` (tests).
        log: one line per trial.

    Returns:
        The summary written to ``RUN/tune.json``: ``best`` (``number``, ``value``, ``params``,
        ``recipe``), ``states`` (trial counts), ``ran`` (trials run by this call) and settings.
    """
    from lmforge.data import TASK_DATASETS

    out = check_output_dir(out_dir)
    validate_finetune_config(base)
    if validation is None and not (not Path(data).exists() and str(data) in TASK_DATASETS):
        raise ConfigError(
            f"{data}: tuning needs validation data (--validation VAL), which scores every trial"
        )
    params = space if isinstance(space, Mapping) else load_search_space(space)
    # Read the data once before the study: a wrong column or label set then fails here, with the
    # run directory untouched, instead of inside every trial.
    task, read_config = get_task(base.task), data_config or TaskDataConfig()
    label_names = task.label_names(task.read(data, "train", read_config))
    task.read(
        validation if validation is not None else data,
        "validation",
        dataclasses.replace(read_config, label_names=tuple(label_names)),
    )
    out.mkdir(parents=True, exist_ok=True)
    metric = base.metric
    direction: Literal["minimize", "maximize"] = "minimize" if metric in _LOWER_IS_BETTER else "maximize"
    storage = tune.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=tune.study_name, storage=storage, direction=direction, load_if_exists=True,
        pruner=pruner or _pruner(tune),
    )  # fmt: skip
    stored_metric = study.user_attrs.get("metric")
    if stored_metric is not None and stored_metric != metric:
        raise ConfigError(
            f"study {tune.study_name!r} in {storage} optimises {stored_metric!r}, not {metric!r}: "
            "pass the same --metric or a new --study-name"
        )
    study.set_user_attr("metric", metric)
    for trial in study.trials:  # left RUNNING by an interrupted session: it will never finish
        if trial.state == optuna.trial.TrialState.RUNNING:
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    done = sum(t.state in _FINISHED for t in study.trials)
    remaining = max(0, tune.trials - done)
    study.sampler = _sampler(tune, len(study.trials))
    summary: dict[str, Any] = {
        "study_name": tune.study_name, "storage": storage, "sampler": tune.sampler, "pruner": tune.pruner,
        "metric": metric, "direction": direction, "trials": tune.trials, "ran": remaining,
        "space": {name: p.describe() for name, p in params.items()}, "model": str(model), "data": str(data),
    }  # fmt: skip
    if remaining == 0:
        log(
            f"study {tune.study_name!r} already has {done} finished trials (of {tune.trials}): nothing to run"
        )
    # A trial is not resumed (the study runs the missing trials again): it needs no checkpoints.
    trial_base = dataclasses.replace(base, progress=False, keep_last=0)

    def objective(trial: optuna.Trial) -> float:
        values = {name: p.suggest(trial, name) for name, p in params.items()}
        config = apply_params(trial_base, values)
        recipe = finetune_recipe(model, data, config, validation, data_config)
        trial.set_user_attr("recipe", recipe)
        evaluations = 0

        def on_evaluate(step: int, metrics: dict[str, Any]) -> None:
            nonlocal evaluations
            evaluations += 1
            trial.report(float(metrics[metric]), evaluations)
            if trial.should_prune():
                raise optuna.TrialPruned(f"{metric} {metrics[metric]:.4f} at validation {evaluations}")

        report = run_finetune(
            model, data, out / "trials" / str(trial.number), config, validation, data_config, evaluator,
            on_evaluate=on_evaluate,
        )  # fmt: skip
        trial.set_user_attr("steps", report["steps"])
        best = report.get("best") or {}
        if metric not in best:
            raise ConfigError(f"trial {trial.number}: no validation {metric!r} in the report")
        return float(best[metric])

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        best = _best_trial(study)
        if not tune.keep_models:
            _drop_weights(out, None if best is None else best.number)
        shown = "  ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()
        )
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        log(f"trial {trial.number} {trial.state.name.lower()}: {metric} {value}  {shown}")
        _write_outputs(study, out, summary)

    started = time.perf_counter()
    if remaining:
        study.optimize(objective, n_trials=remaining, callbacks=[after_trial])
    summary["seconds"] = time.perf_counter() - started
    return _write_outputs(study, out, summary)
