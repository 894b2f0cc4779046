"""``lmforge generate``: continue prompts with a causal or seq2seq LM (text out, or JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lmforge.cli.options import console, unescape
from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.models import TransformerModel
    from lmforge.tokenizers import Tokenizer


def read_prompts(prompts: list[str] | None, prompt_file: Path | None) -> list[str]:
    """``--prompt`` values (``\\n`` read as a newline) then the non-empty lines of ``--prompt-file``."""
    texts = [unescape(p) for p in prompts or []]
    if prompt_file is not None:
        try:
            lines = prompt_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise LmforgeError(f"--prompt-file {prompt_file}: cannot read it ({error})") from None
        texts += [line for line in lines if line.strip()]
    if not texts:
        raise LmforgeError("no prompt: give --prompt TEXT or --prompt-file FILE")
    return texts


def generate_cmd(
    model: Annotated[str, typer.Argument(help="Checkpoint dir, transformers dir, .gguf file or asset name.")],
    prompt: Annotated[
        list[str] | None, typer.Option("--prompt", help="Prompt text; repeat for a batch.")
    ] = None,
    prompt_file: Annotated[Path | None, typer.Option("--prompt-file", help="One prompt per line.")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 64,
    temperature: Annotated[float, typer.Option("--temperature", help="0 is greedy.")] = 0.0,
    top_k: Annotated[int | None, typer.Option("--top-k")] = None,
    top_p: Annotated[float | None, typer.Option("--top-p")] = None,
    min_p: Annotated[float | None, typer.Option("--min-p")] = None,
    repetition_penalty: Annotated[float, typer.Option("--repetition-penalty")] = 1.0,
    num_beams: Annotated[int, typer.Option("--num-beams")] = 1,
    stop: Annotated[list[str] | None, typer.Option("--stop", help="Stop string; repeat for several.")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    n: Annotated[int, typer.Option("--n", help="Samples per prompt.")] = 1,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Print text as it comes.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per completion.")] = False,
    device: Annotated[str, typer.Option("--device")] = "cpu",
) -> None:
    """Generate text for each prompt with any sampling or search method of the engine."""
    from lmforge.generate import GenerationConfig
    from lmforge.generate.text import generate_text, stream_text

    texts = read_prompts(prompt, prompt_file)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        num_beams=num_beams,
        stop=[unescape(s) for s in stop or []],
        seed=seed,
        n=n,
    )
    lm_model, tokenizer = load_generator(model, device)
    if stream and not as_json and len(texts) * n == 1:
        for step in stream_text(lm_model, tokenizer, texts, config):
            console.out(step.deltas[0], end="", highlight=False)
        console.out("")
        return
    completions = generate_text(lm_model, tokenizer, texts, config)
    for row, completion in enumerate(completions):
        if as_json:
            record = {
                "prompt": texts[completion.prompt_index],
                "sample": row % n,
                "text": completion.text,
                "token_ids": completion.token_ids,
                "finish_reason": completion.finish_reason,
                "prompt_tokens": completion.prompt_tokens,
            }
            console.out(json.dumps(record, ensure_ascii=False), highlight=False)
        else:
            if len(completions) > 1:
                console.rule(
                    f"prompt {completion.prompt_index + 1}" + (f", sample {row % n + 1}" if n > 1 else "")
                )
            console.out(completion.text, highlight=False)


def load_generator(model: str, device: str) -> tuple[TransformerModel, Tokenizer]:
    """Load ``model`` for generation, refusing one without a tokenizer or an LM head."""
    import lmforge

    lm = lmforge.load(model, device=device)
    if lm.tokenizer is None:
        raise LmforgeError(f"{model}: has no tokenizer; generation needs one to read prompts and write text")
    if lm.config.head not in ("causal_lm", "seq2seq_lm"):
        raise LmforgeError(
            f"{model}: its head is {lm.config.head!r}; generation needs a causal or seq2seq LM"
        )
    return lm.model, lm.tokenizer
