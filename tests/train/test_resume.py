"""Exact resume: an interrupted run (an exception, or kill -9) resumed from its checkpoint repeats
the uninterrupted run's losses bit for bit, and ends with the same weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pretrain_utils import OBJECTIVES, QUIET, memory_data, train_losses
from safetensors.torch import load_file

import lmforge
from lmforge.errors import ConfigError
from lmforge.train import load_config, pretrain
from lmforge.train.checkpoint import list_checkpoints
from lmforge.train.loop import TrainingLoop

HERE = Path(__file__).parent
# Dropout makes the torch RNG matter; eval and checkpoints interleave with training.
RESUMABLE = [
    *OBJECTIVES["bert_nsp_wwm"], *QUIET, "model.dropout=0.1", "max_steps=8", "checkpoint_every=3",
    "eval_every=4", "keep_last=2", "optim.warmup_steps=2",
]  # fmt: skip


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def test_interrupted_and_resumed_run_repeats_losses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    pretrain(load_config(None, RESUMABLE), straight, data=memory_data())

    original = TrainingLoop.train_step

    def crash_at_six(self: TrainingLoop, step: int) -> dict[str, float]:
        if step == 5:  # after the step-3 checkpoint and the step-4 evaluation
            raise KeyboardInterrupt
        return original(self, step)

    monkeypatch.setattr(TrainingLoop, "train_step", crash_at_six)
    with pytest.raises(KeyboardInterrupt):
        pretrain(load_config(None, RESUMABLE), broken, data=memory_data())
    assert [p.name for p in list_checkpoints(broken)] == ["step-00000003"]
    assert len(train_losses(broken)) == 5
    monkeypatch.setattr(TrainingLoop, "train_step", original)
    (broken / "checkpoints" / ".tmp-step-00000006").mkdir()  # leftover of a save cut short: ignored

    report = pretrain(load_config(None, RESUMABLE), broken, data=memory_data(), resume=True)
    assert report["steps"] == 8
    assert train_losses(broken) == train_losses(straight)  # exact, not approximate
    reference, resumed = _weights(straight), _weights(broken)
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    assert [p.name for p in list_checkpoints(broken)] == ["step-00000006", "step-00000008"]
    loaded = lmforge.load(broken / "model")
    assert loaded.config.head == "pretraining" and (broken / "best" / "model.safetensors").is_file()


def test_existing_checkpoints_need_resume(tmp_path: Path) -> None:
    config = load_config(None, [*OBJECTIVES["gpt2_clm"], *QUIET, "max_steps=2"])
    pretrain(config, tmp_path, data=memory_data())
    with pytest.raises(ConfigError, match="--resume"):
        pretrain(config, tmp_path, data=memory_data())
    report = pretrain(config, tmp_path, data=memory_data(), resume=True)  # already done: no new steps
    assert report["steps"] == 2


@pytest.mark.slow
def test_kill_9_mid_run_then_resume(tmp_path: Path) -> None:
    overrides = [*OBJECTIVES["gpt2_clm"], *QUIET, "max_steps=300", "checkpoint_every=10", "eval_every=50"]
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    process = subprocess.Popen(
        [sys.executable, str(HERE / "memory_pretrain.py"), str(run), *overrides], env=env
    )
    deadline = time.monotonic() + 60
    while not list_checkpoints(run):
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert list_checkpoints(run) and not (run / "report.json").exists()

    resumed = subprocess.run(
        [sys.executable, str(HERE / "memory_pretrain.py"), str(run), "--resume", *overrides],
        env=env,
        timeout=120,
    )
    assert resumed.returncode == 0
    straight = tmp_path / "straight"
    pretrain(load_config(None, overrides), straight, data=memory_data())
    assert train_losses(run) == train_losses(straight)
    reference, resumed_weights = _weights(straight), _weights(run)
    assert all(torch.equal(reference[k], resumed_weights[k]) for k in reference)
