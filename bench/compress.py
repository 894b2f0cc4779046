"""Compression: accuracy, calibration, size and speed of every method, in one table from one run.

Not a test. Two parts, both through the Python API the verbs call (lmforge.compress):

* Classifier: MiniLM-L6 (asset ``minilm-l6``) fine-tuned on a seeded, balanced sample of the
  zh-sentiment training split (or ``--teacher DIR``), then: int8 dynamic quantization; 40% of the
  heads pruned + recovery; 50% of the MLP neurons pruned + recovery; a 2-layer student distilled
  from it (every third block copied, soft targets + task loss) and the same student trained
  without its teacher (same init, data, steps, seed). Each row: accuracy, agreement with the fp32
  predictions, ECE (and the noise floor of a perfectly calibrated model with its confidences),
  NLL, ECE after temperature recalibration fitted on the validation sample, file size and
  forward examples/s (batch 32, texts of the test sample, best of 3 rounds).
* Decoder: SmolLM2-135M-Instruct (asset; its Q4_1 GGUF weights dequantized to fp32 are the
  baseline) in fp32, int8-wo, int4-wo (groups 32, 64) and gptq-int4 (group 64, calibrated on
  web-bible verses): perplexity on held-out web-bible verses, decode tokens/s at batch 1 (32
  prompt tokens, then 64 greedy tokens through the model forward and its KV cache), file size.

    .venv/bin/python bench/compress.py                         # everything (an hour or more on 2 busy cores)
    .venv/bin/python bench/compress.py --teacher runs/minilm   # reuse a fine-tuned classifier
    .venv/bin/python bench/compress.py --skip-decoder --threads 2

Results: ``bench/results/compress.json`` and ``compress.md``. The host is recorded (CPU model,
ISA, cores, load average before and after): on a machine shared with other jobs, speeds are
lower bounds and their ratios the figures to read.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", "").strip()
        flags = fields.get("Flags", "").split()
        info["isa"] = [
            f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags
        ]
    except (OSError, subprocess.CalledProcessError):
        info["cpu"] = platform.processor()
    info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


def write_split(path: Path, split: str, count: int, seed: int) -> Path:
    """A seeded random sample of a zh-sentiment split as CSV (the named splits are sorted by label)."""
    from lmforge.data import load_task_data

    data = load_task_data("classification", "zh-sentiment", split=split)
    order = list(range(len(data.labels)))
    random.Random(seed).shuffle(order)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in order[:count]:
            writer.writerow([data.texts[i], data.label_names[data.labels[i]]])
    return path


def batches_of(model_dir: Path, data: Path, batch_size: int = 32) -> list[dict[str, Any]]:
    import lmforge
    from lmforge.compress.data import read_train_data

    loaded = lmforge.load(model_dir)
    train = read_train_data(loaded, data)
    source = train.split.source
    import numpy as np
    import torch

    from lmforge.tasks.sources import to_tensors

    out = []
    for indices in source.ordered_batches(batch_size):
        batch = to_tensors(source.collate(indices, np.random.default_rng(0)), torch.device("cpu"))
        out.append({k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")})
    return out


def classifier_rows(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    import lmforge
    from lmforge.compress import QuantizeConfig, quantize
    from lmforge.compress.distill import DistillConfig, distill
    from lmforge.compress.prune import PruneConfig, prune
    from lmforge.compress.report import EvalData
    from lmforge.data import TaskDataConfig
    from lmforge.train.config import OptimConfig
    from lmforge.train.finetune import FinetuneConfig
    from lmforge.train.finetune_run import run_finetune

    train = write_split(work / "train.csv", "train", args.train_limit, 0)
    test = write_split(work / "test.csv", "test", args.eval_limit, 1)
    validation = write_split(work / "validation.csv", "validation", args.eval_limit, 2)
    teacher = Path(args.teacher) if args.teacher else work / "teacher"
    if not args.teacher:
        config = FinetuneConfig(
            max_length=64, batch_size=32, epochs=1, optim=OptimConfig(lr=1e-4, schedule="linear", min_lr_ratio=0.0),
            keep_last=0, progress=False, threads=args.threads,
        )  # fmt: skip
        run_finetune("minilm-l6", train, teacher, config)
    evaluation = EvalData(test, fit_data=validation, config=TaskDataConfig())
    variants: dict[str, tuple[Path, dict[str, Any]]] = {}
    timings: dict[str, float] = {}

    recovery = dict(
        data=train, recovery_steps=args.recovery_steps, batch_size=16, lr=5e-5, importance_batches=8
    )
    student = dict(
        data=train, student_layers=2, init="teacher", steps=args.distill_steps, batch_size=32, lr=1e-4
    )
    runs: dict[str, tuple[str, Any]] = {
        "int8 dynamic": ("int8", lambda out: quantize(teacher, out, QuantizeConfig("int8"), evaluation)),
        "heads -40% + recovery": (
            "heads",
            lambda out: prune(teacher, out, PruneConfig(heads=0.4, **recovery), evaluation),
        ),  # type: ignore[arg-type]
        "ffn -50% + recovery": (
            "ffn",
            lambda out: prune(teacher, out, PruneConfig(ffn=0.5, **recovery), evaluation),
        ),  # type: ignore[arg-type]
        "2-layer student, distilled": (
            "student",
            lambda out: distill(
                teacher, out, DistillConfig(alpha=0.9, temperature=2.0, **student), evaluation
            ),
        ),  # type: ignore[arg-type]
        "2-layer student, no teacher": (
            "alone",
            lambda out: distill(teacher, out, DistillConfig(alpha=0.0, **student), evaluation),
        ),  # type: ignore[arg-type]
    }
    for name, (folder, run) in runs.items():
        start = time.perf_counter()
        variants[name] = (work / folder, run(work / folder))
        timings[name] = time.perf_counter() - start
        print(f"{name}: {timings[name]:.0f} s", flush=True)

    speed_batches = batches_of(teacher, test)
    import torch

    torch.set_num_threads(args.threads)
    models = {
        "fp32": lmforge.load(teacher).model,
        **{name: lmforge.load(path).model for name, (path, _) in variants.items()},
    }

    def forward(model: Any) -> Any:
        def run() -> None:
            with torch.inference_mode():
                for batch in speed_batches:
                    model(**batch)

        return run

    examples = sum(int(b["input_ids"].shape[0]) for b in speed_batches)
    forward(models["fp32"])()  # warm-up
    seconds = interleaved({name: forward(model) for name, model in models.items()}, 3)
    speed = {name: examples / value for name, value in seconds.items()}
    base_bytes = (teacher / "model.safetensors").stat().st_size
    first = next(iter(variants.values()))[1]["calibration"]["before"]
    rows = [
        _classifier_row(
            "fp32 (fine-tuned MiniLM-L6)",
            first,
            1.0,
            base_bytes,
            base_bytes,
            speed["fp32"],
            speed["fp32"],
            models["fp32"].num_parameters(),
        )
    ]
    for name, (_, report) in variants.items():
        after = report["calibration"]["after"]
        row = _classifier_row(
            name,
            after,
            report["calibration"]["agreement"],
            report["file_bytes"],
            base_bytes,
            speed[name],
            speed["fp32"],
            models[name].num_parameters(),
        )
        row["seconds"] = timings[name]
        row["report"] = {k: v for k, v in report.items() if k not in ("calibration",)}
        rows.append(row)
    return rows


def _classifier_row(
    name: str,
    metrics: dict[str, Any],
    agreement: float,
    file_bytes: int,
    base_bytes: int,
    speed: float,
    base_speed: float,
    parameters: int,
) -> dict[str, Any]:
    raw, recal = metrics["raw"], metrics["recalibrated"]
    return {
        "model": name,
        "accuracy": raw["accuracy"],
        "agreement": agreement,
        "ece": raw["ece"],
        "ece_floor": raw["ece_floor"],
        "nll": raw["nll"],
        "ece_recalibrated": recal["ece"],
        "ece_recalibrated_floor": recal["ece_floor"],
        "nll_recalibrated": recal["nll"],
        "temperature": metrics["temperature"],
        "parameters": parameters,
        "file_mb": file_bytes / 2**20,
        "file_ratio": file_bytes / base_bytes,
        "examples_per_second": speed,
        "speedup": speed / base_speed,
    }


def interleaved(runs: dict[str, Any], rounds: int) -> dict[str, float]:
    """Median seconds of each ``runs[name]()`` over ``rounds`` rounds that run every one in turn, so
    that load from other jobs on a shared machine falls on all of them alike."""
    import statistics

    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def decoder_rows(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    import torch

    import lmforge
    from lmforge.compress import QuantizeConfig, quantize
    from lmforge.data.readers import iter_texts
    from lmforge.models import KVCache

    base = work / "smollm2"
    if not (base / "config.json").is_file():
        loaded = lmforge.load("smollm2-135m-instruct")
        lmforge.save(loaded.model, base, loaded.tokenizer)
    tokenizer = lmforge.load(base).tokenizer
    assert tokenizer is not None
    texts = list(iter_texts(["web-bible"]))
    held_out = " ".join(texts[-400:])  # Revelation; GPTQ calibrates on the first verses (Genesis)
    ids = tokenizer.encode(held_out, add_special_tokens=False)[: args.ppl_tokens]
    chunks = torch.tensor(ids[: len(ids) // 256 * 256]).view(-1, 256)
    gptq = dict(calibration=("web-bible",), calibration_samples=16, calibration_length=256)
    variants: dict[str, tuple[Path, Any]] = {
        "fp32 (Q4_1 GGUF dequantized)": (base, None),
        "int8 dynamic (W8A8)": (work / "int8", QuantizeConfig("int8")),
        "int8-wo": (work / "int8-wo", QuantizeConfig("int8-wo")),
        "gptq-int8": (work / "gptq-int8", QuantizeConfig("gptq-int8", **gptq)),  # type: ignore[arg-type]
        "int4-wo g32": (work / "int4-g32", QuantizeConfig("int4-wo", 32)),
        "int4-wo g64": (work / "int4-g64", QuantizeConfig("int4-wo", 64)),
        "gptq-int4 g64": (work / "gptq-g64", QuantizeConfig("gptq-int4", 64, **gptq)),  # type: ignore[arg-type]
        "int4-wo g64 + LM head": (work / "int4-g64-head", QuantizeConfig("int4-wo", 64, lm_head=True)),
    }
    torch.set_num_threads(args.threads)
    rows, models = [], {}
    for name, (path, config) in variants.items():
        seconds = 0.0
        if config is not None and not (path / "config.json").is_file():
            start = time.perf_counter()
            quantize(base, path, config)
            seconds = time.perf_counter() - start
        model = models[name] = lmforge.load(path).model
        with torch.inference_mode():
            nll = sum(
                float(
                    torch.nn.functional.cross_entropy(model(c[None]).logits[0, :-1], c[1:], reduction="sum")
                )
                for c in chunks
            )
        tokens = chunks.numel() - len(chunks)
        rows.append({
            "model": name, "perplexity": float(torch.exp(torch.tensor(nll / tokens))), "ppl_tokens": tokens,
            "file_mb": (path / "model.safetensors").stat().st_size / 2**20, "quantize_seconds": seconds,
        })  # fmt: skip
        print(f"{name}: perplexity {rows[-1]['perplexity']:.3f}", flush=True)
    # Decoding: each model holds its own KV cache after a 32-token prompt; every round decodes
    # ``decode_tokens // rounds`` greedy tokens with each model in turn.
    state: dict[str, list[Any]] = {}

    def decoder(name: str) -> Any:
        model = models[name]

        def run() -> None:
            cache, token = state[name]
            for _ in range(steps):
                out = model(token, past_key_values=cache, use_cache=True)
                token = out.logits[:, -1:].argmax(-1)
            state[name][1] = token

        return run

    rounds = 8
    steps = max(1, args.decode_tokens // rounds)
    with torch.inference_mode():
        for name, model in models.items():
            cache = KVCache()
            out = model(chunks[:1, :32], past_key_values=cache, use_cache=True)
            state[name] = [cache, out.logits[:, -1:].argmax(-1)]
        seconds = interleaved({name: decoder(name) for name in models}, rounds)
    base_row = rows[0]
    for row in rows:
        row["decode_tokens_per_second"] = steps / seconds[row["model"]]
    for row in rows:
        row["perplexity_change"] = row["perplexity"] / base_row["perplexity"] - 1
        row["decode_speedup"] = row["decode_tokens_per_second"] / base_row["decode_tokens_per_second"]
        row["file_ratio"] = row["file_mb"] / base_row["file_mb"]
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Compression ({result['machine'].get('cpu')}, {result['machine']['cpus']} cores, {result['threads']} thread(s), load {result['load_average_before_after']})",
        "",
    ]
    if result.get("classifier"):
        lines += [
            "| classifier | acc | agree | ECE (floor) | NLL | ECE recal. (floor) | params | file MB (x) | ex/s (x) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in result["classifier"]:
            lines.append(
                f"| {r['model']} | {r['accuracy']:.4f} | {r['agreement']:.4f} | {r['ece']:.4f} ({r['ece_floor']['mean']:.4f}) | {r['nll']:.4f} | "
                f"{r['ece_recalibrated']:.4f} ({r['ece_recalibrated_floor']['mean']:.4f}) | {r['parameters']:,} | {r['file_mb']:.1f} ({r['file_ratio']:.2f}) | "
                f"{r['examples_per_second']:.1f} ({r['speedup']:.2f}) |"
            )
        lines.append("")
    if result.get("decoder"):
        lines += [
            "| SmolLM2-135M | perplexity (change) | decode tok/s (x) | file MB (x) |",
            "|---|---|---|---|",
        ]
        for r in result["decoder"]:
            lines.append(
                f"| {r['model']} | {r['perplexity']:.3f} ({100 * r['perplexity_change']:+.2f}%) | {r['decode_tokens_per_second']:.1f} ({r['decode_speedup']:.2f}) | {r['file_mb']:.1f} ({r['file_ratio']:.2f}) |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", help="A fine-tuned MiniLM classifier to reuse (else one is trained).")
    parser.add_argument("--work", default=None, help="Working folder (default: a temporary one, removed).")
    parser.add_argument("--train-limit", type=int, default=3000)
    parser.add_argument("--eval-limit", type=int, default=800)
    parser.add_argument("--recovery-steps", type=int, default=60)
    parser.add_argument("--distill-steps", type=int, default=150)
    parser.add_argument("--ppl-tokens", type=int, default=2048)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads while timing (1: least disturbed by other jobs).",
    )
    parser.add_argument("--skip-classifier", action="store_true")
    parser.add_argument("--skip-decoder", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "compress.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import tempfile

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lmforge-bench-compress-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "benchmark": "compress",
        "machine": machine(),
        "threads": args.threads,
        "settings": vars(args),
    }
    before = os.getloadavg()
    started = time.perf_counter()
    if not args.skip_classifier:
        result["classifier"] = classifier_rows(args, work)
    if not args.skip_decoder:
        result["decoder"] = decoder_rows(args, work)
    result["load_average_before_after"] = [round(before[0], 2), round(os.getloadavg()[0], 2)]
    result["wall_seconds"] = time.perf_counter() - started
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
