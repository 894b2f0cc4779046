"""Two processes under torchrun (gloo, CPU) train exactly like one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pretrain_utils import OBJECTIVES, QUIET, memory_data, train_losses
from safetensors.torch import load_file

from lmforge.train import load_config, pretrain

HERE = Path(__file__).parent
# Global batch 8; the single process accumulates 4 micro-batches of 2, each of 2 processes 2.
COMMON = [*QUIET, "data.batch_size=8", "data.micro_batch_size=2", "max_steps=4", "eval_every=4"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path: Path, strategy: str) -> None:
    overrides = [*OBJECTIVES["bert_nsp_wwm"], *COMMON, f"distributed={strategy}"]
    single = pretrain(load_config(None, overrides), tmp_path / "single", data=memory_data())
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(HERE / "memory_pretrain.py"), str(tmp_path / "pair"), *overrides,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    pair = train_losses(tmp_path / "pair")
    assert len(pair) == 4
    assert pair == pytest.approx(train_losses(tmp_path / "single"), abs=1e-5)
    report = (tmp_path / "pair" / "report.json").read_text()
    assert '"world_size": 2' in report
    assert single["world_size"] == 1
    first, second = (
        load_file(str(tmp_path / "single/model/model.safetensors")),
        load_file(str(tmp_path / "pair/model/model.safetensors")),
    )
    assert all(torch.allclose(first[k], second[k], atol=1e-5) for k in first)
