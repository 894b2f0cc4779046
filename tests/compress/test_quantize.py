"""Quantizing models: GPTQ against its definition, the calibration report, and `lmforge quantize`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lmforge
from lmforge.compress import QuantizeConfig, quantize, quantize_model
from lmforge.compress.gptq import gptq_quantize_weight, gptq_quantize_weight_int8
from lmforge.errors import ConfigError, UnsupportedError
from lmforge.models import TransformerModel, preset_config
from lmforge.models.quantized import dequantize_int4, int4_group_params, quantize_int4, quantize_int8_rows

pytestmark = pytest.mark.usefixtures("one_thread")


def _reference_gptq(
    weight: torch.Tensor, hessian: torch.Tensor, group_size: int, damp: float
) -> torch.Tensor:
    """GPTQ as the paper states it, one column at a time with no lazy batching: quantize column i,
    then move every later column by -err_i * U[i, j] / U[i, i] (U: upper Cholesky factor of H^-1)."""
    w = weight.double().clone()
    k = w.shape[1]
    h = hessian.double() + damp * torch.diag(hessian.double()).mean() * torch.eye(k, dtype=torch.float64)
    u = torch.linalg.cholesky(torch.linalg.inv(h), upper=True)
    codes = torch.zeros_like(w)
    for i in range(k):
        if i % group_size == 0:
            scale, minimum = int4_group_params(w[:, i : i + group_size], group_size)
        q = torch.round((w[:, i] - minimum[:, 0].double()) / scale[:, 0].double()).clamp(0, 15)
        codes[:, i] = q
        error = (w[:, i] - (q * scale[:, 0].double() + minimum[:, 0].double())) / u[i, i]
        w[:, i:] -= error[:, None] * u[i, i:][None, :]
    return codes.to(torch.uint8)


def _correlated_inputs(tokens: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(width, width, generator=generator) / width**0.5
    return torch.randn(tokens, width, generator=generator) @ mixing + 0.3 * torch.randn(
        tokens, 1, generator=generator
    )


def test_gptq_equals_the_unbatched_definition() -> None:
    torch.manual_seed(0)
    weight = torch.randn(12, 256) * 0.1
    x = _correlated_inputs(600, 256)
    hessian = x.double().T @ x.double()
    codes, _, _ = gptq_quantize_weight(weight, hessian, 64, damp=0.01)
    reference = _reference_gptq(weight, hessian, 64, 0.01)
    # Lazy batching only reorders the same updates: the codes agree except for rare rounding ties.
    assert (codes != reference).float().mean() < 0.002


def test_gptq_int8_equals_the_unbatched_definition_and_beats_rounding() -> None:
    torch.manual_seed(2)
    weight = torch.randn(16, 256) * 0.05
    weight[0, 3] = 0.9  # an outlier widens row 0's grid: rounding loses most there
    x = _correlated_inputs(800, 256, seed=2)
    hessian = x.double().T @ x.double()
    q, scale = gptq_quantize_weight_int8(weight, hessian)
    step = scale.double()
    w = weight.double().clone()
    h = hessian + 0.01 * torch.diag(hessian).mean() * torch.eye(256, dtype=torch.float64)
    u = torch.linalg.cholesky(torch.linalg.inv(h), upper=True)
    reference = torch.zeros_like(w)
    for i in range(256):
        reference[:, i] = torch.round(w[:, i] / step).clamp(-127, 127)
        w[:, i:] -= ((w[:, i] - reference[:, i] * step) / u[i, i])[:, None] * u[i, i:][None, :]
    assert (q.double() != reference).double().mean() < 0.002
    rtn, rtn_scale = quantize_int8_rows(weight)
    gptq_error = (x @ (q.float() * scale[:, None] - weight).T).pow(2).mean()
    rtn_error = (x @ (rtn.float() * rtn_scale[:, None] - weight).T).pow(2).mean()
    assert gptq_error < 0.8 * rtn_error


def test_gptq_reconstructs_the_layer_output_better_than_rounding_to_nearest() -> None:
    torch.manual_seed(1)
    weight = torch.randn(32, 128) * 0.05
    x = _correlated_inputs(1000, 128, seed=1)
    codes, scale, minimum = gptq_quantize_weight(weight, x.double().T @ x.double(), 32)
    gptq_error = (x @ (dequantize_int4(codes, scale, minimum, 32) - weight).T).pow(2).mean()
    rtn_scale, rtn_min = int4_group_params(weight, 32)
    rtn = dequantize_int4(quantize_int4(weight, rtn_scale, rtn_min, 32), rtn_scale, rtn_min, 32)
    rtn_error = (x @ (rtn - weight).T).pow(2).mean()
    assert gptq_error < 0.8 * rtn_error


def _tiny_llama(tmp_path: Path) -> Path:
    from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

    text = [
        f"the {w} sat on the {v} and the {w} ran"
        for w in ("cat", "dog", "fox", "owl")
        for v in ("mat", "log", "hill")
    ]
    tokenizer = train_tokenizer(text * 4, TokenizerTrainConfig(kind="bpe", family="llama", vocab_size=300))
    torch.manual_seed(0)
    config = preset_config(
        "llama-tiny", head="causal_lm", vocab_size=len(tokenizer), hidden_size=64, num_heads=4,
        num_kv_heads=2, intermediate_size=128, num_layers=2, max_positions=128,
    )  # fmt: skip
    lmforge.save(TransformerModel(config), tmp_path / "llama", tokenizer)
    (tmp_path / "calib.txt").write_text("\n".join(text * 20) + "\n", encoding="utf-8")
    return tmp_path / "llama"


@pytest.mark.parametrize(("method", "group_size"), [("gptq-int4", 32), ("gptq-int8", None)])
def test_gptq_end_to_end_writes_a_loadable_checkpoint(
    method: str, group_size: int | None, tmp_path: Path
) -> None:
    model = _tiny_llama(tmp_path)
    config = QuantizeConfig(
        method,
        group_size,
        calibration=(str(tmp_path / "calib.txt"),),
        calibration_samples=8,
        calibration_length=16,
    )
    report = quantize(model, tmp_path / "q", config)
    assert report["quantized_modules"] == 14  # 2 blocks x (q, k, v, o, gate, up, down)
    loaded = lmforge.load(tmp_path / "q")
    ids = torch.randint(0, loaded.config.vocab_size, (1, 10))
    float_logits = lmforge.load(model).model(ids).logits
    with torch.no_grad():
        logits = loaded.model(ids).logits
    assert torch.isfinite(logits).all()
    assert float((logits - float_logits).abs().mean()) < 0.5 * float(float_logits.abs().mean())
    saved = json.loads((tmp_path / "q" / "compression.json").read_text())
    assert saved["weight_bytes_after"] < saved["weight_bytes_before"]


def test_settings_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    model = _tiny_llama(tmp_path)
    cases = [
        (QuantizeConfig("int3"), ConfigError, "choose one of int8, int8-wo, int4-wo, gptq-int4, gptq-int8"),
        (QuantizeConfig("int8", 64), ConfigError, "--group-size applies to int4-wo and gptq-int4"),
        (QuantizeConfig("int4-wo", 48), ConfigError, "--group-size 48"),
        (QuantizeConfig("int4-wo", 128), ConfigError, "does not divide the input width 64"),
        (QuantizeConfig("gptq-int4"), ConfigError, "needs --calibration"),
    ]
    for config, error, message in cases:
        with pytest.raises(error, match=message):
            quantize(model, tmp_path / "out", config)
        assert not (tmp_path / "out").exists()


def test_gptq_refuses_an_encoder_decoder_model(tmp_path: Path) -> None:
    config = preset_config("t5-tiny", head="seq2seq_lm", vocab_size=64)
    model = TransformerModel(config)
    with pytest.raises(UnsupportedError, match="t5 is an encoder-decoder model"):
        quantize_model(model, QuantizeConfig("gptq-int4", 32, calibration=("x.txt",)))


def test_an_int8_classifier_report_tracks_calibration(classifier: Path, tmp_path: Path) -> None:
    """`quantize --eval-data` reports accuracy / ECE (+ floor) / NLL before, after and recalibrated,
    and saves the compressed model's calibrator so lmforge.load returns calibrated probabilities."""
    from lmforge.compress.report import EvalData

    data = EvalData(tmp_path / "test.csv", fit_data=tmp_path / "train.csv", split="test", fit_split="train")
    report = quantize(classifier, tmp_path / "q", QuantizeConfig("int8"), data)
    calibration = report["calibration"]
    for name in ("before", "after"):
        for kind in ("raw", "recalibrated"):
            metrics = calibration[name][kind]
            assert set(metrics) == {"accuracy", "ece", "ece_floor", "nll"}
            assert metrics["ece_floor"]["low"] <= metrics["ece_floor"]["mean"] <= metrics["ece_floor"]["high"]
    assert calibration["before"]["examples"] == 80
    assert 0.9 <= calibration["agreement"] <= 1.0
    loaded = lmforge.load(tmp_path / "q")
    assert loaded.calibrator is not None
    assert loaded.calibrator.temperature == pytest.approx(calibration["after"]["temperature"])  # type: ignore[attr-defined]
    assert report["file_bytes"] < 0.5 * (classifier / "model.safetensors").stat().st_size
