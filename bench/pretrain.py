"""Pretraining throughput: lmforge's training step vs transformers with a plain AdamW loop.

Not a test. Each configuration runs in its own process (peak RSS is per process), and rounds
interleave the implementations so that load from other processes on a shared machine hits
both alike; the best round counts. Same model shape, same batches, same optimizer settings.

    .venv/bin/python bench/pretrain.py --model gpt2            # 6L / 384d / T=256 / B=8, fp32 + bf16
    .venv/bin/python bench/pretrain.py --model bert --rounds 3
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
    ]  # fmt: skip
    if args.model == "gpt2":
        return ["model.preset=gpt2-tiny", "objective.kind=causal_lm", *shape]
    return ["model.preset=bert-tiny", "objective.kind=masked_lm", "objective.sentence_task=nsp", *shape]


def _trainer(args: argparse.Namespace, precision: str, out: str) -> Any:
    from lmforge.train import DataBundle, Trainer, load_config

    specials = {"pad_token": 0, "unk_token": 1, "cls_token": 2, "sep_token": 3, "mask_token": 4, "eos_token": 5}
    corpus = RandomCorpus(args.vocab, 2_000_000, seed=0)
    data = DataBundle(corpus, corpus, vocab_size=args.vocab, special_tokens=specials)
    return Trainer(load_config(None, _overrides(args, precision)), data, out)


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


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One implementation at one precision: warmup steps, then timed steps."""
    import contextlib

    import torch

    from lmforge.train.build import batch_tokens

    impl, precision = args.worker.split(":")
    impl = impl.removesuffix("+thp")
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with tempfile.TemporaryDirectory() as out:
        trainer = _trainer(args, precision, out)  # lmforge's collation makes the batches for both
        batches = [trainer.train_source.train_batch(s, args.batch) for s in range(args.warmup + args.steps)]
        tokens = sum(batch_tokens(b) for b in batches[args.warmup :])
        if impl == "lmforge":
            step = trainer.train_step
            num_parameters = trainer.model.num_parameters()
        else:
            del trainer
            torch.manual_seed(0)
            model = _hf_model(args).train()
            num_parameters = sum(p.numel() for p in model.parameters())
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
            hf_batches = [_hf_batch(b, args.model) for b in batches]

            def step(index: int) -> None:
                autocast = (
                    torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
                )
                with autocast:
                    loss = model(**hf_batches[index]).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

        for index in range(args.warmup):
            step(index)
        profiler = torch.profiler.profile() if args.profile else contextlib.nullcontext()
        with profiler:
            start = time.perf_counter()
            for index in range(args.warmup, args.warmup + args.steps):
                step(index)
            seconds = time.perf_counter() - start
        if args.profile:
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)
    return {
        "impl": impl,
        "precision": precision,
        "tokens_per_second": tokens / seconds,
        "seconds_per_step": seconds / args.steps,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "baseline_rss_bytes": baseline_rss,
        "num_parameters": num_parameters,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["gpt2", "bert"], default="gpt2")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=50257, help="GPT-2's BPE vocabulary by default")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--hf-thp", action="store_true", help="also run transformers with 2 MB pages")
    parser.add_argument("--no-thp", action="store_true", help="run lmforge without 2 MB pages")
    parser.add_argument("--profile", default=None, help="impl:precision to profile (prints an op table)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    impls = ("transformers", "transformers+thp", "lmforge") if args.hf_thp else ("transformers", "lmforge")
    configs = [f"{impl}:{p}" for p in args.precisions.split(",") for impl in impls]
    if args.profile:
        configs, args.rounds = [args.profile], 1
    runs: list[dict[str, Any]] = []
    for round_index in range(args.rounds):
        order = configs if round_index % 2 == 0 else configs[::-1]
        for config in order:
            command = [sys.executable, __file__, "--worker", config, *_forwarded(args)]
            env = dict(os.environ)
            # `lmforge pretrain` turns on 2 MB pages for big CPU tensors; give transformers the
            # same in the "+thp" rows to separate that from the rest of the engine.
            if config.startswith(("lmforge", "transformers+thp")) and not args.no_thp:
                env["THP_MEM_ALLOC_ENABLE"] = "1"
            load_before = os.getloadavg()[0]
            result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
            if result.returncode != 0:
                raise SystemExit(f"{config} failed:\n{result.stderr[-4000:]}")
            if args.profile:
                print(result.stderr)
            run = {**json.loads(result.stdout.strip().splitlines()[-1]), "round": round_index, "config": config}
            run["load_average"] = [load_before, os.getloadavg()[0]]
            runs.append(run)
            print(
                f"round {round_index} {config:20s} {run['tokens_per_second']:8.0f} tok/s "
                f"{run['seconds_per_step']:6.3f} s/step  peak RSS {run['peak_rss_bytes'] / 2**20:6.0f} MiB  "
                f"load {run['load_average'][0]:.1f}",
                flush=True,
            )
    best = {c: max((r for r in runs if r["config"] == c), key=_speed) for c in configs}
    summary: dict[str, Any] = {f"{c} tokens_per_second": best[c]["tokens_per_second"] for c in configs}
    summary.update({f"{c} peak_rss_mib": best[c]["peak_rss_bytes"] / 2**20 for c in configs})
    reference = best.get("transformers:fp32")
    if reference:
        for config in configs:
            summary[f"{config} speedup_vs_transformers_fp32"] = _speed(best[config]) / _speed(reference)
    report = {
        "benchmark": "pretrain",
        "model": args.model,
        "shape": {k: getattr(args, k) for k in ("layers", "hidden", "heads", "seq", "batch", "vocab")},
        "steps": args.steps,
        "warmup": args.warmup,
        "summary": summary,
        "runs": runs,
        "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), **_versions()},
        "note": "best of rounds; other processes share the CPU (see load_average per run)",
    }
    if not args.profile:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"pretrain-{args.model}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(summary, indent=2))
        print(f"wrote {path}")


def _speed(run: dict[str, Any]) -> float:
    return float(run["tokens_per_second"])


def _forwarded(args: argparse.Namespace) -> list[str]:
    names = ("model", "layers", "hidden", "heads", "seq", "batch", "vocab", "steps", "warmup")
    out = [f"--{name}={getattr(args, name)}" for name in names]
    return [*out, "--profile=1"] if args.profile else out


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}


if __name__ == "__main__":
    main()
