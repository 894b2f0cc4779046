"""`lmforge pretrain --resume` at its edges, through the real CLI: a run that already finished, a
changed config, a torn newest checkpoint, no complete checkpoint at all. Each case checks the exit
code, the message and, file by file, that nothing already written changed unless it had to."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from pretrain_utils import prepare_english_data, train_losses
from run_utils import error_line, hashes, history, run_cli

from lmforge.train.checkpoint import list_checkpoints, verify_checkpoint
from lmforge.train.config import OptimConfig
from lmforge.train.optim import learning_rate

pytestmark = pytest.mark.slow  # each case starts the CLI (a few seconds per run)

RECIPE = Path(__file__).parents[2] / "recipes" / "pretrain" / "gpt-bible-tiny.yaml"
TINY = [
    "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
    "objective.seq_len=32", "data.batch_size=4", "eval_every=2", "eval_batches=1", "threads=1",
    "checkpoint_every=2", "keep_last=2", "log_every=1", "optim.warmup_steps=1", "progress=false",
]  # fmt: skip


def _pretrain(data: Path, run: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "pretrain", "--config", str(RECIPE), "--data", str(data), "--out", str(run), "--max-steps", "4",
        *TINY, *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_english_data(tmp_path_factory.mktemp("english"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    """A run that reached its 4 steps: checkpoints step-2 and step-4, model/, report.json."""
    run = tmp_path_factory.mktemp("finished") / "run"
    result = _pretrain(data, run)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


@pytest.fixture
def copy(tmp_path: Path, finished: Path) -> Path:
    """A copy of the finished run that a test may change."""
    return Path(shutil.copytree(finished, tmp_path / "run", symlinks=True))


def test_resume_of_a_finished_run_says_so_and_changes_nothing(data: Path, finished: Path) -> None:
    before = hashes(finished)
    speed = json.loads((finished / "report.json").read_text())["tokens_per_second"]
    assert isinstance(speed, float) and speed > 0

    result = _pretrain(data, finished, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already complete (4 of 4 steps" in result.stderr and "nothing to do" in result.stderr
    assert "Traceback" not in result.stderr and "4 steps, val loss" in result.stdout
    assert hashes(finished) == before  # metrics, checkpoints, model/, best/, report.json, config.yaml
    assert json.loads((finished / "report.json").read_text())["tokens_per_second"] == speed


def test_resume_refuses_model_objective_and_seed_changes_in_one_line(data: Path, finished: Path) -> None:
    before = hashes(finished)
    result = _pretrain(data, finished, "--resume", "model.hidden_size=64", "objective.seq_len=16", "seed=3")
    assert result.returncode == 1
    line = error_line(result)
    for change in ("model.hidden_size 32 → 64", "objective.seq_len 32 → 16", "seed 0 → 3"):
        assert change in line, line
    assert "fixed for a run" in line and "another --out" in line
    assert "size mismatch" not in result.stderr and "load_state_dict" not in result.stderr
    assert hashes(finished) == before


def test_resume_with_a_new_learning_rate_needs_the_flag(data: Path, finished: Path) -> None:
    before = hashes(finished)
    result = _pretrain(data, finished, "--resume", "--max-steps", "6", "optim.lr=0.02")
    assert result.returncode == 1
    line = error_line(result)
    assert "optim.lr 0.002 → 0.02 (only with --allow-config-change)" in line, line
    assert "max_steps" not in line  # a safe change is not refused
    assert hashes(finished) == before


def test_accepted_changes_are_recorded_with_their_step(data: Path, copy: Path) -> None:
    config_yaml = (copy / "config.yaml").read_bytes()
    old_metrics = (copy / "metrics.jsonl").read_text().splitlines()
    result = _pretrain(
        data, copy, "--resume", "--max-steps", "6", "eval_every=3", "optim.lr=0.004", "--allow-config-change"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "from step 4: eval_every 2 → 3, max_steps 4 → 6, optim.lr 0.002 → 0.004" in result.stderr

    records = history(copy)
    assert [h["event"] for h in records] == [
        "start",
        "resume",
        "config_change",
        "config_change",
        "config_change",
    ]
    changes = {h["field"]: (h["old"], h["new"], h["step"]) for h in records if h["event"] == "config_change"}
    assert changes == {"eval_every": (2, 3, 4), "max_steps": (4, 6, 4), "optim.lr": (0.002, 0.004, 4)}
    # config.yaml stays what the run started with; the checkpoints carry the effective settings.
    assert (copy / "config.yaml").read_bytes() == config_yaml
    assert yaml.safe_load(config_yaml)["optim"]["lr"] == 0.002
    state = json.loads((copy / "checkpoints" / "step-00000006" / "run_state.json").read_text())
    assert state["settings"]["optim.lr"] == 0.004 and state["settings"]["max_steps"] == 6

    metrics = (copy / "metrics.jsonl").read_text().splitlines()
    assert metrics[: len(old_metrics)] == old_metrics  # steps 1-4 untouched
    step5 = next(r for r in map(json.loads, metrics) if r["kind"] == "train" and r["step"] == 5)
    new_optim = OptimConfig(lr=0.004, warmup_steps=1, schedule="cosine", min_lr_ratio=0.1)
    assert step5["lr"] == pytest.approx(learning_rate(4, 6, new_optim))
    assert json.loads((copy / "report.json").read_text())["steps"] == 6


def test_torn_newest_checkpoint_falls_back_to_the_previous_one(data: Path, copy: Path) -> None:
    before = hashes(copy)
    torn = copy / "checkpoints" / "step-00000004"
    trainer_file = torn / "trainer.pt"
    size = trainer_file.stat().st_size
    with open(trainer_file, "r+b") as file:  # cut short, as a copy interrupted half-way would be
        file.truncate(size // 2)
    losses = train_losses(copy)

    result = _pretrain(data, copy, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        f"{torn} is torn (trainer.pt has {size // 2:,} bytes, manifest.json says {size:,}); resuming from "
        "the newest complete checkpoint step-00000002 instead"
    ) in result.stderr
    after = hashes(copy)
    # Steps 3-4 trained again from step 2 give the same model, bit for bit.
    for name in ("model/model.safetensors", "checkpoints/step-00000002/model.safetensors",
                 "checkpoints/step-00000002/trainer.pt", "checkpoints/step-00000004/model.safetensors"):  # fmt: skip
        assert after[name] == before[name], name
    assert train_losses(copy) == losses
    assert [p.name for p in list_checkpoints(copy)] == ["step-00000002", "step-00000004"]
    assert verify_checkpoint(torn) is None
    assert (copy / "checkpoints" / ".torn-step-00000004" / "trainer.pt").stat().st_size == size // 2
    records = history(copy)
    assert records[-1]["event"] == "resume" and records[-1]["checkpoint"] == "step-00000002"
    assert records[-1]["skipped"][0]["checkpoint"] == "step-00000004"


def test_no_complete_checkpoint_gives_the_command_to_start_over(data: Path, copy: Path) -> None:
    for checkpoint in list_checkpoints(copy):
        weights = checkpoint / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    before = hashes(copy)
    losses = train_losses(copy)

    result = _pretrain(data, copy, "--resume")
    assert result.returncode == 1
    line = error_line(result)
    assert "no complete checkpoint to resume from (step-00000004: model.safetensors has 100 bytes" in line, (
        line
    )
    assert hashes(copy) == before
    command = line.split("start over with: ", 1)[1]
    remove, rerun = command.split(" && ")
    assert shlex.split(remove) == ["rm", "-r", str(copy / "checkpoints")]
    words = shlex.split(rerun)
    assert words[:2] == ["lmforge", "pretrain"] and "--resume" not in words

    shutil.rmtree(copy / "checkpoints")
    restarted = run_cli(*words[1:])
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert train_losses(copy) == losses  # the same run again, from step 0
    assert [p.name for p in list_checkpoints(copy)] == ["step-00000002", "step-00000004"]
