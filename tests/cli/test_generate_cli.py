"""``lmforge generate`` end to end on a scripted model saved to disk."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "generate"))
from scripted import CORPUS, byte_bpe, chain, scripted_model  # noqa: E402

import lmforge  # noqa: E402
from lmforge.cli import main  # noqa: E402

END = " END there"


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tokenizer = byte_bpe()
    script = tokenizer.encode("OP", add_special_tokens=False) + tokenizer.encode(
        END, add_special_tokens=False
    )
    eos = tokenizer.eos_token_id
    assert eos is not None and CORPUS
    model = scripted_model(tokenizer.vocab_size, {**chain(script), script[-1]: eos}, eos)
    return lmforge.save(model, tmp_path_factory.mktemp("gen") / "scripted", tokenizer)


def _run(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def test_generate_streams_text(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["generate", str(saved), "--prompt", "OP"]) == 0
    assert capsys.readouterr().out == END + "\n"


def test_generate_json_with_stop_string(
    saved: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("OP\n\nOP\n", encoding="utf-8")
    assert _run(["generate", str(saved), "--prompt-file", str(prompts), "--stop", "ND", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["text"], r["finish_reason"]) for r in records] == [(" E", "stop")] * 2
