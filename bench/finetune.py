"""Fine-tuning throughput: lmforge's fine-tune loop vs transformers' ``Trainer``, side by side.

Not a test. Both run their real training loop (``lmforge.train.finetune.finetune_model`` and
``Trainer.train``) in two threads of one process that take one optimizer step each in turn (a
baton passed at the end of every step), so a burst of load from other processes on a shared
machine hits both alike; the first ``--warmup`` steps of each are not timed. A step's time runs
from the moment its loop gets the baton back to the end of its next optimizer step, so it holds
everything the loop does per step: batch collation and padding, forward, loss, backward, gradient
clipping, AdamW, the LR schedule, logging hooks.

    .venv/bin/python bench/finetune.py                     # MiniLM-L6 (minilm-l6), zh-sentiment, B=32, T<=128
    .venv/bin/python bench/finetune.py --steps 10 --warmup 2
    .venv/bin/python bench/finetune.py --impls lmforge --profile   # op table of one loop alone

Same model (the ``minilm-l6`` asset: lmforge loads it with a fresh classification head,
transformers as ``BertForSequenceClassification.from_pretrained`` of the same folder), same
tokenised examples in the same batches (lmforge's seeded batch order; ``Trainer`` gets them in
that order with ``train_sampling_strategy="sequential"``), dynamic padding to the longest member
of each batch in both (``DataCollatorWithPadding``; no length grouping in either: lmforge has
none, so ``group_by_length`` would only change the Trainer's batches), fp32, fused AdamW, lr 5e-5
linear with 6% warmup, weight decay 0.01, clip 1.0, dropout as in the checkpoint, no evaluation,
no logging or saving in ``Trainer``, dataloader workers 0, ``--threads`` torch threads for both.
Three loops by default: ``transformers``; ``lmforge`` with its defaults, which trains each
batch as up to 4 length-sorted micro-batches padded separately (``length_groups``, same update,
less padding: :mod:`lmforge.train.length_groups`); and ``lmforge-whole`` (``length_groups=1``),
padding every batch as one exactly like the Trainer, the like-for-like loop comparison.
Results go to ``bench/results/finetune.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


class Alternator:
    """Lets training loops in different threads take one step each in turn and times each step."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.turn = names[0]
        self.finished: set[str] = set()
        self.cond = threading.Condition()
        self.seconds: dict[str, list[float]] = {name: [] for name in names}
        self._resumed: dict[str, float] = {}

    def start(self, name: str) -> None:
        self._wait(name)
        self._resumed[name] = time.perf_counter()

    def step_done(self, name: str) -> None:
        self.seconds[name].append(time.perf_counter() - self._resumed[name])
        self._hand_over(name)
        self._wait(name)
        self._resumed[name] = time.perf_counter()

    def finish(self, name: str) -> None:
        with self.cond:
            self.finished.add(name)
        self._hand_over(name)

    def _hand_over(self, name: str) -> None:
        with self.cond:
            position = self.names.index(name)
            for offset in range(1, len(self.names) + 1):
                candidate = self.names[(position + offset) % len(self.names)]
                if candidate not in self.finished:
                    self.turn = candidate
                    break
            self.cond.notify_all()

    def _wait(self, name: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == name)


def _examples(args: argparse.Namespace, tokenizer: Any) -> tuple[Any, list[dict[str, list[int]]], list[str]]:
    """lmforge's training split and, in lmforge's batch order, the unpadded rows of every step."""
    from lmforge.data import TaskDataConfig, load_task_data
    from lmforge.train.finetune_run import make_split

    data = load_task_data("classification", args.data, split="train", config=TaskDataConfig(limit=args.limit))
    split = make_split("classification", data, tokenizer, args.max_length, seed=0)
    rows = []
    for step in range(args.warmup + args.steps):
        batch = split.source.train_batch(step, args.batch)
        for row in range(len(batch["input_ids"])):
            n = int(batch["attention_mask"][row].sum())
            rows.append(
                {
                    "input_ids": batch["input_ids"][row, :n].tolist(),
                    "token_type_ids": batch["token_type_ids"][row, :n].tolist(),
                    "attention_mask": [1] * n,
                    "labels": int(batch["labels"][row]),
                }
            )
    return split, rows, list(data.label_names)


def _time_lmforge_steps(alternator: Alternator) -> None:
    """Hand the baton on after each lmforge optimizer step (the loop logs one train record per step)."""
    import lmforge.train.loop as loop

    class TimedLog(loop.MetricsLog):
        def write(self, record: dict[str, Any]) -> None:
            super().write(record)
            if record.get("kind") == "train":  # each loop runs in a thread named after it
                alternator.step_done(threading.current_thread().name)

    loop.MetricsLog = TimedLog  # type: ignore[misc]


def _run_lmforge(
    args: argparse.Namespace, alternator: Alternator, split: Any, names: list[str], out: str, groups: int
) -> None:
    import lmforge.train.finetune as finetune
    from lmforge.models.io.checkpoint import load
    from lmforge.train.config import OptimConfig

    name = threading.current_thread().name
    loaded = load("minilm-l6", head="sequence_classification", num_labels=len(names))
    config = finetune.FinetuneConfig(
        max_length=args.max_length, batch_size=args.batch, max_steps=args.warmup + args.steps,
        optim=OptimConfig(lr=5e-5, schedule="linear", min_lr_ratio=0.0, weight_decay=0.01, clip_grad_norm=1.0),
        warmup_ratio=0.06, threads=args.threads, progress=False, length_groups=groups, keep_last=0,
    )  # fmt: skip
    alternator.start(name)
    try:
        finetune.finetune_model(loaded.model, loaded.tokenizer, split, out, config, names)
    finally:
        alternator.finish(name)


def _run_transformers(
    args: argparse.Namespace, alternator: Alternator, rows: list[dict], names: list[str], out: str
) -> None:
    import transformers

    from lmforge.assets import asset_path

    folder = asset_path("minilm-l6")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.BertForSequenceClassification.from_pretrained(folder, num_labels=len(names))

    class StepHook(transformers.TrainerCallback):
        def on_step_end(self, *unused: Any, **kwargs: Any) -> None:
            alternator.step_done("transformers")

    training_args = transformers.TrainingArguments(
        output_dir=out, per_device_train_batch_size=args.batch, max_steps=args.warmup + args.steps,
        learning_rate=5e-5, lr_scheduler_type="linear", warmup_steps=0.06, weight_decay=0.01, max_grad_norm=1.0,
        optim="adamw_torch_fused", train_sampling_strategy="sequential", dataloader_num_workers=0,
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=True, seed=0, dataloader_drop_last=False,
    )  # fmt: skip
    trainer = transformers.Trainer(
        model=model, args=training_args, train_dataset=rows,
        data_collator=transformers.DataCollatorWithPadding(tokenizer), callbacks=[StepHook()],
    )  # fmt: skip
    alternator.start("transformers")
    try:
        trainer.train()
    finally:
        alternator.finish("transformers")


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="zh-sentiment", help="classification file or named dataset")
    parser.add_argument("--limit", type=int, default=None, help="read at most N records")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed steps of each loop")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps of each loop")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (both loops)")
    parser.add_argument(
        "--impls",
        default="transformers,lmforge,lmforge-whole",
        help="loops to compare: transformers, lmforge (default settings) and lmforge-whole "
        "(length_groups=1: every batch padded as one, exactly like the Trainer)",
    )
    parser.add_argument("--length-groups", type=int, default=4, help="lmforge's length_groups")
    parser.add_argument("--profile", action="store_true", help="print an op table (use with one impl)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    import lmforge

    torch.set_num_threads(args.threads)
    impls = args.impls.split(",")
    tokenizer = lmforge.load("minilm-l6").tokenizer
    split, rows, names = _examples(args, tokenizer)
    alternator = Alternator(impls)
    _time_lmforge_steps(alternator)
    errors: list[BaseException] = []
    load_before = os.getloadavg()
    profiler: Any = torch.profiler.profile() if args.profile else None
    with tempfile.TemporaryDirectory() as out:
        runners = {
            "lmforge": lambda: _run_lmforge(
                args, alternator, split, names, f"{out}/lmforge", args.length_groups
            ),
            "lmforge-whole": lambda: _run_lmforge(args, alternator, split, names, f"{out}/whole", 1),
            "transformers": lambda: _run_transformers(args, alternator, rows, names, f"{out}/transformers"),
        }

        def guarded(name: str) -> None:
            try:
                runners[name]()
            except BaseException as exc:  # surface it in the main thread
                errors.append(exc)
                alternator.finish(name)

        threads = [threading.Thread(target=guarded, args=(name,), name=name) for name in impls]
        if profiler is not None:
            profiler.start()
        if len(impls) == 1:  # in the main thread: the profiler sees only the thread that started it
            threading.current_thread().name = impls[0]
            guarded(impls[0])
        else:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        if profiler is not None:
            profiler.stop()
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=30), file=sys.stderr)
    load_after = os.getloadavg()
    if errors:
        raise errors[0]
    tokens = [len(r["input_ids"]) for r in rows]
    padded = []
    for step in range(args.warmup, args.warmup + args.steps):
        widths = [len(r["input_ids"]) for r in rows[step * args.batch : (step + 1) * args.batch]]
        padded.append(max(widths) * len(widths))
    summary: dict[str, Any] = {}
    timed = {name: alternator.seconds[name][args.warmup :] for name in impls}
    for name in impls:
        seconds = timed[name]
        summary[f"{name} examples_per_second"] = args.batch * len(seconds) / sum(seconds)
        summary[f"{name} median_step_seconds"] = _median(seconds)
    for name in [n for n in impls if n.startswith("lmforge")] if "transformers" in impls else []:
        # Same step index = same batch in every loop, run back to back: the per-step ratio
        # cancels both the batch width and a burst of outside load.
        ratios = [t / m for t, m in zip(timed["transformers"], timed[name])]
        summary[f"{name} speedup_median_of_step_ratios"] = _median(ratios)
        summary[f"{name} speedup_total_time"] = sum(timed["transformers"]) / sum(timed[name])
    for key, value in summary.items():
        print(f"{key:40s} {value:10.3f}")
    if args.profile or not {"lmforge", "transformers"} <= set(impls):
        return
    import transformers

    report = {
        "benchmark": "finetune",
        "model": "minilm-l6 (all-MiniLM-L6-v2 body, fresh 2-class head; 6 layers, hidden 384)",
        "data": args.data,
        "settings": {
            "batch_size": args.batch,
            "max_length": args.max_length,
            "steps": args.steps,
            "warmup": args.warmup,
            "threads": args.threads,
            "precision": "fp32",
            "lr": 5e-5,
            "schedule": "linear, 6% warmup",
            "weight_decay": 0.01,
            "clip_grad_norm": 1.0,
            "optimizer": "AdamW fused (both)",
            "padding": "dynamic, to the longest in the batch (both)",
            "group_by_length": False,
            "lmforge_length_groups": args.length_groups,
            "dataloader_workers": 0,
            "evaluation": "none",
            "trainer_logging": "off",
        },  # fmt: skip
        "tokens_per_example_mean": sum(tokens) / len(tokens),
        "padded_tokens_per_step_mean": sum(padded) / len(padded),
        "summary": summary,
        "seconds_per_step": timed,
        "load_average_before_after": [list(load_before), list(load_after)],
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },  # fmt: skip
        "note": "both loops in one process, one optimizer step each in turn; other processes share "
        "the CPU (see load_average), so figures are noisy; the per-step ratio is the robust one.",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "finetune.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
