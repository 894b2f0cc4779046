"""The top-level Python API: models loaded together with what later stages stored beside them.

:func:`load` is ``lmforge.load``. It reads the model like :func:`lmforge.models.io.checkpoint.load`
and, when the directory holds a calibrator (``lmforge calibrate --save-into``), attaches it, so
``lmforge.load(dir).predict_proba(texts)`` returns calibrated probabilities. This module sits above
every stage (models may not import calibrate: data flows one way), just below the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge.calibrate.base import Calibrator, softmax
from lmforge.calibrate.bayesian import mc_dropout_predict
from lmforge.calibrate.io import load_calibrator, saved_predictive
from lmforge.config import Head
from lmforge.data import TaskDataConfig
from lmforge.errors import CalibrationError, ConfigError, UnsupportedError
from lmforge.models.io import checkpoint
from lmforge.models.io.checkpoint import LoadedModel

Inputs = str | Sequence[str] | Sequence[Sequence[int]] | torch.Tensor | Mapping[str, torch.Tensor]


@dataclass
class CalibratedModel(LoadedModel):
    """A :class:`LoadedModel` (``.model``, ``.tokenizer``, ``.config``, ``.source``) plus the
    calibrator saved with it (``None`` when there is none) and the predictive it was fitted on
    (``None``: one deterministic forward pass; ``{"method": "mc_dropout", "mc_passes": N, "seed": S}``:
    N dropout passes averaged, as ``lmforge evaluate --mc-dropout N`` made them)."""

    calibrator: Calibrator | None = None
    predictive: dict[str, Any] | None = None

    def logits(self, inputs: Inputs, batch_size: int = 32) -> np.ndarray:
        """Classifier logits [N, C] (float64) of a sequence-classification model.

        Args:
            inputs: a text or list of texts (tokenised with ``.tokenizer``), token ids as a
                [B, T] / [T] tensor or a list of id lists (unpadded lists are right-padded and
                masked), or a ``batch_encode`` dict with ``input_ids`` and ``attention_mask``.
            batch_size: texts per forward pass.
        """
        self._check_classifier()
        device = next(self.model.parameters()).device
        outputs = []
        self.model.eval()
        with torch.inference_mode():
            for batch in self._batches(inputs, batch_size):
                batch = {k: v.to(device) for k, v in batch.items()}
                outputs.append(self.model(**batch).logits.double().cpu().numpy())
        return np.concatenate(outputs)

    def predict_proba(self, inputs: Inputs, batch_size: int = 32) -> np.ndarray:
        """Class probabilities [N, C]: the calibrator applied to the logits, or softmax without one.

        A calibrator fitted on MC-dropout predictions (``predictive``) gets them here too: N seeded
        dropout passes are averaged and their log-probabilities calibrated, the predictive that
        ``lmforge evaluate --mc-dropout N`` gave ``lmforge calibrate`` (the masks differ with the
        batching, the distribution does not)."""
        if self.calibrator is None:
            return softmax(self.logits(inputs, batch_size))
        if self.predictive is None:
            return self.calibrator.predict_proba(self.logits(inputs, batch_size))
        self._check_classifier()
        result = mc_dropout_predict(
            self.model,
            self._batches(inputs, batch_size),
            int(self.predictive["mc_passes"]),
            int(self.predictive.get("seed", 0)),
        )
        return self.calibrator.predict_proba(np.log(np.clip(result.probs, 1e-12, 1.0)))

    def _check_classifier(self) -> None:
        if self.config.head != "sequence_classification":
            raise UnsupportedError(
                f"{self.source}: predict_proba needs a sequence_classification model, this one has head "
                f"{self.config.head!r}"
            )

    def _batches(self, inputs: Inputs, batch_size: int) -> list[dict[str, torch.Tensor]]:
        if isinstance(inputs, Mapping):
            return [dict(inputs)]
        if isinstance(inputs, torch.Tensor):
            ids = inputs if inputs.dim() == 2 else inputs.unsqueeze(0)
            return [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}]
        if isinstance(inputs, str):
            inputs = [inputs]
        items = list(inputs)
        if not items:
            raise ConfigError("predict_proba got no inputs")
        if all(isinstance(x, str) for x in items):
            if self.tokenizer is None:
                raise ConfigError(
                    f"{self.source}: no tokenizer saved with this model; pass token ids instead"
                )
            texts = [str(x) for x in items]
            # Cut as fine-tuning and `lmforge evaluate` cut (the recorded max_length, capped at the
            # model's positions), so these probabilities are the ones that were evaluated and calibrated.
            recorded = self.config.extra.get("max_length")
            limit = min(int(recorded), self.config.max_positions) if recorded else self.config.max_positions
            return [
                self.tokenizer.batch_encode(texts[i : i + batch_size], max_length=limit)
                for i in range(0, len(texts), batch_size)
            ]
        id_lists = [list(map(int, x)) for x in items]  # type: ignore[arg-type]
        batches = []
        for i in range(0, len(id_lists), batch_size):
            chunk = id_lists[i : i + batch_size]
            width = max(len(x) for x in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            for row, x in enumerate(chunk):
                ids[row, : len(x)] = torch.tensor(x, dtype=torch.long)
                mask[row, : len(x)] = 1
            batches.append({"input_ids": ids, "attention_mask": mask})
        return batches


def load(
    name_or_path: str | Path,
    head: Head | None = None,
    num_labels: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    calibrated: bool = True,
    packed: bool = False,
) -> CalibratedModel:
    """Load a model (any source :func:`lmforge.models.io.checkpoint.load` accepts) with its calibrator.

    Args:
        name_or_path: checkpoint or transformers directory, ``.gguf`` file or asset name.
        head: replace the checkpoint's head; a saved calibrator is then not attached (it was
            fitted on the old head's logits).
        num_labels: number of labels of a new classification head (same rule as ``head``).
        dtype: parameter dtype.
        device: where to put the model.
        calibrated: attach ``calibrator.json`` when the directory has one.
        packed: GGUF files: keep Q8_0 / Q4_0 / Q4_1 weights packed instead of dequantizing them.

    Raises:
        CalibrationError: the saved calibrator is unreadable or its class count differs from the
            classifier's ``num_labels``.
    """
    bundle = checkpoint.load(
        name_or_path, head=head, num_labels=num_labels, dtype=dtype, device=device, packed=packed
    )
    calibrator, predictive = None, None
    path = Path(bundle.source)
    head_changed = (head is not None or num_labels is not None) and not _same_head(path, head, num_labels)
    if calibrated and path.is_dir() and not head_changed:
        calibrator = load_calibrator(path)
        if (
            calibrator is not None
            and bundle.config.head == "sequence_classification"
            and calibrator.num_classes != bundle.config.num_labels
        ):
            raise CalibrationError(
                f"{path}: calibrator.json is for {calibrator.num_classes} classes but the classifier has "
                f"num_labels = {bundle.config.num_labels}; re-run lmforge calibrate --save-into"
            )
        predictive = saved_predictive(path) if calibrator is not None else None
    return CalibratedModel(
        bundle.model, bundle.tokenizer, bundle.config, bundle.source, calibrator, predictive
    )


def _same_head(path: Path, head: Head | None, num_labels: int | None) -> bool:
    """Whether an explicit head / num_labels just restates what the checkpoint already has."""
    import json

    try:
        saved: dict[str, Any] = json.loads((path / "config.json").read_text(encoding="utf-8")).get(
            "lmforge", {}
        )
    except (OSError, ValueError, AttributeError):
        return False
    return (head is None or saved.get("head") == head) and (
        num_labels is None or saved.get("num_labels") == num_labels
    )


def evaluate_model(
    model: str | Path,
    data: str | Path,
    out_dir: str | Path,
    *,
    split: str = "test",
    data_config: TaskDataConfig | None = None,
    ensemble: Sequence[str | Path] = (),
    mc_dropout: int = 0,
    batch_size: int = 64,
    null_threshold: float | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run a fine-tuned model on a split and write its evaluation folder (``lmforge evaluate``).

    Args:
        model: a fine-tuned run directory (``lmforge finetune --out``).
        data: test file or named dataset.
        out_dir: evaluation folder: metrics.json, logits.npz, PNGs, summary.html (and the task's
            extras, see :func:`lmforge.evaluate.evaluate_result`).
        split: split of a named dataset.
        data_config: column names and error handling.
        ensemble: classifiers: more runs averaged with ``model`` (a deep ensemble).
        mc_dropout: classifiers: N stochastic passes with dropout on, averaged; 0: off.
        batch_size: examples per forward pass.
        null_threshold: QA (SQuAD v2): override the run's no-answer threshold.
        seed: seed of the MC-dropout masks.
        threads: torch CPU threads (``None``: torch's default).

    Returns:
        ``(result, metrics)``: the predictions (see
        :func:`lmforge.train.finetune_run.predict_dataset`) and the metrics written.
    """
    from lmforge.calibrate.bayesian import predict_classifier_dataset
    from lmforge.evaluate import evaluate_result
    from lmforge.fileio import check_output_dir
    from lmforge.runtime import torch_threads
    from lmforge.train.finetune_run import predict_dataset

    check_output_dir(out_dir)
    if batch_size < 1:
        raise ConfigError(f"--batch-size (batch_size) = {batch_size}: must be >= 1")
    if mc_dropout < 0:
        raise ConfigError(f"--mc-dropout (mc_dropout) = {mc_dropout}: must be >= 0 (0: off)")
    members = [model, *ensemble]
    with torch_threads(threads):
        if len(members) > 1 or mc_dropout:
            result = predict_classifier_dataset(
                members, data, split, data_config, mc_passes=mc_dropout, batch_size=batch_size, seed=seed
            )
        else:
            result = predict_dataset(
                model, data, split, data_config, batch_size=batch_size, null_threshold=null_threshold
            )
    log = Path(model) / "metrics.jsonl"  # the run's learning curves, when it has them
    metrics = evaluate_result(
        result, out_dir, metrics_log=log if log.is_file() else None, extra={"model": str(model)}
    )
    return result, metrics
