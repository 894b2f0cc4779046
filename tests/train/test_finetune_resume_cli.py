"""`lmforge finetune --resume`, through the real CLI and the Python API: an interrupted run resumed
repeats the uninterrupted run bit for bit; a finished run resumed says so and changes nothing; a
changed config is refused in one line (safe changes accepted and recorded with their step); a torn
newest checkpoint falls back to the previous one; with no complete checkpoint the error gives the
command that starts over. Each CLI case checks the exit code, the message and, file by file, what
changed on disk."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from finetune_utils import make_workspace
from pretrain_utils import train_losses
from run_utils import error_line, hashes, history, run_cli

from lmforge.data import TaskDataConfig
from lmforge.train.checkpoint import list_checkpoints, verify_checkpoint
from lmforge.train.finetune_config import FinetuneConfig
from lmforge.train.finetune_run import run_finetune
from lmforge.train.loop import TrainingLoop

pytestmark = pytest.mark.slow  # each case starts the CLI (a few seconds per run)

# 12 steps of 8 of the 96 training reviews; validation (and a checkpoint) every 3 steps. Dropout
# (the tiny BERT's 0.1) makes the torch RNG matter; length groups split most batches in two.
ARGS = [
    "--task", "classification", "--text-column", "review", "--label-column", "stars", "--max-length", "32",
    "--batch-size", "8", "--max-steps", "12", "--eval-every", "3", "--lr", "3e-3", "--metric", "accuracy",
    "--threads", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("finetune-resume"))


def _finetune(workspace: Path, run: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "finetune", "--model", str(workspace / "tiny"), "--data", str(workspace / "train.csv"),
        "--validation", str(workspace / "val.csv"), "--out", str(run), *ARGS, *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, workspace: Path) -> Path:
    """A run that reached its 12 steps: checkpoints step-9 and step-12, the model, report.json."""
    run = tmp_path_factory.mktemp("finished") / "run"
    result = _finetune(workspace, run)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in list_checkpoints(run)] == ["step-00000009", "step-00000012"]
    return run


@pytest.fixture
def copy(tmp_path: Path, finished: Path) -> Path:
    """A copy of the finished run that a test may change."""
    return Path(shutil.copytree(finished, tmp_path / "run", symlinks=True))


def test_interrupted_run_resumed_repeats_the_run_bit_for_bit(
    workspace: Path, finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = FinetuneConfig(
        max_length=32, batch_size=8, max_steps=12, eval_every=3, metric="accuracy", progress=False, threads=1
    )
    config.optim.lr = 3e-3
    data = TaskDataConfig(text_column="review", label_column="stars")
    run = tmp_path / "broken"
    original = TrainingLoop.train_step

    def crash_in_step_eight(self: TrainingLoop, step: int) -> dict[str, float]:
        if step == 7:  # after the step-6 checkpoint: Ctrl-C keeps the best model so far
            raise KeyboardInterrupt
        return original(self, step)

    monkeypatch.setattr(TrainingLoop, "train_step", crash_in_step_eight)
    args = (workspace / "tiny", workspace / "train.csv", run, config, workspace / "val.csv", data)
    report = run_finetune(*args)
    assert report["interrupted"] and report["steps"] == 7
    assert [p.name for p in list_checkpoints(run)] == ["step-00000003", "step-00000006"]
    monkeypatch.setattr(TrainingLoop, "train_step", original)

    report = run_finetune(*args, resume=True)
    assert report["steps"] == 12 and not report["interrupted"]
    assert train_losses(run) == train_losses(finished)  # exact, not approximate
    for name in ("model.safetensors", "checkpoints/step-00000012/model.safetensors"):
        assert hashes(run)[name] == hashes(finished)[name], name
    expected = json.loads((finished / "report.json").read_text())
    assert report["best"] == expected["best"] and report["last_eval"] == expected["last_eval"]
    assert [h["event"] for h in history(run)] == ["start", "resume"] and history(run)[1]["step"] == 6


def test_resume_of_a_finished_run_says_so_and_changes_nothing(workspace: Path, finished: Path) -> None:
    before = hashes(finished)
    result = _finetune(workspace, finished, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already complete (12 of 12 steps" in result.stderr and "nothing to do" in result.stderr
    assert "Traceback" not in result.stderr and "12 steps" in result.stdout
    assert hashes(finished) == before  # model, checkpoints, metrics, history, report, finetune.json


def test_resume_refuses_fixed_changes_in_one_line(workspace: Path, finished: Path) -> None:
    before = hashes(finished)
    result = _finetune(workspace, finished, "--resume", "--max-length", "24", "--seed", "3", "--lr", "0.01")
    assert result.returncode == 1
    line = error_line(result)
    for change in (
        "max_length 32 → 24",
        "seed 0 → 3",
        "optim.lr 0.003 → 0.01 (only with --allow-config-change)",
    ):
        assert change in line, line
    assert "fixed for a run" in line and "another --out" in line
    assert hashes(finished) == before


def test_accepted_changes_are_recorded_with_their_step(workspace: Path, copy: Path) -> None:
    settings = (copy / "finetune.json").read_bytes()
    old_metrics = (copy / "metrics.jsonl").read_text().splitlines()
    result = _finetune(
        workspace, copy, "--resume", "--max-steps", "15", "--lr", "0.004", "--allow-config-change"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "from step 12: max_steps 12 → 15, optim.lr 0.003 → 0.004" in result.stderr
    changes = {
        h["field"]: (h["old"], h["new"], h["step"]) for h in history(copy) if h["event"] == "config_change"
    }
    assert changes == {"max_steps": (12, 15, 12), "optim.lr": (0.003, 0.004, 12)}
    assert (copy / "finetune.json").read_bytes() == settings  # the settings the run started with
    state = json.loads((copy / "checkpoints" / "step-00000015" / "run_state.json").read_text())
    assert state["settings"]["optim.lr"] == 0.004 and state["settings"]["max_steps"] == 15
    assert (copy / "metrics.jsonl").read_text().splitlines()[: len(old_metrics)] == old_metrics
    assert json.loads((copy / "report.json").read_text())["steps"] == 15


def test_torn_newest_checkpoint_falls_back_to_the_previous_one(workspace: Path, copy: Path) -> None:
    before = hashes(copy)
    losses = train_losses(copy)
    torn = copy / "checkpoints" / "step-00000012"
    trainer_file = torn / "trainer.pt"
    size = trainer_file.stat().st_size
    with open(trainer_file, "r+b") as file:  # cut short, as a copy interrupted half-way would be
        file.truncate(size // 2)

    result = _finetune(workspace, copy, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        f"{torn} is torn (trainer.pt has {size // 2:,} bytes, manifest.json says {size:,}); resuming from "
        "the newest complete checkpoint step-00000009 instead"
    ) in result.stderr
    after = hashes(copy)
    # Steps 10-12 trained again from step 9 give the same weights, bit for bit (trainer.pt holds
    # the time the steps took, which differs).
    for name in ("model.safetensors", "checkpoints/step-00000009/trainer.pt",
                 "checkpoints/step-00000012/model.safetensors"):  # fmt: skip
        assert after[name] == before[name], name
    assert train_losses(copy) == losses
    assert verify_checkpoint(torn) is None
    assert (copy / "checkpoints" / ".torn-step-00000012" / "trainer.pt").stat().st_size == size // 2
    records = history(copy)
    assert records[-1]["event"] == "resume" and records[-1]["checkpoint"] == "step-00000009"
    assert records[-1]["skipped"][0]["checkpoint"] == "step-00000012"


def test_no_complete_checkpoint_gives_the_command_to_start_over(workspace: Path, copy: Path) -> None:
    for checkpoint in list_checkpoints(copy):
        weights = checkpoint / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    before = hashes(copy)
    result = _finetune(workspace, copy, "--resume")
    assert result.returncode == 1
    line = error_line(result)
    assert "no complete checkpoint to resume from (step-00000012: model.safetensors has 100 bytes" in line
    assert (
        f"start over with: rm -r {copy / 'checkpoints'}, then your finetune command without --resume" in line
    )
    assert hashes(copy) == before


def test_a_fresh_run_replaces_an_earlier_one(workspace: Path, copy: Path) -> None:
    result = _finetune(workspace, copy, "--max-steps", "4", "--eval-every", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in list_checkpoints(copy)] == ["step-00000002", "step-00000004"]
    assert [h["event"] for h in history(copy)] == ["start"]
    assert len(train_losses(copy)) == 4 and json.loads((copy / "report.json").read_text())["steps"] == 4
