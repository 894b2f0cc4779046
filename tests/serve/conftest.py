"""Tiny checkpoints with tokenizers, saved to disk, and the servers the tests share."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("openai")

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "generate"))
from scripted import chain, scripted_model  # noqa: E402
from serving import REPLY, SCRIPT, LiveServer, chat_tokenizer, serving  # noqa: E402

import lmforge  # noqa: E402
from lmforge.models import TransformerModel, preset_config  # noqa: E402


@pytest.fixture(scope="session")
def random_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny Llama (128 positions) with the chat tokenizer, saved to disk."""
    tokenizer = chat_tokenizer()
    torch.manual_seed(0)
    config = preset_config("llama-tiny", head="causal_lm", vocab_size=tokenizer.vocab_size, max_positions=128)
    model = TransformerModel(config).eval()
    return lmforge.save(model, tmp_path_factory.mktemp("serve") / "tiny-llama", tokenizer)


@pytest.fixture(scope="session")
def scripted_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose greedy text is known: "OP" -> SCRIPT then EOS; a chat prompt -> REPLY then <|im_end|>."""
    tokenizer = chat_tokenizer()
    eos = tokenizer.eos_token_id
    im_end = tokenizer.backend.token_to_id("<|im_end|>")
    script = tokenizer.encode("OP", add_special_tokens=False) + tokenizer.encode(
        SCRIPT, add_special_tokens=False
    )
    newline = tokenizer.encode("\n", add_special_tokens=False)
    reply = tokenizer.encode(REPLY, add_special_tokens=False)
    successor = {**chain(script), script[-1]: eos, **chain(newline[-1:] + reply), reply[-1]: im_end}
    model = scripted_model(tokenizer.vocab_size, successor, eos)
    model.config.max_positions = 256
    return lmforge.save(model, tmp_path_factory.mktemp("serve") / "scripted", tokenizer)


@pytest.fixture(scope="module")
def random_server(random_dir: Path) -> Iterator[LiveServer]:
    with serving(random_dir) as server:
        yield server


@pytest.fixture(scope="module")
def scripted_server(scripted_dir: Path) -> Iterator[LiveServer]:
    with serving(scripted_dir) as server:
        yield server
