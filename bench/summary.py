"""One table of every benchmark: reads the JSON each ``bench/*.py`` wrote under bench/results/.

Not a benchmark itself (nothing is timed here); ``make bench`` runs it after the benches.

    .venv/bin/python bench/summary.py                       # bench/results -> summary.json + README.md
    .venv/bin/python bench/summary.py --failed serve,compress   # benches whose last run failed

One row per measure: bench, case, lmforge's figure, the reference's figure (transformers, or
lmforge's own plain path where that is the comparison), their ratio, the goal, whether it was met,
the unit. The ratio is the bench's own same-run ratio where it records one (the median of per-step
or per-repetition ratios, robust to load from other jobs), else lmforge / reference. Each result
file's machine (CPU model, ISA, torch threads, torch version) and date are listed with it. A bench
without a result file is "not run"; a file of an unexpected shape is reported by name.

Goals the benches do not write into their JSON (pretrain, finetune, prompt, compress) are those of
their issues; generate and serve record their own goals, and those are used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
JSON = dict[str, Any]


@dataclass(frozen=True)
class Goal:
    """A goal's text and its test on (lmforge figure, reference figure, ratio)."""

    text: str
    check: Callable[[float, float, float], bool]


def at_least(x: float) -> Goal:
    return Goal(f"≥ {x:g}×", lambda ours, ref, ratio: ratio >= x)


def at_most(x: float) -> Goal:
    return Goal(f"≤ {x:g}×", lambda ours, ref, ratio: ratio <= x)


def drop_at_most(points: float) -> Goal:
    return Goal(f"drop ≤ {points:g} point", lambda ours, ref, ratio: (ref - ours) * 100 <= points + 1e-9)


def gain_at_least(points: float) -> Goal:
    return Goal(f"gain ≥ {points:g} point", lambda ours, ref, ratio: (ours - ref) * 100 >= points)


def rise_at_most(percent: float) -> Goal:
    return Goal(f"+≤ {percent:g}%", lambda ours, ref, ratio: (ratio - 1) * 100 <= percent)


def value_at_least(x: float) -> Goal:
    return Goal(f"≥ {x:g}", lambda ours, ref, ratio: ours >= x)


@dataclass
class Row:
    bench: str
    case: str
    lmforge: float | None
    reference: float | None
    ratio: float | None
    goal: str
    met: bool | None
    unit: str
    file: str = ""


def measure(
    case: str,
    ours: float,
    ref: float,
    unit: str,
    goal: Goal | str | None = None,
    ratio: float | None = None,
    met: bool | None = None,
) -> Row:
    """A row; ``ratio`` defaults to ours / ref, ``met`` to the goal's test when it is a Goal."""
    ours, ref = float(ours), float(ref)
    if ratio is None:
        ratio = ours / ref if ref else None
    if isinstance(goal, Goal):
        met = goal.check(ours, ref, ratio) if ratio is not None else None
    text = goal.text if isinstance(goal, Goal) else (goal or "")
    return Row("", case, ours, ref, None if ratio is None else float(ratio), text, met, unit)


# --- one extractor per bench: a result file's JSON -> its rows ------------------------------------


def pretrain_rows(data: JSON) -> Iterator[Row]:
    summary, model = data["summary"], data["model"]
    goals = {"fp32": at_least(1.3), "bf16": Goal("≥ 2× (native bf16)", at_least(2.0).check)}
    for precision in ("fp32", "bf16"):
        ours, ref = f"lmforge:{precision}", f"transformers:{precision}"
        if f"{ours} tokens_per_second" not in summary:
            continue
        yield measure(
            f"{model} {precision} vs transformers",
            summary[f"{ours} tokens_per_second"],
            summary[f"{ref} tokens_per_second"],
            "tokens/s",
            goals[precision],
        )
        if f"{ours} peak_rss_mib" in summary:
            yield measure(
                f"{model} {precision} peak RSS vs transformers",
                summary[f"{ours} peak_rss_mib"],
                summary[f"{ref} peak_rss_mib"],
                "MiB",
                at_most(0.6),
            )


def finetune_rows(data: JSON) -> Iterator[Row]:
    summary = data["summary"]
    reference = summary["transformers examples_per_second"]
    cases = {
        "lmforge-whole": ("identical batching vs Trainer", at_least(1.3)),
        "lmforge": ("lmforge defaults (length groups) vs Trainer", at_least(2.0)),
    }
    for impl, (case, goal) in cases.items():
        if f"{impl} examples_per_second" in summary:
            yield measure(
                case,
                summary[f"{impl} examples_per_second"],
                reference,
                "examples/s",
                goal,
                ratio=summary[f"{impl} speedup_median_of_step_ratios"],
            )


def generate_rows(data: JSON) -> Iterator[Row]:
    for case, row in data["results"].items():
        first = True
        for key in row:
            if not key.endswith(" speed") or " / " not in key:
                continue
            ours, ref = key[: -len(" speed")].split(" / ")
            goal = row["goal"] if first else "(in the goal above)"
            met = row["met"] if first else None
            yield measure(
                f"{case}: {ours} vs {ref}", row[f"{ours} tok_s"], row[f"{ref} tok_s"], "tok/s",
                goal, ratio=row[key], met=met,
            )  # fmt: skip
            first = False
        if row.get("lmforge fraction_of_bound") is not None:
            yield measure(
                f"{case}: lmforge vs bandwidth bound", row["lmforge tok_s"], row["bound tok_s"], "tok/s",
                "(in the goal above)", ratio=row["lmforge fraction_of_bound"],
            )  # fmt: skip


def prompt_rows(data: JSON) -> Iterator[Row]:
    inputs = data["inputs"]
    yield measure(
        f"{'/'.join(data['labels'])}, {data['shots']} shots: prefix-cached vs naive",
        inputs / data["cached_seconds"],
        inputs / data["naive_seconds"],
        "inputs/s",
        at_least(3.0),
    )


def serve_rows(data: JSON) -> Iterator[Row]:
    concurrent, sequential = data["concurrent"], data["sequential"]
    clients = concurrent["clients"]
    yield measure(
        f"{clients} clients vs one at a time: throughput",
        concurrent["tokens_per_s"],
        sequential["tokens_per_s"],
        "tokens/s",
        f"≥ {data['goal_ratio']:g}×",
        ratio=data["throughput_ratio"],
        met=data["goal_met"],
    )
    for key in ("latency_p50_s", "latency_p95_s", "ttft_p50_s", "ttft_p95_s"):
        name = key[: -len("_s")].replace("_", " ").replace("ttft", "time to first token")
        yield measure(f"{clients} clients vs one at a time: {name}", concurrent[key], sequential[key], "s")


CLASSIFIER_GOALS: dict[str, dict[str, Goal]] = {
    "int8 dynamic": {"accuracy": drop_at_most(1), "agreement": value_at_least(0.98),
                     "examples/s": at_least(1.3), "file": at_most(0.3)},
    "heads -40% + recovery": {"accuracy": drop_at_most(1)},
    "ffn -50% + recovery": {"accuracy": drop_at_most(2), "examples/s": at_least(1.3)},
    "2-layer student, distilled": {"accuracy": at_least(0.95), "examples/s": at_least(2.2)},
}  # fmt: skip
DECODER_GOALS: dict[str, dict[str, Goal]] = {
    "int8-wo": {"tok/s": at_least(1.3), "perplexity": rise_at_most(0.5)},
    "int4-wo g32": {"tok/s": at_least(1.4), "perplexity": rise_at_most(15)},
    "int4-wo g64": {"tok/s": at_least(1.4), "perplexity": rise_at_most(15)},
    "int4-wo g64 + LM head": {"tok/s": at_least(1.4), "perplexity": rise_at_most(15)},
    "gptq-int4 g64": {"tok/s": at_least(1.4), "perplexity": rise_at_most(8)},
}


def compress_rows(data: JSON) -> Iterator[Row]:
    classifier = data.get("classifier") or []
    decoder = data.get("decoder") or []
    if not classifier and not decoder:
        raise KeyError("classifier")
    if classifier:
        base, *variants = classifier
        by_name = {row["model"]: row for row in variants}
        floor = base["ece_recalibrated_floor"]
        ece_goal = Goal(f"≤ fp32 + its floor {floor:.3f}", lambda ours, ref, ratio: ours <= ref + floor)
        for row in variants:
            name, goals = row["model"], CLASSIFIER_GOALS.get(row["model"], {})
            yield measure(f"{name}: accuracy vs fp32", row["accuracy"], base["accuracy"], "accuracy",
                          goals.get("accuracy"))  # fmt: skip
            if "agreement" in goals:
                yield measure(
                    f"{name}: agreement with fp32", row["agreement"], 1.0, "fraction", goals["agreement"]
                )
            yield measure(f"{name}: speed vs fp32", row["examples_per_second"], base["examples_per_second"],
                          "examples/s", goals.get("examples/s"), ratio=row["speedup"])  # fmt: skip
            yield measure(f"{name}: file vs fp32", row["file_mb"], base["file_mb"], "MB", goals.get("file"),
                          ratio=row["file_ratio"])  # fmt: skip
            yield measure(f"{name}: recalibrated ECE vs fp32", row["ece_recalibrated"], base["ece_recalibrated"],
                          "ECE", ece_goal)  # fmt: skip
        if "2-layer student, distilled" in by_name and "2-layer student, no teacher" in by_name:
            distilled, alone = by_name["2-layer student, distilled"], by_name["2-layer student, no teacher"]
            yield measure("2-layer student: distilled vs no teacher", distilled["accuracy"], alone["accuracy"],
                          "accuracy", gain_at_least(1))  # fmt: skip
    if decoder:
        base, *variants = decoder
        for row in variants:
            name, goals = row["model"], DECODER_GOALS.get(row["model"], {})
            yield measure(f"{name}: decode vs fp32", row["decode_tokens_per_second"],
                          base["decode_tokens_per_second"], "tok/s", goals.get("tok/s"),
                          ratio=row["decode_speedup"])  # fmt: skip
            yield measure(f"{name}: perplexity vs fp32", row["perplexity"], base["perplexity"], "perplexity",
                          goals.get("perplexity"))  # fmt: skip
            yield measure(
                f"{name}: file vs fp32", row["file_mb"], base["file_mb"], "MB", ratio=row["file_ratio"]
            )


@dataclass(frozen=True)
class Bench:
    patterns: tuple[str, ...]  # result file names under bench/results (globs)
    rows: Callable[[JSON], Iterator[Row]]


# In the order `make bench` runs them.
BENCHES: dict[str, Bench] = {
    "pretrain": Bench(("pretrain-*.json",), pretrain_rows),
    "finetune": Bench(("finetune.json",), finetune_rows),
    "generate": Bench(("generate.json", "generate-quick.json"), generate_rows),
    "prompt": Bench(("prompt.json", "prompt_multitoken.json"), prompt_rows),
    "serve": Bench(("serve.json",), serve_rows),
    "compress": Bench(("compress.json",), compress_rows),
}


# --- machine and date of a result file ------------------------------------------------------------


def _first(data: JSON, *paths: str) -> Any:
    """The first of the dotted ``paths`` present in ``data`` (None if none is)."""
    for path in paths:
        node: Any = data
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            return node
    return None


def machine_info(data: JSON) -> dict[str, Any]:
    """CPU model, ISA, torch threads and torch version, wherever each bench put them."""
    cpu = _first(data, "machine.cpu", "cpu", "machine")
    isa = _first(data, "machine.cpu_capability", "machine.torch_cpu_capability", "isa", "machine.isa")
    threads = _first(data, "machine.torch_threads", "settings.threads", "threads", "torch_threads",
                     "speed_run.threads")  # fmt: skip
    info = {
        "cpu": cpu if isinstance(cpu, str) else None,
        "isa": " ".join(isa) if isinstance(isa, list) else isa,
        "threads": threads,
        "cores": _first(data, "machine.cpus", "cores"),
        "torch": _first(data, "machine.torch", "torch"),
    }
    return {key: value for key, value in info.items() if value is not None}


def file_date(path: Path) -> str:
    """The file's last commit date if git has it unchanged, else its modification time (UTC)."""
    when = None
    try:
        git = ["git", "-C", str(path.parent)]
        changed = subprocess.run([*git, "status", "--porcelain", "--", path.name], capture_output=True,
                                 text=True, check=True).stdout.strip()  # fmt: skip
        if not changed:
            stamp = subprocess.run([*git, "log", "-1", "--format=%ct", "--", path.name], capture_output=True,
                                   text=True, check=True).stdout.strip()  # fmt: skip
            when = float(stamp) if stamp else None
    except (OSError, subprocess.CalledProcessError):
        pass
    if when is None:
        when = path.stat().st_mtime
    return dt.datetime.fromtimestamp(when, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# --- the summary ----------------------------------------------------------------------------------


def _shape_error(name: str, exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{name}: not valid JSON ({exc})"
    if isinstance(exc, KeyError):
        return f"{name}: unexpected shape, no field {exc}; rerun its bench"
    return f"{name}: unexpected shape ({type(exc).__name__}: {exc}); rerun its bench"


def summarise(results: Path, failed: frozenset[str] = frozenset()) -> JSON:
    """Every bench's rows, files (machine, date) and status: ok, not run, failed or error."""
    rows: list[Row] = []
    benches: list[JSON] = []
    for name, bench in BENCHES.items():
        paths = sorted({p for pattern in bench.patterns for p in results.glob(pattern) if p.is_file()})
        entry: JSON = {"bench": name, "status": "ok", "files": [], "problems": []}
        for path in paths:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(data, dict):
                    raise TypeError(f"the top level is a {type(data).__name__}, not an object")
                found = list(bench.rows(data))
            except (ValueError, KeyError, TypeError, IndexError, AttributeError, ZeroDivisionError) as exc:
                entry["problems"].append(_shape_error(path.name, exc))
                continue
            for row in found:
                row.bench, row.file = name, path.name
            rows += found
            entry["files"].append({"file": path.name, "date": file_date(path), "machine": machine_info(data)})
        if name in failed:
            entry["status"] = "failed"
            earlier = "figures shown are from an earlier run (see the date)" if paths else "no result file"
            entry["problems"].insert(0, f"its last run failed; {earlier}")
        elif entry["problems"]:
            entry["status"] = "error"
        elif not paths:
            entry["status"] = "not run"
        benches.append(entry)
    return {
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "rows": [asdict(row) for row in rows],
        "benches": benches,
    }


def _number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}g}" if abs(value) >= 1 or value == 0 else f"{value:.{digits}g}"


def markdown(summary: JSON) -> str:
    met_text = {True: "yes", False: "no", None: "—"}
    lines = [
        "# Benchmark summary",
        "",
        f"Written by `bench/summary.py` ({summary['generated']}) from the JSON files in this folder; "
        "`make bench` reruns every bench and then this summary.",
        "Ratio: the bench's own same-run ratio where it records one (median of per-step or per-repetition "
        "ratios), else lmforge / reference. Speeds on a shared CPU are noisy; the ratios are the figures to read.",
        "",
        "| bench | case | lmforge | reference | ratio | goal | met | unit | file |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        ratio = "—" if row["ratio"] is None else f"{row['ratio']:.3g}"
        lines.append(
            f"| {row['bench']} | {row['case']} | {_number(row['lmforge'])} | {_number(row['reference'])} | "
            f"{ratio} | {row['goal'] or '—'} | {met_text[row['met']]} | {row['unit']} | {row['file']} |"
        )
    measured = {row["bench"] for row in summary["rows"]}
    for entry in summary["benches"]:
        if entry["bench"] not in measured:
            lines.append(f"| {entry['bench']} | {entry['status']} | — | — | — | — | — | — | — |")
    lines += [
        "",
        "## Result files",
        "",
        "| file | date | CPU | ISA | threads | cores | torch |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in summary["benches"]:
        for f in entry["files"]:
            m = f["machine"]
            cells = [m.get(key, "not recorded") for key in ("cpu", "isa", "threads", "cores", "torch")]
            lines.append(f"| {f['file']} | {f['date']} | " + " | ".join(str(c) for c in cells) + " |")
    status = [e for e in summary["benches"] if e["status"] != "ok"]
    if status:
        lines += ["", "## Not run or not read", ""]
        for entry in status:
            detail = (
                "; ".join(entry["problems"])
                or f"no result file ({', '.join(BENCHES[entry['bench']].patterns)})"
            )
            lines.append(f"- {entry['bench']}: {entry['status']}: {detail}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the benches' JSON results")
    parser.add_argument("--failed", default="", help="comma-separated benches whose last run failed")
    args = parser.parse_args(argv)
    failed = frozenset(name for name in args.failed.split(",") if name)
    unknown = failed - set(BENCHES)
    if unknown:
        parser.error(f"unknown --failed {sorted(unknown)}; choose from {list(BENCHES)}")
    summary = summarise(args.results, failed)
    (args.results / "summary.json").write_text(
        json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    text = markdown(summary)
    (args.results / "README.md").write_text(text, encoding="utf-8")
    print(text, end="")


if __name__ == "__main__":
    main()
