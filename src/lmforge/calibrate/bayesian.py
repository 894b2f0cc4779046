"""Bayesian predictive averaging for fine-tuned classifiers: MC dropout and deep ensembles.

Both average *probabilities* (not logits) over members, approximating the posterior predictive
p(y | x, D) = E_theta[p(y | x, theta)]: MC dropout samples theta by keeping dropout on at test time
(Gal & Ghahramani 2016), deep ensembles by training K models from different seeds
(Lakshminarayanan et al. 2017). The result can be calibrated further (pass ``log(probs)`` as the
logits of any calibrator).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from lmforge.errors import CalibrationError

if TYPE_CHECKING:
    from lmforge.data.tasks import TaskDataConfig

# Keys of a batch that are model inputs; others (labels, ids) are ignored by the forward pass.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
ForwardFn = Callable[[nn.Module, Mapping[str, Any]], torch.Tensor]


def classifier_logits(model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    """Default forward: ``model(**inputs).logits`` (or the output itself if it is a tensor). [B, C]."""
    out = model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS})
    return out if isinstance(out, torch.Tensor) else out.logits


@dataclass
class PredictiveResult:
    """Averaged predictions.

    Attributes:
        probs: [N, C] mean probability over members (passes or models).
        member_probs: [K, N, C] each member's probabilities.
        labels: [N] labels collected from the batches' ``"labels"`` key, or None.
    """

    probs: np.ndarray
    member_probs: np.ndarray
    labels: np.ndarray | None

    def predictive_entropy(self) -> np.ndarray:
        """Entropy of the averaged prediction (total uncertainty), nats. [N]."""
        return -np.sum(self.probs * np.log(np.clip(self.probs, 1e-12, 1.0)), axis=1)

    def mutual_information(self) -> np.ndarray:
        """Predictive entropy minus mean member entropy (epistemic uncertainty, BALD), nats. [N]."""
        member_entropy = -np.sum(self.member_probs * np.log(np.clip(self.member_probs, 1e-12, 1.0)), axis=2)
        return self.predictive_entropy() - member_entropy.mean(axis=0)


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _to(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _predict(
    members: Sequence[Callable[[Mapping[str, Any]], torch.Tensor]], batches: Iterable[Mapping[str, Any]]
) -> PredictiveResult:
    """Run every member on each batch (batches are iterated once, so a generator works)."""
    per_batch: list[np.ndarray] = []  # each (K, B, C)
    labels: list[np.ndarray] = []
    for batch in batches:
        with torch.no_grad():
            probs = [torch.softmax(member(batch).double(), dim=-1).cpu().numpy() for member in members]
        if len({p.shape for p in probs}) != 1:
            raise CalibrationError(f"members disagree on output shape: {sorted({p.shape for p in probs})}")
        per_batch.append(np.stack(probs))
        if "labels" in batch:
            labels.append(np.asarray(torch.as_tensor(batch["labels"]).cpu().numpy()))
    if not per_batch:
        raise CalibrationError("no batches: the batch iterator was empty")
    member_probs = np.concatenate(per_batch, axis=1)  # (K, N, C)
    all_labels = np.concatenate(labels) if len(labels) == len(per_batch) else None
    return PredictiveResult(member_probs.mean(axis=0), member_probs, all_labels)


def has_dropout(model: nn.Module) -> bool:
    """True when some dropout in ``model`` has a non-zero rate."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "dropout", 0.0) > 0:
        return True
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


def mc_dropout_predict(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    num_passes: int = 10,
    seed: int = 0,
    forward: ForwardFn = classifier_logits,
) -> PredictiveResult:
    """MC dropout: ``num_passes`` stochastic forward passes per batch with dropout on, averaged.

    Only dropout is switched on: the model is put in training mode except batch-norm layers, which
    keep their running statistics; every module's mode is restored afterwards. The dropout masks
    come from a seeded generator forked from the global one, so results are reproducible and the
    caller's random state is untouched.

    Args:
        model: a classifier (an lmforge ``sequence_classification`` model or any module that
            ``forward`` can call). Its dropout rate must be > 0 (``config.dropout``).
        batches: iterable of dicts with ``input_ids`` [B, T] and optionally ``attention_mask``,
            ``token_type_ids``, ``labels`` [B].
        num_passes: N stochastic passes.
        seed: seed of the dropout masks.
        forward: ``forward(model, batch) -> logits [B, C]``.
    """
    if num_passes < 1:
        raise CalibrationError(f"MC dropout needs num_passes >= 1, got {num_passes}")
    if not has_dropout(model):
        raise CalibrationError(
            "MC dropout needs a model with dropout > 0 (config.dropout is 0): fine-tune with dropout, "
            "or use deep ensembles"
        )
    device = _device(model)
    modes = {m: m.training for m in model.modules()}
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    fork_devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)
            passes = [lambda b: forward(model, _to(b, device))] * num_passes
            return _predict(passes, batches)
    finally:
        for m, training in modes.items():
            m.train(training)


def ensemble_predict(
    models: Sequence[nn.Module],
    batches: Iterable[Mapping[str, Any]],
    forward: ForwardFn = classifier_logits,
) -> PredictiveResult:
    """Deep ensemble: the mean of K models' softmax probabilities (each model in eval mode).

    Args:
        models: K classifiers with the same label set (e.g. loaded from K checkpoints).
        batches: as in :func:`mc_dropout_predict`; each batch is run through every model.
        forward: ``forward(model, batch) -> logits [B, C]``.
    """
    if not models:
        raise CalibrationError("a deep ensemble needs at least one model")
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        members = [
            (lambda b, m=m: forward(m, _to(b, _device(m))))  # bind m now, not at call time
            for m in models
        ]
        result = _predict(members, batches)
    finally:
        for m, training in zip(models, modes):
            m.train(training)
    return result


def predict_classifier_dataset(
    models: Sequence[str | Path],
    data: str | Path,
    split: str = "test",
    data_config: TaskDataConfig | None = None,
    *,
    mc_passes: int = 0,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """The Bayesian predictive of fine-tuned classifiers on a split (``lmforge evaluate --ensemble / --mc-dropout``).

    Every checkpoint is one member of a deep ensemble; with ``mc_passes`` > 0 each checkpoint
    instead contributes that many MC-dropout passes (one checkpoint: plain MC dropout; several:
    an ensemble of MC-dropout models). Each checkpoint tokenises the split with its own tokenizer
    and maximum length, so members of different sizes or vocabularies can be mixed; they must
    share the task and the label names.

    Returns:
        The shape of :func:`lmforge.train.finetune_run.predict_dataset`, with ``outputs`` the log
        of the averaged probabilities [N, C] (any calibrator can take them as logits), plus
        ``predictive`` (method, members, passes) and ``uncertainty`` arrays
        (``predictive_entropy``, ``mutual_information``, [N] nats).
    """
    from lmforge.tasks.sources import to_tensors
    from lmforge.train.finetune_run import load_finetuned, load_split

    if not models:
        raise CalibrationError("no checkpoints given")
    if mc_passes < 0:
        raise CalibrationError(f"--mc-dropout must be >= 0 passes, got {mc_passes}")
    if len(models) == 1 and mc_passes == 0:
        raise CalibrationError("one checkpoint and no MC-dropout passes is not a Bayesian predictive")
    member_probs: list[np.ndarray] = []
    references: list[int] | None = None
    names: list[str] | None = None
    source = ""
    for model_path in models:
        loaded, task, labels = load_finetuned(model_path)
        if loaded.config.head != "sequence_classification":
            raise CalibrationError(
                f"{model_path}: MC dropout and deep ensembles need a classifier, not {task}"
            )
        if names is not None and labels != names:
            raise CalibrationError(
                f"{model_path}: label names {labels} differ from the first member's {names}"
            )
        split_data, examples = load_split(loaded, task, labels, data, split, data_config)
        source = examples.source
        if references is not None and list(split_data.references) != references:
            raise CalibrationError(f"{model_path}: its labels of {data} differ from the first member's")
        names, references = labels, list(split_data.references)
        batches = (
            to_tensors(split_data.source.collate(i, np.random.default_rng(0)), torch.device("cpu"))
            for i in split_data.source.ordered_batches(batch_size)
        )
        if mc_passes:
            result = mc_dropout_predict(loaded.model, batches, mc_passes, seed)
        else:
            result = ensemble_predict([loaded.model], batches)
        member_probs.append(result.member_probs)
    assert references is not None and names is not None
    stacked = np.concatenate(member_probs)  # (K * passes, N, C)
    predictive = PredictiveResult(stacked.mean(axis=0), stacked, np.asarray(references))
    log_probs = np.log(np.clip(predictive.probs, 1e-12, 1.0))
    return {
        "task": "classification",
        "label_names": names,
        "outputs": log_probs.astype(np.float32),
        "references": references,
        "loss": float(-log_probs[np.arange(len(references)), references].mean()),  # NLL of the average
        "source": source,
        "predictive": {
            "method": ("mc_dropout" if len(models) == 1 else "mc_dropout_ensemble")
            if mc_passes
            else "deep_ensemble",
            "checkpoints": [str(m) for m in models],
            "mc_passes": mc_passes,
            "seed": seed,
            "members": int(stacked.shape[0]),
        },
        "uncertainty": {
            "predictive_entropy": predictive.predictive_entropy(),
            "mutual_information": predictive.mutual_information(),
        },
    }
