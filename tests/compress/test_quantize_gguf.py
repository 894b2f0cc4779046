"""`lmforge quantize MODEL --method q8_0|q4_0|... --format gguf`: one llama.cpp file lmforge.load reads."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
import torch
from typer.testing import CliRunner

import lmforge
from lmforge.cli import app
from lmforge.compress import QuantizeConfig
from lmforge.errors import ConfigError
from lmforge.models import TransformerModel, preset_config
from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


@pytest.fixture
def llama_dir(tmp_path: Path) -> Path:
    texts = [f"a small llama reads {i} lines of text" for i in range(100)]
    tokenizer = train_tokenizer(texts, TokenizerTrainConfig("bpe", 300, family="llama"))
    torch.manual_seed(0)
    config = preset_config(
        "llama-tiny", vocab_size=tokenizer.vocab_size, hidden_size=64, num_heads=4, num_kv_heads=2,
        intermediate_size=128, num_layers=2, head="causal_lm",
    )  # fmt: skip
    lmforge.save(TransformerModel(config), tmp_path / "llama", tokenizer)
    return tmp_path / "llama"


def test_quantize_to_gguf_writes_a_file_load_reads(llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "llama.Q4_0.gguf"
    result = runner.invoke(
        app, ["quantize", str(llama_dir), "--method", "q4_0", "--format", "gguf", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert str(out) in result.output.replace("\n", "")
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(out).tensors}
    assert types["blk.0.ffn_up.weight"] == gguf.GGMLQuantizationType.Q4_0
    assert types["blk.1.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    original, loaded = lmforge.load(llama_dir), lmforge.load(out)
    ids = torch.tensor([[1, 5, 9, 40, 200]])
    with torch.no_grad():
        reference, logits = original.model(ids).logits, loaded.model(ids).logits
    assert (logits - reference).abs().max() <= 0.15 * reference.abs().max()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "int8-wo", "--format", "gguf"], "not a GGUF tensor type.*q8_0, q4_0, q4_1, f16, f32"),
        (["--method", "q8_0"], "GGUF tensor type: add --format gguf"),
        (["--method", "q4_0", "--format", "gguf", "--group-size", "32"], "--group-size does not apply"),
        (["--method", "q8_0", "--format", "onnx"], "--format 'onnx'"),
    ],
)
def test_bad_gguf_settings_are_refused(args: list[str], message: str) -> None:
    method = args[1]
    options = dict(zip(args[::2], args[1::2], strict=True))
    config = QuantizeConfig(
        method,
        int(options["--group-size"]) if "--group-size" in options else None,
        format=options.get("--format", "lmforge"),
    )
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_gguf_output_must_be_a_gguf_file(llama_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["quantize", str(llama_dir), "--method", "q8_0", "--format", "gguf", "--out", str(tmp_path / "dir")],
    )
    assert isinstance(result.exception, ConfigError) and "*.gguf" in str(result.exception)
    assert not (tmp_path / "dir").exists()
