"""Reading logits/labels files and saving calibrators inside checkpoints (JSON + safetensors).

Logits files (what ``lmforge evaluate`` writes, or anything a user brings):

* ``.npz`` / ``.pt``: arrays ``logits`` [N, C] (or ``probs`` [N, C]) and ``labels`` [N];
* ``.csv``: a header row, a label column (``label`` by default) and one column of probabilities
  per class, in class order; labels are class indices or the names of the probability columns.

Probabilities are returned as their logs, which every calibrator accepts as logits (softmax of
log p is p again).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.calibrate.base import Calibrator
from lmforge.calibrate.registry import calibrator_from_state_dict
from lmforge.errors import CalibrationError
from lmforge.fileio import atomic_write, atomic_write_text, read_json_object
from lmforge.version import __version__

CALIBRATOR_JSON = "calibrator.json"
CALIBRATOR_TENSORS = "calibrator.safetensors"
_PROB_TOLERANCE = 1e-3


def _probs_to_logits(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probs, 1e-12, 1.0))


def load_logits_file(path: str | Path, label_column: str = "label") -> tuple[np.ndarray, np.ndarray]:
    """Read ``(logits [N, C] float64, labels [N] int64)`` from a ``.npz``, ``.pt`` or ``.csv`` file.

    Raises:
        CalibrationError: the file is missing or unreadable, a field is absent, or shapes and label
            values disagree; the message names the file and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        logits, labels = _read_csv(path, label_column)
    elif suffix in (".npz", ".pt", ".pth"):
        arrays = _read_npz(path) if suffix == ".npz" else _read_pt(path)
        if "logits" in arrays:
            logits = np.asarray(arrays["logits"], dtype=np.float64)
        elif "probs" in arrays:
            logits = _probs_to_logits(np.asarray(arrays["probs"], dtype=np.float64))
        else:
            raise CalibrationError(
                f"{path}: no 'logits' array (found: {', '.join(sorted(arrays)) or 'nothing'}); "
                "save logits [N, C] under the key 'logits' (or probabilities under 'probs')"
            )
        if "labels" not in arrays:
            raise CalibrationError(f"{path}: no 'labels' array (found: {', '.join(sorted(arrays))})")
        labels = np.asarray(arrays["labels"])
    else:
        raise CalibrationError(f"{path}: unsupported file type {suffix!r}; use .npz, .pt or .csv")
    return _validate(path, logits, labels)


def read_predictive(path: str | Path) -> dict[str, Any] | None:
    """How the predictions in a logits file were made, as ``lmforge evaluate --mc-dropout N`` /
    ``--ensemble`` records it (``method``, ``mc_passes``, ``seed``, ``members``, ``checkpoints``);
    None for a single deterministic forward pass or a file that does not say (CSV, ``.pt``)."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if "predictive" not in data.files:
                return None
            raw = str(data["predictive"])
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{path}: cannot read .npz ({exc})") from None
    try:
        predictive = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"{path}: field 'predictive' is not valid JSON ({exc.msg})") from None
    if not isinstance(predictive, dict) or "method" not in predictive:
        raise CalibrationError(f"{path}: field 'predictive' must be a JSON object with a 'method'")
    return predictive


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{path}: cannot read .npz ({exc})") from None


def _read_pt(path: Path) -> dict[str, np.ndarray]:
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise CalibrationError(f"{path}: cannot load ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise CalibrationError(
            f"{path}: expected a dict with 'logits' and 'labels', got {type(data).__name__}"
        )
    return {
        str(k): (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
        for k, v in data.items()
    }


def _read_csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise CalibrationError(f"{path}: empty CSV file")
        header = [h.strip() for h in header]
        if label_column not in header:
            raise CalibrationError(
                f"{path}: no label column {label_column!r} in the header ({', '.join(header)}); "
                "pass --label-column"
            )
        label_index = header.index(label_column)
        class_names = [h for i, h in enumerate(header) if i != label_index]
        if len(class_names) < 2:
            raise CalibrationError(f"{path}: need one probability column per class (>= 2), got {class_names}")
        probs, raw_labels = [], []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise CalibrationError(f"{path}:{line}: {len(row)} fields, header has {len(header)}")
            try:
                values = [float(v) for i, v in enumerate(row) if i != label_index]
            except ValueError:
                raise CalibrationError(f"{path}:{line}: probability columns must be numbers: {row}") from None
            if abs(sum(values) - 1.0) > _PROB_TOLERANCE or min(values) < 0:
                raise CalibrationError(
                    f"{path}:{line}: probabilities must be >= 0 and sum to 1, got sum {sum(values):.6g}"
                )
            probs.append(values)
            raw_labels.append(row[label_index].strip())
    if not probs:
        raise CalibrationError(f"{path}: no data rows")
    return _probs_to_logits(np.asarray(probs, dtype=np.float64)), _csv_labels(path, raw_labels, class_names)


def _csv_labels(path: Path, raw: list[str], class_names: list[str]) -> np.ndarray:
    """Labels as indices: integers as given, or names of the probability columns."""
    try:
        return np.asarray([int(v) for v in raw], dtype=np.int64)
    except ValueError:
        pass
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(set(raw) - set(index))
    if unknown:
        raise CalibrationError(
            f"{path}: label values {unknown[:5]} are neither class indices nor probability column names "
            f"({', '.join(class_names)})"
        )
    return np.asarray([index[v] for v in raw], dtype=np.int64)


def _validate(path: Path, logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise CalibrationError(
            f"{path}: field 'logits' must have shape [N, C] with C >= 2, got {logits.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise CalibrationError(
            f"{path}: field 'labels' must have shape [N] = [{logits.shape[0]}] to match 'logits' "
            f"{logits.shape}, got {labels.shape}"
        )
    if not np.all(np.isfinite(logits)):
        raise CalibrationError(f"{path}: field 'logits' contains NaN or infinite values")
    if labels.size and (
        not np.issubdtype(labels.dtype, np.number)
        or np.any(labels != np.round(labels))
        or labels.min() < 0
        or labels.max() >= logits.shape[1]
    ):
        raise CalibrationError(
            f"{path}: field 'labels' must hold integers in [0, {logits.shape[1] - 1}] (C = {logits.shape[1]})"
        )
    return logits, labels.astype(np.int64)


# -- calibrators inside checkpoints ------------------------------------------------------------


def save_calibrator(
    calibrator: Calibrator, checkpoint: str | Path, predictive: dict[str, Any] | None = None
) -> Path:
    """Store a fitted calibrator in a checkpoint directory as ``calibrator.json`` (method, params)
    plus ``calibrator.safetensors`` (arrays), each written atomically.

    ``predictive`` records the predictions the calibrator was fitted on when they were not one
    deterministic forward pass: ``{"method": "mc_dropout", "mc_passes": N, "seed": S}`` makes
    ``lmforge.load(checkpoint).predict_proba`` run the same N dropout passes before calibrating.

    The tensors are written first and the JSON last: the JSON names the arrays it expects, so a
    crash between the two leaves either the old pair or a mismatch that :func:`load_calibrator`
    reports, never a silently wrong calibrator.

    Raises:
        CalibrationError: ``checkpoint`` is not a model directory, or its classifier has a different
            number of labels than the calibrator.
    """
    from safetensors.numpy import save_file

    directory = Path(checkpoint)
    if not (directory / "config.json").is_file():
        raise CalibrationError(
            f"{directory}: not a checkpoint directory (no config.json); save the model first"
        )
    if predictive is not None and not _is_mc_dropout(predictive):
        raise CalibrationError(
            f"{directory}: a calibrator fitted on {predictive.get('method')} predictions cannot be shipped in "
            "one checkpoint, which cannot reproduce them; fit it on this checkpoint's own lmforge evaluate "
            "logits (plain or --mc-dropout N)"
        )
    state = calibrator.state_dict()
    check_calibrator_target(directory, int(state["num_classes"]))
    arrays = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in state["arrays"].items()}
    tensors_file = directory / CALIBRATOR_TENSORS
    if arrays:
        atomic_write(tensors_file, lambda tmp: save_file(arrays, str(tmp), metadata={"format": "np"}))
    else:
        tensors_file.unlink(missing_ok=True)
    payload = {
        "method": state["method"],
        "num_classes": state["num_classes"],
        "params": state["params"],
        "arrays": sorted(arrays),
        "lmforge_version": __version__,
    }
    if predictive is not None:
        payload["predictive"] = {k: predictive.get(k, 0) for k in ("method", "mc_passes", "seed")}
    return atomic_write_text(directory / CALIBRATOR_JSON, json.dumps(payload, indent=2) + "\n")


def check_calibrator_target(checkpoint: str | Path, num_classes: int) -> Path:
    """Refuse a checkpoint a calibrator of ``num_classes`` classes does not fit, before fitting it.

    A calibrator maps the logits of the classifier it was fitted on; stored in a model with another
    head (a base encoder, a causal LM) or another class count, ``lmforge.load(...).predict_proba``
    would calibrate logits it never saw. A ``config.json`` that names no head is accepted.

    Raises:
        CalibrationError: no ``config.json``, a model that is not a sequence classifier, or one with
            a different number of labels.
    """
    directory = Path(checkpoint)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise CalibrationError(
            f"--save-into {directory}: not a checkpoint directory (no config.json); save the model first"
        )
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"{config_file}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    config: dict[str, Any] = raw.get("lmforge", raw) if isinstance(raw, dict) else {}
    head = config.get("head")
    architectures = [str(a) for a in config.get("architectures") or []] if "head" not in config else []
    if (head is not None and head != "sequence_classification") or (
        architectures and not any(a.endswith("ForSequenceClassification") for a in architectures)
    ):
        kind = head or ", ".join(architectures)
        raise CalibrationError(
            f"--save-into {directory}: a {kind} model, not a classifier; a calibrator belongs in the "
            "sequence-classification checkpoint whose logits it was fitted on (lmforge finetune --out RUN)"
        )
    labels = config.get("num_labels")
    if labels is None and head is None and isinstance(config.get("id2label"), dict):
        labels = len(config["id2label"])
    if labels is not None and int(labels) != num_classes:
        raise CalibrationError(
            f"{directory}: the classifier has num_labels = {labels} but the calibrator was "
            f"fitted on {num_classes} classes"
        )
    return directory


def _is_mc_dropout(predictive: Any) -> bool:
    """Whether ``predictive`` is one a checkpoint can reproduce: MC dropout with N >= 1 passes."""
    return (
        isinstance(predictive, dict)
        and predictive.get("method") == "mc_dropout"
        and isinstance(predictive.get("mc_passes"), int)
        and predictive["mc_passes"] >= 1
        and isinstance(predictive.get("seed", 0), int)
    )


def _calibrator_payload(directory: Path) -> dict[str, Any] | None:
    """The parsed ``calibrator.json`` of a checkpoint directory, or None when it has none."""
    json_file = directory / CALIBRATOR_JSON
    if not json_file.is_file():
        return None
    return read_json_object(json_file, CalibrationError)


def saved_predictive(checkpoint: str | Path) -> dict[str, Any] | None:
    """The ``predictive`` a saved calibrator expects (see :func:`save_calibrator`), or None."""
    payload = _calibrator_payload(Path(checkpoint))
    predictive = None if payload is None else payload.get("predictive")
    if predictive is None:
        return None
    if not _is_mc_dropout(predictive):
        json_file = Path(checkpoint) / CALIBRATOR_JSON
        raise CalibrationError(
            f"{json_file}: field 'predictive' must be {{'method': 'mc_dropout', 'mc_passes': N >= 1, "
            f"'seed': S}}, got {predictive}"
        )
    return dict(predictive)


def load_calibrator(checkpoint: str | Path) -> Calibrator | None:
    """The calibrator saved in a checkpoint directory, or None when it holds none."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    directory = Path(checkpoint)
    payload = _calibrator_payload(directory)
    if payload is None:
        return None
    names = payload.get("arrays", [])
    arrays: dict[str, np.ndarray] = {}
    if names:
        try:
            arrays = load_file(str(directory / CALIBRATOR_TENSORS))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CalibrationError(
                f"{directory / CALIBRATOR_TENSORS}: cannot read ({exc}); re-run lmforge calibrate --save-into"
            ) from None
    if sorted(arrays) != sorted(names):
        raise CalibrationError(
            f"{directory}: {CALIBRATOR_JSON} lists arrays {sorted(names)} but {CALIBRATOR_TENSORS} holds "
            f"{sorted(arrays)}; re-run lmforge calibrate --save-into"
        )
    state = {k: payload.get(k) for k in ("method", "num_classes", "params")}
    state["arrays"] = arrays
    return calibrator_from_state_dict(state)
