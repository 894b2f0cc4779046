"""lmforge.load returns calibrated probabilities when a calibrator was saved into the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer as Backend
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

import lmforge
from lmforge.api import CalibratedModel
from lmforge.calibrate import get_calibrator
from lmforge.calibrate.base import softmax
from lmforge.calibrate.io import save_calibrator
from lmforge.errors import CalibrationError, UnsupportedError
from lmforge.models import TransformerModel, preset_config
from lmforge.models.io.checkpoint import LoadedModel
from lmforge.tokenizers import Tokenizer

WORDS = ["[PAD]", "[UNK]", "good", "bad", "movie", "plot", "great", "awful", "the", "was"]
TEXTS = ["the movie was good", "awful plot", "great great movie", "the plot was bad bad", "movie"]


@pytest.fixture
def classifier_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    config = preset_config(
        "bert-tiny", head="sequence_classification", num_labels=3, vocab_size=len(WORDS), num_layers=1
    )
    model = TransformerModel(config)
    with torch.no_grad():
        model.classifier.linear.weight.mul_(30.0)  # type: ignore[union-attr]  # confident, miscalibrated
    backend = Backend(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    tokenizer = Tokenizer(backend, special_tokens={"pad_token": "[PAD]", "unk_token": "[UNK]"})
    lmforge.save(model, tmp_path / "clf", tokenizer)
    return tmp_path / "clf"


def test_load_without_calibrator_gives_softmax(classifier_dir: Path) -> None:
    bundle = lmforge.load(classifier_dir)
    assert isinstance(bundle, CalibratedModel) and isinstance(bundle, LoadedModel)
    assert bundle.calibrator is None and bundle.config.num_labels == 3 and bundle.tokenizer is not None
    probs = bundle.predict_proba(TEXTS)
    np.testing.assert_allclose(probs, softmax(bundle.logits(TEXTS)))
    assert probs.shape == (5, 3)


def test_texts_are_cut_at_the_fine_tuned_max_length(classifier_dir: Path) -> None:
    """predict_proba sees what fine-tuning and `lmforge evaluate` saw: the first max_length tokens
    (here 4), not the whole text (which would change the probabilities, or overflow the positions)."""
    config = json.loads((classifier_dir / "config.json").read_text())
    config["lmforge"]["extra"]["max_length"] = 4
    (classifier_dir / "config.json").write_text(json.dumps(config))
    bundle = lmforge.load(classifier_dir)
    long, head = "the movie was good awful awful awful plot", "the movie was good"
    np.testing.assert_allclose(bundle.predict_proba([long]), bundle.predict_proba([head]), rtol=1e-6)
    ids = [WORDS.index(w) for w in long.split()]
    assert not np.allclose(bundle.logits([ids]), bundle.logits([ids[:4]]))  # the cut matters here


def test_saved_calibrator_is_applied_by_predict_proba(classifier_dir: Path) -> None:
    bundle = lmforge.load(classifier_dir)
    rng = np.random.default_rng(0)
    ids = [rng.integers(2, len(WORDS), size=rng.integers(2, 7)).tolist() for _ in range(60)]
    logits = bundle.logits(ids, batch_size=16)
    labels = rng.integers(0, 3, size=60)
    calibrator = get_calibrator("temperature").fit(logits, labels)
    save_calibrator(calibrator, classifier_dir)

    loaded = lmforge.load(classifier_dir)
    assert loaded.calibrator is not None and loaded.calibrator.method == "temperature"
    text_logits = loaded.logits(TEXTS, batch_size=2)
    calibrated = loaded.predict_proba(TEXTS, batch_size=2)
    np.testing.assert_allclose(calibrated, calibrator.predict_proba(text_logits), atol=1e-12)
    assert not np.allclose(calibrated, softmax(text_logits), atol=1e-3)  # the calibrator changed something
    # Token-id inputs: unpadded lists, a padded batch_encode dict, and a tensor give the same logits.
    encoded = loaded.tokenizer.batch_encode(TEXTS)  # type: ignore[union-attr]
    lists = [row[mask.bool()].tolist() for row, mask in zip(encoded["input_ids"], encoded["attention_mask"])]
    np.testing.assert_allclose(loaded.logits(lists), text_logits, atol=1e-5)
    np.testing.assert_allclose(loaded.logits(encoded), text_logits, atol=1e-5)
    np.testing.assert_allclose(loaded.logits(torch.tensor(lists[1])), text_logits[1:2], atol=1e-5)
    # A replaced head does not get the old head's calibrator; restating the same head does.
    assert lmforge.load(classifier_dir, head="base").calibrator is None
    assert lmforge.load(classifier_dir, head="sequence_classification", num_labels=3).calibrator is not None
    assert lmforge.load(classifier_dir, calibrated=False).calibrator is None


def test_mismatched_calibrator_and_non_classifier_errors(classifier_dir: Path, tmp_path: Path) -> None:
    calibrator = get_calibrator("temperature").fit(np.eye(2) * 3, np.array([0, 1]))
    (classifier_dir / "calibrator.json").write_text(
        json.dumps({**calibrator.state_dict(), "arrays": []}), encoding="utf-8"
    )
    with pytest.raises(CalibrationError):
        lmforge.load(classifier_dir)
    (classifier_dir / "calibrator.json").unlink()
    torch.manual_seed(0)
    lm = TransformerModel(preset_config("gpt2-tiny", head="causal_lm"))
    lmforge.save(lm, tmp_path / "lm")
    with pytest.raises(UnsupportedError, match="sequence_classification"):
        lmforge.load(tmp_path / "lm").predict_proba([[1, 2, 3]])
