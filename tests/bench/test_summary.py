"""bench/summary.py over copies of the real result files (no bench runs here)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
REAL = ["pretrain-gpt2.json", "finetune.json", "generate-quick.json", "prompt.json"]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_summary", BENCH / "summary.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


summary = _load()


@pytest.fixture
def results(tmp_path: Path) -> Path:
    for name in REAL:
        shutil.copy(BENCH / "results" / name, tmp_path / name)
    return tmp_path


def _real(name: str) -> Any:
    return json.loads((BENCH / "results" / name).read_text())


def _rows(report: dict[str, Any], bench: str) -> dict[str, dict[str, Any]]:
    return {row["case"]: row for row in report["rows"] if row["bench"] == bench}


def _status(report: dict[str, Any], bench: str) -> dict[str, Any]:
    return next(entry for entry in report["benches"] if entry["bench"] == bench)


def test_ratios_of_the_real_result_files(results: Path) -> None:
    report = summary.summarise(results)

    pretrain = _real("pretrain-gpt2.json")["summary"]
    row = _rows(report, "pretrain")["gpt2 fp32 vs transformers"]
    ratio = pretrain["lmforge:fp32 tokens_per_second"] / pretrain["transformers:fp32 tokens_per_second"]
    assert row["ratio"] == pytest.approx(ratio)
    assert row["lmforge"] == pretrain["lmforge:fp32 tokens_per_second"]
    assert row["met"] is (ratio >= 1.3) and row["unit"] == "tokens/s"
    rss = _rows(report, "pretrain")["gpt2 bf16 peak RSS vs transformers"]
    assert rss["ratio"] == pytest.approx(
        pretrain["lmforge:bf16 peak_rss_mib"] / pretrain["transformers:bf16 peak_rss_mib"]
    )
    assert rss["met"] is (rss["ratio"] <= 0.6)

    finetune = _real("finetune.json")["summary"]
    row = _rows(report, "finetune")["identical batching vs Trainer"]
    assert row["ratio"] == finetune["lmforge-whole speedup_median_of_step_ratios"]
    assert row["reference"] == finetune["transformers examples_per_second"]

    generate = _real("generate-quick.json")["results"]
    rows = _rows(report, "generate")
    for case in ("b1-fp32", "b8-fp32"):
        row = rows[f"{case}: lmforge vs transformers"]
        assert row["ratio"] == generate[case]["lmforge / transformers speed"]
        assert row["met"] is generate[case]["met"] and row["goal"] == generate[case]["goal"]
    lookup = rows["lookup: lmforge-lookup vs lmforge-greedy"]
    assert lookup["ratio"] == generate["lookup"]["lmforge-lookup / lmforge-greedy speed"]
    bound = rows["b1-fp32: lmforge vs bandwidth bound"]
    assert bound["ratio"] == generate["b1-fp32"]["lmforge fraction_of_bound"]

    prompt = _real("prompt.json")
    (row,) = _rows(report, "prompt").values()
    assert row["ratio"] == pytest.approx(prompt["naive_seconds"] / prompt["cached_seconds"])
    assert row["met"] is True and row["unit"] == "inputs/s"

    files = {f["file"]: f for entry in report["benches"] for f in entry["files"]}
    assert (
        files["generate-quick.json"]["machine"]["isa"]
        == _real("generate-quick.json")["machine"]["cpu_capability"]
    )
    assert files["finetune.json"]["machine"]["torch"] == _real("finetune.json")["machine"]["torch"]
    assert all(f["date"].endswith("UTC") for f in files.values())


def test_missing_results_are_not_run(results: Path) -> None:
    (results / "finetune.json").unlink()
    report = summary.summarise(results)
    for bench in ("finetune", "serve", "compress"):
        assert _status(report, bench)["status"] == "not run"
    assert _status(report, "pretrain")["status"] == "ok"
    assert "- finetune: not run: no result file (finetune.json)" in summary.markdown(report)


def test_a_malformed_file_is_named_not_raised(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (results / "pretrain-gpt2.json").write_text("{ not json")
    (results / "finetune.json").write_text(json.dumps({"summary": {"lmforge examples_per_second": 1.0}}))
    (results / "serve.json").write_text("[1, 2]")
    summary.main(["--results", str(results)])
    report = json.loads((results / "summary.json").read_text())
    pretrain, finetune, serve = (_status(report, b) for b in ("pretrain", "finetune", "serve"))
    assert pretrain["status"] == "error" and pretrain["problems"][0].startswith(
        "pretrain-gpt2.json: not valid JSON"
    )
    assert finetune["problems"] == [
        "finetune.json: unexpected shape, no field 'transformers examples_per_second'; rerun its bench"
    ]
    assert serve["problems"][0].startswith("serve.json: unexpected shape")
    assert not _rows(report, "pretrain") and _rows(report, "prompt")
    assert "finetune.json: unexpected shape" in (results / "README.md").read_text()
    assert "Traceback" not in capsys.readouterr().out


def test_a_failed_bench_is_marked_failed(results: Path) -> None:
    report = summary.summarise(results, frozenset({"finetune"}))
    assert _status(report, "finetune")["status"] == "failed"
    assert "earlier run" in _status(report, "finetune")["problems"][0]
    assert _status(report, "serve")["status"] == "not run"
    with pytest.raises(SystemExit):
        summary.main(["--results", str(results), "--failed", "nosuch"])


def test_readme_has_one_row_per_measure(results: Path) -> None:
    summary.main(["--results", str(results)])
    report = json.loads((results / "summary.json").read_text())
    text = (results / "README.md").read_text()
    table = text.split("| bench | case |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    not_run = [e["bench"] for e in report["benches"] if e["status"] == "not run"]  # a row each, no figures
    assert len(table) == len(report["rows"]) + len(not_run) == len(report["rows"]) + 2
    assert [line.split(" | ")[1] for line in table[: len(report["rows"])]] == [
        r["case"] for r in report["rows"]
    ]
    assert {line.split(" | ")[0].strip("| ") for line in table[len(report["rows"]) :]} == {
        "serve",
        "compress",
    }


def test_serve_and_compress_in_the_shapes_their_benches_write(tmp_path: Path) -> None:
    phase = {"clients": 1, "tokens_per_s": 10.0, "latency_p50_s": 3.0, "latency_p95_s": 3.5,
             "ttft_p50_s": 0.2, "ttft_p95_s": 0.3}  # fmt: skip
    serve = {"bench": "serve", "cpu": "cpu X", "isa": "AVX2", "cores": 2, "sequential": phase,
             "concurrent": {**phase, "clients": 16, "tokens_per_s": 45.0, "latency_p50_s": 6.0},
             "throughput_ratio": 4.5, "goal_ratio": 4.0, "goal_met": True}  # fmt: skip
    (tmp_path / "serve.json").write_text(json.dumps(serve))

    def classifier(model: str, accuracy: float, speed: float, mb: float, ece: float) -> dict[str, Any]:
        return {"model": model, "accuracy": accuracy, "agreement": 0.99, "ece_recalibrated": ece,
                "ece_recalibrated_floor": 0.01, "examples_per_second": speed, "speedup": speed / 100,
                "file_mb": mb, "file_ratio": mb / 90}  # fmt: skip

    decoder = [
        {"model": "fp32 (Q4_1 GGUF dequantized)", "perplexity": 10.0, "decode_tokens_per_second": 20.0,
         "decode_speedup": 1.0, "file_mb": 500.0, "file_ratio": 1.0},
        {"model": "int4-wo g64", "perplexity": 11.0, "decode_tokens_per_second": 30.0, "decode_speedup": 1.5,
         "file_mb": 100.0, "file_ratio": 0.2},
    ]  # fmt: skip
    compress = {
        "machine": {"cpu": "cpu X", "cpus": 2, "torch": "2.13.0", "isa": ["avx2", "fma"]},
        "threads": 1,
        "classifier": [
            classifier("fp32 (fine-tuned MiniLM-L6)", 0.85, 100, 90, 0.02),
            classifier("int8 dynamic", 0.845, 150, 23, 0.025),
            classifier("2-layer student, distilled", 0.82, 300, 40, 0.02),
            classifier("2-layer student, no teacher", 0.80, 300, 40, 0.02),
        ],
        "decoder": decoder,
    }
    (tmp_path / "compress.json").write_text(json.dumps(compress))
    report = summary.summarise(tmp_path)

    rows = _rows(report, "serve")
    assert rows["16 clients vs one at a time: throughput"]["ratio"] == 4.5
    assert rows["16 clients vs one at a time: throughput"]["met"] is True
    assert rows["16 clients vs one at a time: latency p50"]["ratio"] == 2.0
    rows = _rows(report, "compress")
    assert rows["int8 dynamic: accuracy vs fp32"]["met"] is True  # a 0.5-point drop, goal <= 1
    assert rows["int8 dynamic: speed vs fp32"]["ratio"] == 1.5 and rows["int8 dynamic: speed vs fp32"]["met"]
    assert rows["int8 dynamic: file vs fp32"]["met"] is True  # 23/90 <= 0.3
    assert rows["int8 dynamic: recalibrated ECE vs fp32"]["met"] is True  # 0.025 <= 0.02 + 0.01
    assert rows["2-layer student: distilled vs no teacher"]["met"] is True
    assert rows["int4-wo g64: perplexity vs fp32"]["ratio"] == pytest.approx(1.1)
    assert rows["int4-wo g64: perplexity vs fp32"]["met"] is True  # +10%, goal <= +15%
    assert rows["int4-wo g64: decode vs fp32"]["met"] is True
    machines = {f["file"]: f["machine"] for e in report["benches"] for f in e["files"]}
    assert machines["compress.json"] == {
        "cpu": "cpu X",
        "isa": "avx2 fma",
        "threads": 1,
        "cores": 2,
        "torch": "2.13.0",
    }
    assert machines["serve.json"]["isa"] == "AVX2"
