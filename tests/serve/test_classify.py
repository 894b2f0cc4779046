"""POST /v1/classify: a fine-tuned classifier's probabilities, calibrated by the calibrator saved in
its checkpoint (MC-dropout predictive included), with the method and the raw probabilities."""

from __future__ import annotations

from pathlib import Path

import httpx2
import numpy as np
import pytest
import torch
from serving import LiveServer, serving

import lmforge
from lmforge.calibrate.base import softmax
from lmforge.calibrate.io import save_calibrator
from lmforge.calibrate.scaling import TemperatureScaling
from lmforge.models import TransformerModel, preset_config
from lmforge.serve.config import ServeConfig
from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["a great movie, really fine", "dull plot and awful story", "the movie was a movie"]


def _classifier(directory: Path) -> Path:
    corpus = [*TEXTS, "good bad fine great awful dull the a was"] * 5
    tokenizer = train_tokenizer(corpus, TokenizerTrainConfig(kind="wordpiece", family="bert", vocab_size=80))
    torch.manual_seed(0)
    config = preset_config(
        "bert-tiny",
        head="sequence_classification",
        num_labels=3,
        vocab_size=tokenizer.vocab_size,
        dropout=0.1,
    )
    return lmforge.save(TransformerModel(config).eval(), directory, tokenizer)


def _classify(server: LiveServer, name: str, texts: object) -> httpx2.Response:
    return httpx2.post(f"{server.url}/v1/classify", json={"model": name, "input": texts}, timeout=60)


def test_calibrated_and_raw_probabilities(tmp_path: Path) -> None:
    path = _classifier(tmp_path / "clf")
    rng = np.random.default_rng(0)
    calibrator = TemperatureScaling().fit(rng.normal(size=(64, 3)) * 4, rng.integers(0, 3, 64))
    save_calibrator(calibrator, path)
    loaded = lmforge.load(path)
    expected = loaded.predict_proba(TEXTS)
    raw = softmax(loaded.logits(TEXTS))
    assert not np.allclose(expected, raw, atol=1e-3)  # the calibrator changes them
    with serving(path, config=ServeConfig(labels=["pos", "neg", "neutral"])) as server:
        body = _classify(server, "clf", TEXTS).json()
        assert body["calibration"] == "temperature" and body["predictive"] is None
        probs = np.array([[d["probs"][n] for n in ("pos", "neg", "neutral")] for d in body["data"]])
        raws = np.array([[d["raw_probs"][n] for n in ("pos", "neg", "neutral")] for d in body["data"]])
        assert np.allclose(probs, expected, atol=1e-5) and np.allclose(raws, raw, atol=1e-5)
        assert [d["label"] for d in body["data"]] == [
            ["pos", "neg", "neutral"][i] for i in expected.argmax(1)
        ]
        single = _classify(server, "clf", TEXTS[1]).json()["data"]
        assert len(single) == 1 and np.allclose(list(single[0]["probs"].values()), expected[1], atol=1e-5)
        assert _classify(server, "clf", []).status_code == 400
        assert _classify(server, "clf", 3).status_code == 400
        refused = httpx2.post(f"{server.url}/v1/completions", json={"model": "clf", "prompt": "hi"})
        assert refused.status_code == 400 and "does not generate" in refused.json()["error"]["message"]


def test_mc_dropout_predictive_and_no_calibrator(tmp_path: Path) -> None:
    path = _classifier(tmp_path / "mc")
    with serving(path) as server:
        body = _classify(server, "mc", TEXTS).json()
        assert body["calibration"] == "none" and list(body["data"][0]["probs"]) == [
            "LABEL_0",
            "LABEL_1",
            "LABEL_2",
        ]
        assert body["data"][0]["probs"] == body["data"][0]["raw_probs"]
    rng = np.random.default_rng(1)
    calibrator = TemperatureScaling().fit(rng.normal(size=(64, 3)) * 3, rng.integers(0, 3, 64))
    predictive = {"method": "mc_dropout", "mc_passes": 4, "seed": 0}
    save_calibrator(calibrator, path, predictive=predictive)
    expected = lmforge.load(path).predict_proba(TEXTS)
    with serving(path) as server:
        body = _classify(server, "mc", TEXTS).json()
    assert body["predictive"]["method"] == "mc_dropout" and body["predictive"]["mc_passes"] == 4
    probs = np.array([list(d["probs"].values()) for d in body["data"]])
    assert np.allclose(probs, expected, atol=1e-5)


def test_label_names_come_from_the_fine_tuned_checkpoint(tmp_path: Path) -> None:
    """`lmforge finetune` records id2label in the model config; the server names the classes by it."""
    path = _classifier(tmp_path / "named")
    loaded = lmforge.load(path)
    loaded.config.extra["id2label"] = ["negative", "neutral", "positive"]
    lmforge.save(loaded.model, path, loaded.tokenizer)
    with serving(path) as server:
        body = _classify(server, "named", TEXTS).json()
    assert [list(d["probs"]) for d in body["data"]] == [["negative", "neutral", "positive"]] * 3
    assert {d["label"] for d in body["data"]} <= {"negative", "neutral", "positive"}


def test_a_language_model_does_not_classify(random_server: LiveServer) -> None:
    response = _classify(random_server, "tiny-llama", "hello")
    assert response.status_code == 400 and "not a sequence classifier" in response.json()["error"]["message"]
