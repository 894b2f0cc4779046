"""``lmforge chat``: a conversation with a model in the terminal (or over piped lines)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from lmforge.cli.generate import load_generator
from lmforge.cli.options import console, unescape

HELP = (
    "/reset forgets the turns, /system TEXT sets the system message, /save FILE writes the chat, /exit ends"
)


def chat_cmd(
    model: Annotated[str, typer.Argument(help="Checkpoint dir, transformers dir, .gguf file or asset name.")],
    system: Annotated[str | None, typer.Option("--system", help="System message.")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 256,
    temperature: Annotated[float, typer.Option("--temperature", help="0 is greedy.")] = 0.0,
    top_p: Annotated[float | None, typer.Option("--top-p")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    device: Annotated[str, typer.Option("--device")] = "cpu",
) -> None:
    """Chat with a model through its chat template. Interactive on a terminal; otherwise one user
    message per input line, one reply per output line."""
    from lmforge.generate import GenerationConfig
    from lmforge.generate.chat import ChatSession

    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    lm_model, tokenizer = load_generator(model, device)
    session = ChatSession(lm_model, tokenizer, config, system=unescape(system) if system else None)
    interactive = sys.stdin.isatty()
    if interactive:
        console.print(f"[dim]{HELP}[/dim]")
    while True:
        if interactive:
            console.print("[bold]>[/bold] ", end="")
        line = sys.stdin.readline()
        if not line:
            break
        text = line.rstrip("\n")
        if not text.strip():
            continue
        if text.startswith("/"):
            command, _, argument = text.partition(" ")
            if command == "/exit":
                break
            if command == "/reset":
                session.reset()
            elif command == "/system":
                session.set_system(argument or None)
            elif command == "/save" and argument:
                console.print(f"wrote {session.save(argument)}", highlight=False)
            else:
                console.print(HELP, highlight=False)
            continue
        for delta in session.stream(unescape(text)):
            console.out(delta, end="", highlight=False)
        console.out("")
