"""Prefix-cached vs naive label scoring on SmolLM2-135M, side by side in one run.

k demonstrations + N inputs from pang-lee-polarity (the same prompts for both):

* cached: the prefix (demonstrations) is encoded once; each batch of inputs runs on a copy of
  its KV cache; label tokens after the first run on each input's cache;
* naive: every (input, label) pair is scored by a full forward pass over prefix + input + label
  (same batch size, same LM-head-at-label-positions trick, so only cache reuse differs).

Both give the same log-probabilities (max difference reported); wall times are measured on a
shared CPU and are noisy. Writes bench/results/prompt.json.

    OMP_NUM_THREADS=1 .venv/bin/python bench/prompt.py --shots 4 --inputs 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

import lmforge
from lmforge.prompting import PromptScorer, PromptTemplate, hash_split, load_labelled, sample_demonstrations

RESULTS = Path(__file__).resolve().parent / "results" / "prompt.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--inputs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--labels", default="negative,positive")
    parser.add_argument("--template", default="Review: {text}\nSentiment: {label}")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    lm = lmforge.load(args.model)
    assert lm.tokenizer is not None
    pool, test = hash_split(load_labelled("pang-lee-polarity"))
    words = args.labels.split(",")
    demos = [(pool.texts[i], words[pool.labels[i]]) for i in sample_demonstrations(pool, args.shots, seed=0)]
    texts = test.texts[: args.inputs]
    template = PromptTemplate(args.template)

    timings, outputs = {}, {}
    for name, cached in (("cached", True), ("naive", False)):
        scorer = PromptScorer(lm.model, lm.tokenizer, batch_size=args.batch_size, cached=cached)
        start = time.perf_counter()
        outputs[name], lengths = scorer.label_logprobs(template, texts, words, demos)
        timings[name] = time.perf_counter() - start
        print(f"{name}: {timings[name]:.1f}s", flush=True)

    scorer = PromptScorer(lm.model, lm.tokenizer)
    encoded = scorer.encode(scorer.segments(template, texts, demos), words)
    result = {
        "model": args.model,
        "shots": args.shots,
        "inputs": len(texts),
        "labels": words,
        "label_tokens": lengths,
        "template": args.template,
        "batch_size": args.batch_size,
        "prefix_tokens": len(encoded.prefix_ids),
        "mean_input_tokens": sum(map(len, encoded.query_ids)) / len(texts),
        "cached_seconds": round(timings["cached"], 2),
        "naive_seconds": round(timings["naive"], 2),
        "speedup": round(timings["naive"] / timings["cached"], 2),
        "max_abs_logprob_diff": float((outputs["cached"] - outputs["naive"]).abs().max()),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared; timings are noisy)",
        "load_average_1m": os.getloadavg()[0],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
