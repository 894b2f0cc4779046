"""End-to-end `lmforge calibrate` runs: metrics.json, figures, HTML report, --cv, --save-into."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lmforge.calibrate.io import load_calibrator
from lmforge.calibrate.pipeline import CalibrateConfig, run_calibration
from lmforge.errors import CalibrationError
from lmforge.metrics.calibration import expected_calibration_error, probs_from_logits

KEYS = {"ece", "mce", "nll", "brier", "accuracy"}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmforge.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
        timeout=300,
    )


@pytest.fixture
def splits(tmp_path: Path) -> tuple[Path, Path]:
    """Over-confident 3-class logits (true temperature 2.5), written as validation and test files."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(1600, 3)) * 1.5
    cdf = np.cumsum(probs_from_logits(z), axis=1)
    labels = np.minimum((rng.random((1600, 1)) > cdf).sum(1), 2)
    np.savez(tmp_path / "val.npz", logits=z[:800] * 2.5, labels=labels[:800])
    np.savez(tmp_path / "test.npz", logits=z[800:] * 2.5, labels=labels[800:])
    return tmp_path / "val.npz", tmp_path / "test.npz"


def test_cli_temperature_writes_report_and_saves_into_checkpoint(
    tmp_path: Path, splits: tuple[Path, Path]
) -> None:
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}", encoding="utf-8")
    out = tmp_path / "report"
    result = run_cli(
        "calibrate", "--method", "temperature", "--fit", str(splits[0]), "--eval", str(splits[1]),
        "--out", str(out), "--bins", "10", "--save-into", str(checkpoint),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "temperature" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["method"] == "temperature" and metrics["n_bins"] == 10
    assert set(metrics["before"]) >= KEYS and set(metrics["after"]) >= KEYS
    test = np.load(splits[1])
    assert metrics["before"]["ece"] == pytest.approx(
        expected_calibration_error(probs_from_logits(test["logits"]), test["labels"], n_bins=10)
    )
    assert metrics["after"]["ece"] < metrics["before"]["ece"] / 2
    assert metrics["after"]["accuracy"] == metrics["before"]["accuracy"]  # temperature keeps the argmax
    assert metrics["calibrators"]["temperature"]["temperature"] == pytest.approx(2.5, rel=0.15)
    low, high = metrics["ci"]["temperature"]["ece"]
    assert low <= metrics["after"]["ece"] <= high
    floor = metrics["ece_floor"]["temperature"]  # the data were generated calibrated, then sharpened
    assert floor["low"] <= metrics["after"]["ece"] <= floor["high"] < metrics["before"]["ece"]
    assert sum(b["count"] for b in metrics["reliability"]["before"]) == 800
    for name in (
        "reliability_before",
        "reliability_temperature",
        "confidence_before",
        "confidence_temperature",
    ):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text(encoding="utf-8")
    embedded = page.split('src="data:image/png;base64,')[1].split('"')[0]
    assert base64.b64decode(embedded) == (out / "reliability_before.png").read_bytes()
    calibrator = load_calibrator(checkpoint)
    assert calibrator is not None and calibrator.method == "temperature"


def test_all_methods_with_cross_validation(tmp_path: Path, splits: tuple[Path, Path]) -> None:
    metrics = run_calibration(CalibrateConfig("all", splits[1], tmp_path / "all", cv=4, n_resamples=20))
    assert metrics["method"] == "all" and metrics["cv"] == 4 and metrics["fit"] is None
    assert set(metrics["methods"]) == {
        "temperature",
        "vector",
        "matrix",
        "platt",
        "isotonic",
        "histogram",
        "bbq",
    }
    assert metrics["after"] == metrics["methods"][metrics["best"]]
    for name, values in metrics["methods"].items():
        assert values["ece"] < metrics["before"]["ece"], name
    page = (tmp_path / "all" / "report.html").read_text(encoding="utf-8")
    assert page.count("<tr>") == 9  # header + before + 7 methods


def test_several_methods_comma_separated(tmp_path: Path, splits: tuple[Path, Path]) -> None:
    config = CalibrateConfig(
        "isotonic, temperature,isotonic", splits[1], tmp_path / "some", fit_path=splits[0]
    )
    metrics = run_calibration(config)
    assert list(metrics["methods"]) == ["isotonic", "temperature"]  # in the order given, once each
    with pytest.raises(CalibrationError, match="'beta'.*comma-separated"):
        CalibrateConfig("temperature,beta", splits[1], tmp_path / "z", fit_path=splits[0])


def test_cli_errors_are_one_line(tmp_path: Path, splits: tuple[Path, Path]) -> None:
    np.savez(tmp_path / "two.npz", logits=np.zeros((5, 2)), labels=np.zeros(5))
    result = run_cli("calibrate", "--method", "platt", "--fit", str(tmp_path / "two.npz"), "--eval", str(splits[1]),
                     "--out", str(tmp_path / "x"))  # fmt: skip
    assert result.returncode == 1
    assert "has 2 classes but" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(CalibrationError, match="unknown"):
        run_calibration(CalibrateConfig("beta", splits[1], tmp_path / "y", fit_path=splits[0]))
    with pytest.raises(CalibrationError, match="--fit VAL"):
        run_calibration(CalibrateConfig("temperature", splits[1], tmp_path / "y"))
