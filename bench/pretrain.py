"""Pretraining throughput: lmforge's training step vs transformers with a plain AdamW loop.

Not a test. Speed: all configurations live in one process and take one step each in turn, so a
burst of load from other processes on a shared machine hits them alike; medians are reported.
Peak RSS: one short process per configuration. Same shapes, batches and optimizer settings.

    .venv/bin/python bench/pretrain.py --model gpt2            # 6L / 384d / T=256 / B=8, fp32 + bf16
    .venv/bin/python bench/pretrain.py --model bert --steps 6
    .venv/bin/python bench/pretrain.py --model gpt2 --profile lmforge:fp32   # op table, one config

lmforge runs ``Trainer.train_step`` (collation included: documents are packed / masked every
step); transformers gets the identical batches precollated and runs ``model(**batch).loss``,
``backward``, ``AdamW.step``. Results go to ``bench/results/pretrain-<model>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"


class RandomCorpus:
    """Random documents (the members lmforge.train reads from a TokenDataset)."""

    def __init__(self, vocab: int, num_tokens: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        lengths = rng.integers(20, 200, num_tokens // 100)
        self.offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        self.tokens = rng.integers(8, vocab, int(self.offsets[-1])).astype(np.int64)
        self.source_ids = np.zeros(len(lengths), dtype=np.int32)

    @property
    def num_documents(self) -> int:
        return len(self.offsets) - 1

    def word_starts(self, index: int) -> None:
        return None


def _overrides(args: argparse.Namespace, precision: str) -> list[str]:
    shape = [
        f"model.hidden_size={args.hidden}", f"model.num_layers={args.layers}", f"model.num_heads={args.heads}",
        f"model.intermediate_size={4 * args.hidden}", "model.dropout=0.0", f"objective.seq_len={args.seq}",
        f"data.batch_size={args.batch}", "optim.lr=1e-4", "optim.weight_decay=0.01", "optim.clip_grad_norm=null",
        "optim.schedule=constant", f"precision={precision}", "progress=false", "tensorboard=false",
        f"max_steps={args.warmup + args.steps}", f"model.max_positions={args.seq}",
        f"cpu_memory_reuse={'false' if args.no_memory_reuse else 'true'}",
    ]  # fmt: skip
    if args.model == "gpt2":
        return ["model.preset=gpt2-tiny", "objective.kind=causal_lm", *shape]
    return ["model.preset=bert-tiny", "objective.kind=masked_lm", "objective.sentence_task=nsp", *shape]


def _trainer(args: argparse.Namespace, precision: str, out: str, compile: bool = False) -> Any:
    from lmforge.train import DataBundle, Trainer, load_config

    specials = {
        "pad_token": 0,
        "unk_token": 1,
        "cls_token": 2,
        "sep_token": 3,
        "mask_token": 4,
        "eos_token": 5,
    }
    corpus = RandomCorpus(args.vocab, 2_000_000, seed=0)
    data = DataBundle(corpus, corpus, vocab_size=args.vocab, special_tokens=specials)
    overrides = [*_overrides(args, precision), *(["compile=true"] if compile else [])]
    return Trainer(load_config(None, overrides), data, out)


def _hf_model(args: argparse.Namespace) -> Any:
    import transformers

    if args.model == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=args.vocab, n_positions=args.seq, n_embd=args.hidden, n_layer=args.layers,
            n_head=args.heads, n_inner=4 * args.hidden, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )  # fmt: skip
        return transformers.GPT2LMHeadModel(config)
    config = transformers.BertConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=4 * args.hidden, max_position_embeddings=args.seq,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return transformers.BertForPreTraining(config)


def _hf_batch(batch: dict[str, np.ndarray], model: str) -> dict[str, Any]:
    import torch

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}
    if model == "gpt2":
        return {"input_ids": tensors["input_ids"], "labels": tensors["labels"]}
    return {
        "input_ids": tensors["input_ids"],
        "token_type_ids": tensors["token_type_ids"],
        "attention_mask": tensors["attention_mask"],
        "labels": tensors["labels"],
        "next_sentence_label": tensors["sentence_labels"],
    }


def _steppers(args: argparse.Namespace, out: str, configs: list[str]) -> tuple[dict[str, Any], list, int]:
    """One step function per ``impl:precision``, all fed the same batches (lmforge collates them)."""
    import contextlib

    import torch

    steppers: dict[str, Any] = {}
    batches: list[dict[str, np.ndarray]] = []
    for config in configs:
        impl, precision = config.split(":")
        trainer = _trainer(
            args, precision, f"{out}/{config.replace(':', '-')}", compile=impl.endswith("+compile")
        )
        if not batches:
            batches = [
                trainer.train_source.train_batch(s, args.batch) for s in range(args.warmup + args.steps)
            ]
        if impl.startswith("lmforge"):
            steppers[config] = trainer.train_step
            continue
        torch.manual_seed(0)
        model = _hf_model(args).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
        hf_batches = [_hf_batch(b, args.model) for b in batches]
        bf16 = precision == "bf16"

        def step(index: int, model: Any = model, optimizer: Any = optimizer, hf_batches: list = hf_batches,
                 bf16: bool = bf16) -> None:  # fmt: skip
            autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with autocast:
                loss = model(**hf_batches[index]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        steppers[config] = step
    params = sum(p.numel() for p in _hf_model(args).parameters())
    return steppers, batches, params


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Time the configurations in one process, one step of each in turn (load hits all alike)."""
    import torch

    from lmforge.train.build import batch_tokens

    configs = args.worker.split(",")
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with tempfile.TemporaryDirectory() as out:
        steppers, batches, params = _steppers(args, out, configs)
        for index in range(args.warmup):
            for step in steppers.values():
                step(index)
        times: dict[str, list[float]] = {c: [] for c in configs}
        profiler: Any = torch.profiler.profile() if args.profile else None
        if profiler is not None:
            profiler.start()
        for index in range(args.warmup, args.warmup + args.steps):
            order = configs if index % 2 == 0 else configs[::-1]
            for config in order:
                start = time.perf_counter()
                steppers[config](index)
                times[config].append(time.perf_counter() - start)
        if profiler is not None:
            profiler.stop()
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)
    tokens = [batch_tokens(b) for b in batches[args.warmup :]]
    return {
        "configs": configs,
        "seconds_per_step": times,
        "tokens_per_step": tokens,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "baseline_rss_bytes": baseline_rss,
        "num_parameters": params,
        "threads": torch.get_num_threads(),
    }


def _run_worker(args: argparse.Namespace, configs: list[str], steps: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", ",".join(configs), *_forwarded(args, steps)]
    env = dict(os.environ)
    load_before = os.getloadavg()[0]
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{configs} failed:\n{result.stderr[-4000:]}")
    if args.profile:
        print(result.stderr)
    run = json.loads(result.stdout.strip().splitlines()[-1])
    run["load_average"] = [load_before, os.getloadavg()[0]]
    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["gpt2", "bert"], default="gpt2")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=50257, help="GPT-2's BPE vocabulary by default")
    parser.add_argument("--steps", type=int, default=8, help="timed steps of each configuration")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--memory-steps", type=int, default=2, help="steps of the per-process peak-RSS runs")
    parser.add_argument(
        "--no-memory-reuse",
        action="store_true",
        help="lmforge returns freed memory to the OS (cpu_memory_reuse=false)",
    )
    parser.add_argument(
        "--configs",
        default="transformers:fp32,lmforge:fp32,transformers:bf16,lmforge:bf16",
        help="impl:precision list; impl transformers, lmforge or lmforge+compile (torch.compile)",
    )
    parser.add_argument("--profile", default=None, help="impl:precision to profile (prints an op table)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    configs = args.configs.split(",")
    assert configs[0] == "transformers:fp32", "the first configuration is the reference"
    if args.profile:
        _run_worker(args, [args.profile], args.steps)
        return
    speed = _run_worker(args, configs, args.steps)
    summary: dict[str, Any] = {}
    reference = np.array(speed["seconds_per_step"]["transformers:fp32"])
    tokens = float(np.mean(speed["tokens_per_step"]))
    for config in configs:
        seconds = np.array(speed["seconds_per_step"][config])
        summary[f"{config} tokens_per_second"] = tokens / float(np.median(seconds))
        # Ratio of neighbouring steps (run back to back), so a burst of load cancels out.
        summary[f"{config} speedup_vs_transformers_fp32"] = float(np.median(reference / seconds))
        print(f"{config:20s} {summary[f'{config} tokens_per_second']:8.0f} tok/s  "
              f"x{summary[f'{config} speedup_vs_transformers_fp32']:.2f} vs transformers fp32", flush=True)  # fmt: skip
    memory = {}
    for config in configs:
        run = _run_worker(args, [config], args.memory_steps)
        memory[config] = run
        summary[f"{config} peak_rss_mib"] = run["peak_rss_bytes"] / 2**20
        print(f"{config:20s} peak RSS {summary[f'{config} peak_rss_mib']:.0f} MiB", flush=True)
    report = {
        "benchmark": "pretrain",
        "model": args.model,
        "shape": {k: getattr(args, k) for k in ("layers", "hidden", "heads", "seq", "batch", "vocab")},
        "steps": args.steps,
        "warmup": args.warmup,
        "cpu_memory_reuse": not args.no_memory_reuse,
        "summary": summary,
        "speed_run": speed,
        "memory_runs": memory,
        "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), **_versions()},
        "note": "speed: all four configurations in one process, one step each in turn, medians; "
        "peak RSS: one process per configuration. Other processes share the CPU (load_average).",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"pretrain-{args.model}{'-no-reuse' if args.no_memory_reuse else ''}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")


def _forwarded(args: argparse.Namespace, steps: int) -> list[str]:
    names = ("model", "layers", "hidden", "heads", "seq", "batch", "vocab", "warmup")
    out = [f"--{name}={getattr(args, name)}" for name in names] + [f"--steps={steps}"]
    out += ["--no-memory-reuse"] if args.no_memory_reuse else []
    return [*out, "--profile=1"] if args.profile else out


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


if __name__ == "__main__":
    main()
