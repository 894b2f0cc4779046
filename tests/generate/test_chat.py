"""Chat: the template's end-of-turn token ends a reply, turns reuse their tokens, history is kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scripted import byte_bpe, chain, scripted_model
from tokenizers import AddedToken
from tokenizers import Tokenizer as Backend

from lmforge.generate import GenerationConfig
from lmforge.generate.chat import ChatSession, end_of_turn
from lmforge.tokenizers import Tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
REPLY = "你好🙂"


@pytest.fixture
def chat_parts():
    base = byte_bpe()
    backend = Backend.from_str(base.backend.to_str())
    backend.add_special_tokens(
        [AddedToken("<|im_start|>", special=True), AddedToken("<|im_end|>", special=True)]
    )
    tokenizer = Tokenizer(backend, special_tokens={"pad_token": "<|endoftext|>"}, chat_template=CHATML)
    newline = tokenizer.encode("\n", add_special_tokens=False)
    reply = tokenizer.encode(REPLY, add_special_tokens=False)
    im_end = backend.token_to_id("<|im_end|>")
    # After the generation prompt's final "\n" the model writes REPLY, then <|im_end|>; no EOS set.
    model = scripted_model(tokenizer.vocab_size, {**chain(newline[-1:] + reply), reply[-1]: im_end})
    return model, tokenizer, reply, im_end


def test_end_of_turn_is_read_from_the_template(chat_parts) -> None:
    _, tokenizer, _, im_end = chat_parts
    assert end_of_turn(tokenizer) == ([im_end], [])


def test_reply_stops_at_end_of_turn_and_history_grows(chat_parts, tmp_path: Path) -> None:
    model, tokenizer, reply_ids, _ = chat_parts
    session = ChatSession(model, tokenizer, GenerationConfig(max_new_tokens=30), system="Be brief.")
    assert list(session.stream("hi")) == list(REPLY)  # one delta per whole character
    first_prompt = session.last_prompt_ids
    assert session.send("again") == REPLY
    assert [m["role"] for m in session.messages] == ["system", "user", "assistant", "user", "assistant"]
    # The second prompt starts with the first prompt and the reply's own tokens.
    assert session.last_prompt_ids[: len(first_prompt) + len(reply_ids)] == first_prompt + reply_ids
    assert session.reused_tokens == len(first_prompt) + len(reply_ids)
    expected = tokenizer.apply_chat_template(session.messages[:-1], add_generation_prompt=True)
    assert tokenizer.decode(session.last_prompt_ids, skip_special_tokens=False) == expected
    saved = json.loads(session.save(tmp_path / "chat.json").read_text(encoding="utf-8"))
    assert saved == session.messages
    session.reset()
    assert session.messages == [{"role": "system", "content": "Be brief."}]


def test_oldest_turns_are_dropped_when_the_context_overflows(chat_parts) -> None:
    model, tokenizer, _, _ = chat_parts
    model.config.max_positions = 64
    session = ChatSession(model, tokenizer, GenerationConfig(max_new_tokens=20), system="S")
    for turn in range(4):
        assert session.send(f"message {turn}") == REPLY
    assert session.messages[0] == {"role": "system", "content": "S"}
    assert {"role": "user", "content": "message 0"} not in session.messages
    assert session.messages[-2] == {"role": "user", "content": "message 3"}
    assert len(session.last_prompt_ids) + 20 <= 64
