"""Decoding speed: lmforge's generation engine vs transformers' ``generate``, side by side.

Not a test. SmolLM2-135M (the bundled ``smollm2-135m-instruct`` GGUF: lmforge through
``lmforge.load``, transformers through ``from_pretrained(dir, gguf_file=...)``; both dequantize
the same Q4_1 weights to fp32, and the bf16 rows cast both to bf16), greedy, ``--new-tokens``
new tokens with EOS ignored (``ignore_eos`` / ``min_new_tokens``), same token ids, same torch
threads. Every repetition runs each implementation once, in turn, so a burst of load from other
processes on a shared machine hits both alike; the ratios of the same run are what count.

    .venv/bin/python bench/generate.py                  # 128 tokens, 3 repetitions, every case
    .venv/bin/python bench/generate.py --quick          # smoke run: 16 tokens, 1 repetition
    .venv/bin/python bench/generate.py --cases b1-fp32 --profile   # op table of lmforge alone

Cases: ``b1-fp32``, ``b1-bf16``, ``b8-fp32`` (eight prompts, left padded) and ``lookup``
(prompt-lookup decoding vs plain greedy, both lmforge, on a prompt that quotes a passage the
model then repeats). A tok/s figure is new tokens (all rows) over the whole ``generate`` call
(prefill included: prompts are short). The bound is the memory-bandwidth bound of batch-1
decoding: each token reads every weight once, so tok/s <= bandwidth / weight bytes, with the
bandwidth measured here (a timed sum over a tensor far larger than the caches). The machine
(CPU model, ``torch.backends.cpu.get_cpu_capability()``, threads, load average before / after)
is recorded with the figures. Results go to ``bench/results/generate.json`` (``--quick``:
``generate-quick.json``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a land far away,",
    "The three laws of thermodynamics are",
    "Here is a recipe for pancakes:",
    "In 1969, the first humans to walk on the Moon",
    "A good way to learn a new language is",
    "import numpy as np\n\ndef softmax(x):",
]

PASSAGE = (
    "The Moon is Earth's only natural satellite. It orbits at an average distance of 384,400 km, "
    "about 30 times the diameter of Earth. The Moon always presents the same side to Earth, because "
    "gravitational pull has locked its rotation to the planet. Its gravity produces the tides of "
    "the oceans and slightly lengthens the day. The Moon's orbital distance makes it appear the same "
    "size in the sky as the Sun, so that it can cover the Sun exactly during a total solar eclipse."
)
LOOKUP_PROMPT = (
    f"<|im_start|>user\nRepeat this text word for word:\n\n{PASSAGE}<|im_end|>\n<|im_start|>assistant\n"
)

GOALS = {
    "b1-fp32": "batch 1 fp32 >= 2x transformers and >= 70% of the bandwidth bound",
    "b1-bf16": "batch 1 bf16 >= 2.5x transformers and >= 85% of the bound (native bf16); "
    "without native bf16: not slower than lmforge fp32",
    "b8-fp32": "batch 8 >= 2x transformers",
    "lookup": "prompt-lookup >= 1.5x plain greedy on repetitive text",
}


def memory_bandwidth(torch: Any, megabytes: int = 512, repeats: int = 5) -> dict[str, float]:
    """Read bandwidth (GB/s) of a timed ``sum`` over a tensor far larger than the caches (the best
    of ``repeats``), and copy bandwidth (bytes read + written) of a timed ``copy_``."""
    numel = megabytes * 2**20 // 4
    source = torch.ones(numel)
    target = torch.empty_like(source)
    read, copied = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        source.sum()
        read.append(time.perf_counter() - start)
        start = time.perf_counter()
        target.copy_(source)
        copied.append(time.perf_counter() - start)
    size = numel * 4
    return {"read_gb_s": size / min(read) / 1e9, "copy_gb_s": 2 * size / min(copied) / 1e9}


def left_padded(tokenizer: Any, prompts: list[str], torch: Any) -> tuple[Any, Any]:
    rows = [tokenizer.encode(p) for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return ids, mask


def lmforge_runner(model: Any, ids: Any, mask: Any, new_tokens: int, lookup: int = 0) -> Callable[[], Any]:
    from lmforge.generate import GenerationConfig, generate

    config = GenerationConfig(max_new_tokens=new_tokens, ignore_eos=True, prompt_lookup_num_tokens=lookup)
    return lambda: generate(model, ids, mask if not bool(mask.all()) else None, config)


def transformers_runner(model: Any, ids: Any, mask: Any, new_tokens: int) -> Callable[[], Any]:
    def run() -> Any:
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
            do_sample=False, num_beams=1, pad_token_id=0,
        )  # fmt: skip
        return out[:, ids.shape[1] :]

    return run


def time_interleaved(
    runners: dict[str, Callable[[], Any]], repeats: int, torch: Any
) -> tuple[dict[str, list[float]], dict[str, list[list[int]]]]:
    """Run each runner once per repetition, in turn (after one untimed warm-up call each)."""
    outputs: dict[str, list[list[int]]] = {}
    with torch.inference_mode():
        for name, run in runners.items():
            outputs[name] = run().tolist()
        seconds: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
    return seconds, outputs


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Fraction of rows whose tokens are identical."""
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions of each implementation")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (both)")
    parser.add_argument("--cases", default="b1-fp32,b1-bf16,b8-fp32,lookup", help="comma-separated")
    parser.add_argument("--lookup-tokens", type=int, default=10, help="prompt_lookup_num_tokens")
    parser.add_argument("--quick", action="store_true", help="smoke run: 16 tokens, 1 repetition")
    parser.add_argument("--no-transformers", action="store_true", help="lmforge rows only (fast loads)")
    parser.add_argument("--profile", action="store_true", help="print an op table of lmforge's first case")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default under bench/results)")
    args = parser.parse_args()
    if args.quick:
        args.new_tokens, args.repeats = 16, 1
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    import lmforge
    from lmforge.assets import asset_path
    from lmforge.models.model import parameter_bytes

    torch.set_num_threads(args.threads)
    cases = args.cases.split(",")
    unknown = set(cases) - set(GOALS)
    if unknown:
        parser.error(f"unknown --cases {sorted(unknown)}; choose from {sorted(GOALS)}")
    load_before = os.getloadavg()
    from lmforge.runtime import machine_info

    machine = machine_info()
    bandwidth = memory_bandwidth(torch)
    gguf = asset_path("smollm2-135m-instruct")
    started = time.perf_counter()
    ours = lmforge.load(gguf)
    load_seconds = {"lmforge": time.perf_counter() - started}
    tokenizer = ours.tokenizer
    assert tokenizer is not None
    models: dict[str, dict[str, Any]] = {"lmforge": {"fp32": ours.model.eval()}}
    if "b1-bf16" in cases:
        models["lmforge"]["bf16"] = copy.deepcopy(ours.model).to(torch.bfloat16)
    if not args.no_transformers:
        import transformers

        started = time.perf_counter()
        reference = transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        ).eval()
        load_seconds["transformers"] = time.perf_counter() - started
        models["transformers"] = {"fp32": reference}
        if "b1-bf16" in cases:
            models["transformers"]["bf16"] = copy.deepcopy(reference).to(torch.bfloat16)
    weight_bytes = {dtype: parameter_bytes(m) for dtype, m in models["lmforge"].items()}
    bound = {dtype: bandwidth["read_gb_s"] * 1e9 / size for dtype, size in weight_bytes.items()}

    results: dict[str, Any] = {}
    for case in cases:
        dtype = "bf16" if case == "b1-bf16" else "fp32"
        prompts = PROMPTS if case == "b8-fp32" else [LOOKUP_PROMPT if case == "lookup" else PROMPTS[0]]
        ids, mask = left_padded(tokenizer, prompts, torch)
        runners: dict[str, Callable[[], Any]] = {}
        if case == "lookup":
            model = models["lmforge"]["fp32"]
            runners["lmforge-lookup"] = lmforge_runner(model, ids, mask, args.new_tokens, args.lookup_tokens)
            runners["lmforge-greedy"] = lmforge_runner(model, ids, mask, args.new_tokens)
        else:
            runners["lmforge"] = lmforge_runner(models["lmforge"][dtype], ids, mask, args.new_tokens)
            if "transformers" in models:
                runners["transformers"] = transformers_runner(
                    models["transformers"][dtype], ids, mask, args.new_tokens
                )
            if case == "b1-bf16":  # the fp32 engine again, for the "not slower than fp32" goal
                runners["lmforge-fp32"] = lmforge_runner(
                    models["lmforge"]["fp32"], ids, mask, args.new_tokens
                )
        seconds, outputs = time_interleaved(runners, args.repeats, torch)
        tokens = args.new_tokens * len(prompts)
        row: dict[str, Any] = {"batch": len(prompts), "dtype": dtype, "prompt_tokens": int(mask.sum())}
        for name, values in seconds.items():
            row[f"{name} tok_s"] = tokens / _median(values)
            row[f"{name} seconds"] = values
        first = next(iter(runners))
        for name in list(runners)[1:]:
            # Per repetition: the two calls ran back to back, so the ratio cancels a burst of load.
            ratios = [b / a for a, b in zip(seconds[first], seconds[name], strict=True)]
            row[f"{first} / {name} speed"] = _median(ratios)
            row[f"{first} == {name} tokens"] = _agreement(outputs[first], outputs[name])
        if case != "lookup":
            row["bound tok_s"] = bound[dtype]
            row["lmforge fraction_of_bound"] = (
                row["lmforge tok_s"] / bound[dtype] if len(prompts) == 1 else None
            )
        row["goal"] = GOALS[case]
        row["met"] = _met(case, row, machine["native_bf16"])
        results[case] = row
        print(f"{case}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float)))
    if args.profile:
        case = cases[0]
        runner = lmforge_runner(
            models["lmforge"]["bf16" if case == "b1-bf16" else "fp32"],
            *left_padded(tokenizer, [PROMPTS[0]], torch),
            args.new_tokens,
        )
        with torch.inference_mode(), torch.profiler.profile() as profiler:
            runner()
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=30), file=sys.stderr)
    load_after = os.getloadavg()
    report = {
        "benchmark": "generate",
        "model": "SmolLM2-135M-Instruct (bundled Q4_1 GGUF, dequantized on load by both)",
        "settings": {
            "new_tokens": args.new_tokens,
            "repeats": args.repeats,
            "threads": args.threads,
            "greedy": True,
            "eos": "ignored (lmforge ignore_eos, transformers min_new_tokens)",
            "quick": args.quick,
            "lookup_tokens": args.lookup_tokens,
            "transformers_cache": "its default (dynamic)",
        },  # fmt: skip
        "machine": machine,
        "memory_bandwidth": bandwidth,
        "weight_bytes": weight_bytes,
        "bandwidth_bound_tok_s": bound,
        "load_seconds": load_seconds,
        "load_average_before_after": [list(load_before), list(load_after)],
        "results": results,
        "note": "implementations alternate call by call in one process; other processes share the CPU "
        "(see load_average), so absolute figures are noisy; the same-run ratios are the robust ones.",
    }
    if "transformers" in models:
        import transformers

        report["machine"]["transformers"] = transformers.__version__
    path = args.out or RESULTS / ("generate-quick.json" if args.quick else "generate.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


def _met(case: str, row: dict[str, Any], native_bf16: bool) -> bool | None:
    """Whether the case reached its goal (None: the rows it needs were not run)."""
    if case == "lookup":
        return row["lmforge-lookup / lmforge-greedy speed"] >= 1.5
    vs = row.get("lmforge / transformers speed")
    if case == "b8-fp32":
        return None if vs is None else vs >= 2.0
    if case == "b1-fp32":
        return None if vs is None else vs >= 2.0 and row["lmforge fraction_of_bound"] >= 0.7
    not_slower = row["lmforge / lmforge-fp32 speed"] >= 1.0  # lmforge bf16 vs fp32
    if not native_bf16:
        return not_slower
    return None if vs is None else vs >= 2.5 and row["lmforge fraction_of_bound"] >= 0.85


if __name__ == "__main__":
    main()
