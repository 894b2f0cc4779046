"""``lmforge quickstart``: the bundled real models at work in a few seconds."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from lmforge.cli.options import console
from lmforge.errors import LmforgeError


def quickstart(
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 24,
) -> None:
    """Load the bundled real models, show their shapes, a greedy continuation and embeddings."""
    import torch

    from lmforge.generate import GenerationConfig, generate
    from lmforge.models import mean_pool
    from lmforge.models.io.checkpoint import load

    if max_new_tokens < 1:  # checked before the models load
        raise LmforgeError(f"--max-new-tokens {max_new_tokens}: generate at least one token")
    generation = GenerationConfig(max_new_tokens=max_new_tokens)
    start = time.perf_counter()
    console.rule("SmolLM2-135M-Instruct (GGUF Q4_1, dequantized)")
    lm = load("smollm2-135m-instruct")
    assert lm.tokenizer is not None
    console.print(
        f"{lm.config.family}: {lm.model.num_parameters():,} parameters, {lm.config.num_layers} layers"
    )
    prompt = lm.tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    ids = torch.tensor([lm.tokenizer.encode(prompt, add_special_tokens=False)])
    new = generate(lm.model, ids, config=generation)
    console.print("[bold]prompt[/bold]: What is the capital of France?")
    console.print(f"[bold]greedy[/bold]: {lm.tokenizer.decode(new[0].tolist())}")

    console.rule("all-MiniLM-L6-v2 (sentence embeddings)")
    enc = load("minilm-l6")
    assert enc.tokenizer is not None
    sentences = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell today."]
    batch = enc.tokenizer.batch_encode(sentences)
    with torch.inference_mode():
        hidden = enc.model(batch["input_ids"], batch["attention_mask"]).last_hidden_state
    embeddings = torch.nn.functional.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1)
    similarity = embeddings @ embeddings.T
    for i in (1, 2):
        console.print(f"cos({sentences[0]!r}, {sentences[i]!r}) = {similarity[0, i]:.3f}")
    console.print(f"done in {time.perf_counter() - start:.1f}s")
