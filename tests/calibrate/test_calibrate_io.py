"""Logits files (.npz / .pt / .csv) and calibrators saved inside checkpoint directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge.calibrate import get_calibrator
from lmforge.calibrate.io import (
    CALIBRATOR_JSON,
    CALIBRATOR_TENSORS,
    load_calibrator,
    load_logits_file,
    save_calibrator,
)
from lmforge.errors import CalibrationError

PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.25, 0.25, 0.5], [0.6, 0.3, 0.1]])
LABELS = np.array([0, 2, 2, 1])


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_npz_pt_and_csv_give_the_same_arrays(tmp_path: Path) -> None:
    logits = np.log(PROBS)
    np.savez(tmp_path / "a.npz", logits=logits, labels=LABELS)
    torch.save({"logits": torch.tensor(logits), "labels": torch.tensor(LABELS)}, tmp_path / "a.pt")
    csv = write_csv(
        tmp_path / "a.csv",
        ["neg,neu,label,pos"] + [f"{p[0]},{p[1]},{y},{p[2]}" for p, y in zip(PROBS, LABELS)],
    )
    for path in (tmp_path / "a.npz", tmp_path / "a.pt", csv):
        z, y = load_logits_file(path)
        np.testing.assert_allclose(np.exp(z) / np.exp(z).sum(1, keepdims=True), PROBS, atol=1e-12)
        np.testing.assert_array_equal(y, LABELS)
        assert y.dtype == np.int64
    named = write_csv(tmp_path / "b.csv", ["neg,pos,gold", "0.9,0.1,neg", "0.2,0.8,pos"])
    assert load_logits_file(named, label_column="gold")[1].tolist() == [0, 1]
    np.savez(tmp_path / "p.npz", probs=PROBS, labels=LABELS)  # probabilities instead of logits
    np.testing.assert_allclose(load_logits_file(tmp_path / "p.npz")[0], np.log(PROBS))


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("nolabels.npz", lambda p: np.savez(p, logits=np.zeros((3, 2))), "no 'labels' array"),
        (
            "nologits.npz",
            lambda p: np.savez(p, scores=np.zeros((3, 2)), labels=np.zeros(3)),
            "no 'logits' array",
        ),
        (
            "shape.npz",
            lambda p: np.savez(p, logits=np.zeros((3, 2)), labels=np.zeros(4)),
            "field 'labels' must have shape",
        ),
        (
            "range.npz",
            lambda p: np.savez(p, logits=np.zeros((3, 2)), labels=np.array([0, 1, 2])),
            r"integers in \[0, 1\]",
        ),
        (
            "flat.npz",
            lambda p: np.savez(p, logits=np.zeros(3), labels=np.zeros(3)),
            "field 'logits' must have shape",
        ),
        (
            "sum.csv",
            lambda p: write_csv(p, ["a,b,label", "0.5,0.5,0", "0.5,0.7,1"]),
            r"sum.csv:3: probabilities",
        ),
        ("nolabel.csv", lambda p: write_csv(p, ["a,b,y", "0.5,0.5,0"]), "no label column 'label'"),
        ("names.csv", lambda p: write_csv(p, ["a,b,label", "0.5,0.5,c"]), r"neither class indices"),
        ("x.txt", lambda p: p.write_text("hi"), "unsupported file type"),
    ],
)
def test_bad_files_name_file_and_field(tmp_path: Path, name: str, make, message: str) -> None:
    make(tmp_path / name)
    with pytest.raises(CalibrationError, match=message) as info:
        load_logits_file(tmp_path / name)
    assert name in str(info.value)


def test_calibrator_saved_into_checkpoint_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(200, 3)) * 3, rng.integers(0, 3, 200)
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(
        json.dumps({"lmforge": {"head": "sequence_classification", "num_labels": 3}}), encoding="utf-8"
    )
    assert load_calibrator(checkpoint) is None
    for method in ("temperature", "isotonic", "bbq"):
        calibrator = get_calibrator(method).fit(z, y)
        save_calibrator(calibrator, checkpoint)
        loaded = load_calibrator(checkpoint)
        assert loaded is not None and loaded.method == method
        np.testing.assert_array_equal(loaded.predict_proba(z), calibrator.predict_proba(z))
    saved = json.loads((checkpoint / CALIBRATOR_JSON).read_text(encoding="utf-8"))
    assert saved["method"] == "bbq" and (checkpoint / CALIBRATOR_TENSORS).is_file()
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "calibrator.json",
        "calibrator.safetensors",
        "config.json",
    ]

    with pytest.raises(CalibrationError, match="num_labels = 3"):
        save_calibrator(get_calibrator("temperature").fit(z[:, :2], y % 2), checkpoint)
    with pytest.raises(CalibrationError, match="not a checkpoint directory"):
        save_calibrator(calibrator, tmp_path)
    (checkpoint / CALIBRATOR_TENSORS).write_bytes(b"truncated")
    with pytest.raises(CalibrationError, match="cannot read"):
        load_calibrator(checkpoint)


def test_a_saved_predictive_must_be_mc_dropout_with_a_pass_count(tmp_path: Path) -> None:
    from lmforge.calibrate.io import saved_predictive

    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "config.json").write_text("{}")
    calibrator = get_calibrator("temperature").fit(
        np.array([[2.0, 0.0], [0.0, 1.0]] * 5), np.array([0, 1] * 5)
    )
    save_calibrator(calibrator, directory, {"method": "mc_dropout", "mc_passes": 4, "seed": 2, "members": 4})
    assert saved_predictive(directory) == {"method": "mc_dropout", "mc_passes": 4, "seed": 2}
    with pytest.raises(CalibrationError, match="cannot be shipped"):
        save_calibrator(calibrator, directory, {"method": "deep_ensemble", "members": 3})
    save_calibrator(calibrator, directory)  # a plain calibrator replaces it, predictive and all
    assert saved_predictive(directory) is None
    payload = json.loads((directory / "calibrator.json").read_text())
    for bad in ({"method": "mc_dropout"}, {"method": "mc_dropout", "mc_passes": "ten"}, ["mc_dropout"]):
        (directory / "calibrator.json").write_text(json.dumps({**payload, "predictive": bad}))
        with pytest.raises(CalibrationError, match="field 'predictive'"):
            saved_predictive(directory)
