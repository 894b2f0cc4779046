"""What a grammar costs per decoded token: the llguidance mask alone, and SmolLM2-135M decoding
with and without a JSON-schema constraint.

Not a test. Two figures, both on the bundled ``smollm2-135m-instruct`` (49152-token byte-level BPE):

- ``mask_us``: one row's :meth:`GrammarConstraint.allowed` (llguidance's bitmask, unpacked to a
  (V,) bool) + :func:`mask_logits` + :meth:`advance`, per token, over the tokens of a JSON reply
  the model wrote under the schema (so the grammar states are those of real decoding).
- ``decode``: greedy ``generate_detailed`` of a chat prompt, constrained (it stops when the JSON
  closes) vs the same number of tokens unconstrained (``ignore_eos``), per-token milliseconds,
  median of ``--repeats`` alternating runs, same torch threads.

    .venv/bin/python bench/structured.py                # prints JSON, writes bench/results/structured.json
    .venv/bin/python bench/structured.py --threads 1 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import lmforge
from lmforge.generate import GenerationConfig, generate_detailed
from lmforge.generate.constrain import Grammar, mask_logits

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "country": {"type": "string", "maxLength": 24},
        "population_millions": {"type": "integer", "minimum": 0, "maximum": 100},
        "landmarks": {"type": "array", "items": {"type": "string", "maxLength": 24}, "maxItems": 3},
    },
    "required": ["city", "country", "population_millions", "landmarks"],
    "additionalProperties": False,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle = lmforge.load("smollm2-135m-instruct")
    model, tokenizer = bundle.model.eval(), bundle.tokenizer
    vocab = model.config.vocab_size
    messages = [{"role": "user", "content": "Describe Paris as JSON: city, country, population, landmarks."}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    prompt = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
    start = time.perf_counter()
    grammar = Grammar.json_schema(tokenizer, SCHEMA, vocab_size=vocab)
    compile_s = time.perf_counter() - start  # includes llguidance's token table (once per tokenizer)
    constrained = GenerationConfig(max_new_tokens=120, constraint=grammar)
    reply = generate_detailed(model, prompt, config=constrained).sequences[0]
    free = GenerationConfig(max_new_tokens=len(reply), ignore_eos=True)

    # the mask alone, replayed over the reply's tokens
    logits = torch.randn(1, vocab)
    mask_us = []
    for _ in range(max(args.repeats, 3)):
        row = grammar.start([tokenizer.eos_token_id or 0])
        start = time.perf_counter()
        for token in reply:
            mask_logits(logits, [row])
            row.advance(token)
        mask_us.append((time.perf_counter() - start) / len(reply) * 1e6)

    timings: dict[str, list[float]] = {"constrained": [], "free": []}
    for _ in range(args.repeats):
        for name, config in (("constrained", constrained), ("free", free)):
            start = time.perf_counter()
            output = generate_detailed(model, prompt, config=config)
            timings[name].append((time.perf_counter() - start) / len(output.sequences[0]) * 1e3)
    ms = {name: statistics.median(values) for name, values in timings.items()}
    result = {
        "machine": {
            "cpu": _cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": args.threads,
        },
        "reply": tokenizer.decode(reply),
        "reply_tokens": len(reply),
        "reply_parses": _parses(tokenizer.decode(reply)),
        "grammar_compile_s": round(compile_s, 3),
        "mask_us_per_token": round(statistics.median(mask_us), 1),
        "decode_ms_per_token": {name: round(value, 2) for name, value in ms.items()},
        "overhead_ms_per_token": round(ms["constrained"] - ms["free"], 2),
        "overhead_fraction": round(ms["constrained"] / ms["free"] - 1, 3),
    }
    out = Path(__file__).parent / "results" / "structured.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    main()
