"""MC dropout and deep ensembles on a tiny random classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmforge.calibrate.bayesian import ensemble_predict, mc_dropout_predict
from lmforge.errors import CalibrationError
from lmforge.models import TransformerModel, preset_config


def tiny_classifier(seed: int, dropout: float = 0.3) -> TransformerModel:
    torch.manual_seed(seed)
    config = preset_config(
        "bert-tiny",
        head="sequence_classification",
        num_labels=3,
        vocab_size=64,
        num_layers=1,
        dropout=dropout,
    )
    model = TransformerModel(config)
    with torch.no_grad():  # a larger classifier so predictions differ visibly between passes
        model.classifier.linear.weight.mul_(20.0)  # type: ignore[union-attr]
    return model.eval()


def batches() -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (10, 6), generator=gen)
    mask = torch.ones_like(ids)
    mask[5:, 4:] = 0  # padded rows
    return [
        {"input_ids": ids[:6], "attention_mask": mask[:6], "labels": torch.arange(6) % 3},
        {"input_ids": ids[6:], "attention_mask": mask[6:], "labels": torch.arange(4) % 3},
    ]


def test_mc_dropout_averages_seeded_stochastic_passes() -> None:
    model = tiny_classifier(0)
    rng_state = torch.get_rng_state()
    result = mc_dropout_predict(model, batches(), num_passes=8, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_state)  # caller's random stream untouched
    assert result.member_probs.shape == (8, 10, 3) and result.probs.shape == (10, 3)
    np.testing.assert_allclose(result.probs, result.member_probs.mean(0))
    np.testing.assert_allclose(result.probs.sum(1), 1.0, atol=1e-12)
    assert np.abs(result.member_probs[0] - result.member_probs[1]).max() > 1e-4  # dropout was on
    assert result.labels is not None and result.labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert (result.mutual_information() >= -1e-12).all()
    assert not model.training  # mode restored
    again = mc_dropout_predict(model, iter(batches()), num_passes=8, seed=3)  # a generator works too
    np.testing.assert_array_equal(again.probs, result.probs)
    with torch.no_grad():
        deterministic = torch.softmax(
            model(batches()[0]["input_ids"], batches()[0]["attention_mask"]).logits, -1
        )
    assert np.abs(result.probs[:6] - deterministic.double().numpy()).max() > 1e-4


def test_mc_dropout_needs_dropout() -> None:
    with pytest.raises(CalibrationError, match="dropout > 0"):
        mc_dropout_predict(tiny_classifier(0, dropout=0.0), batches())


def test_ensemble_is_mean_of_member_softmaxes() -> None:
    models = [tiny_classifier(seed) for seed in (1, 2, 3)]
    result = ensemble_predict(models, batches())
    expected = []
    for model in models:
        with torch.no_grad():
            expected.append(
                np.concatenate(
                    [
                        torch.softmax(model(b["input_ids"], b["attention_mask"]).logits.double(), -1).numpy()
                        for b in batches()
                    ]
                )
            )
    np.testing.assert_allclose(result.member_probs, np.stack(expected), atol=1e-6)
    np.testing.assert_allclose(result.probs, np.mean(expected, axis=0), atol=1e-6)
    with pytest.raises(CalibrationError, match="at least one model"):
        ensemble_predict([], batches())
