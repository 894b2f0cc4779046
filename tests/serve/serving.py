"""Helpers of the serving tests: the chat tokenizer, and real uvicorn servers on free loopback ports."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "generate"))
import openai  # noqa: E402
import uvicorn  # noqa: E402
from scripted import byte_bpe  # noqa: E402

from lmforge.tokenizers import Tokenizer  # noqa: E402

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: What the scripted model answers after "OP" (then EOS), and after a chat prompt (then <|im_end|>).
SCRIPT = " END there"
REPLY = "你好🙂"


def chat_tokenizer() -> Tokenizer:
    """The tests' byte-level BPE with ChatML's special tokens and template."""
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as Backend

    backend = Backend.from_str(byte_bpe().backend.to_str())
    backend.add_special_tokens(
        [AddedToken("<|im_start|>", special=True), AddedToken("<|im_end|>", special=True)]
    )
    return Tokenizer(
        backend,
        special_tokens={"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"},
        chat_template=CHATML,
    )


class LiveServer:
    """An app served by uvicorn in a thread on a free loopback port."""

    def __init__(self, app: object) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # uvicorn sets no TCP_NODELAY on a socket handed to it; without it every response waits
        # ~40 ms for the client's delayed ACK (Nagle), as a socket uvicorn binds itself does not.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)

    def client(self, api_key: str = "unused", **kwargs: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextmanager
def serving(*args: object, **kwargs: object) -> Iterator[LiveServer]:
    """``create_app(*args, **kwargs)`` served for the ``with`` block."""
    from lmforge.serve.app import create_app

    server = LiveServer(create_app(*args, **kwargs))  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
