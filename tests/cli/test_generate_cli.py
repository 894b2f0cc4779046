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


def test_chat_reads_one_message_per_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    import io

    from tokenizers import AddedToken
    from tokenizers import Tokenizer as Backend

    from lmforge.tokenizers import Tokenizer

    backend = Backend.from_str(byte_bpe().backend.to_str())
    backend.add_special_tokens(
        [AddedToken("<|im_start|>", special=True), AddedToken("<|im_end|>", special=True)]
    )
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tokenizer = Tokenizer(backend, special_tokens={"pad_token": "<|endoftext|>"}, chat_template=template)
    reply = tokenizer.encode(END, add_special_tokens=False)
    newline = tokenizer.encode("\n", add_special_tokens=False)
    model = scripted_model(
        tokenizer.vocab_size, {**chain(newline + reply), reply[-1]: backend.token_to_id("<|im_end|>")}
    )
    path = lmforge.save(model, tmp_path / "chat", tokenizer)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"hello\n/save {tmp_path / 'c.json'}\nagain\n"))
    assert _run(["chat", str(path), "--system", "Be brief.", "--max-new-tokens", "16"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == END and out[-1] == END
    assert json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))[1] == {
        "role": "user",
        "content": "hello",
    }
