"""Training checkpoints are complete-or-absent: every file fsynced before the manifest, the manifest
before the rename, pruning only after it; a damaged one is found by verify_checkpoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from pretrain_utils import OBJECTIVES, QUIET, memory_data

from lmforge.errors import CheckpointError, ConfigError
from lmforge.train import Trainer, load_config, pretrain
from lmforge.train import checkpoint as ckpt
from lmforge.train.checkpoint import list_checkpoints, verify_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
SHORT = [*OBJECTIVES["gpt2_clm"], *QUIET, "max_steps=4", "checkpoint_every=2", "eval_every=2"]


@pytest.fixture
def run(tmp_path: Path) -> Path:
    pretrain(load_config(None, SHORT), tmp_path, data=memory_data())
    return tmp_path


def test_every_file_is_fsynced_before_the_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    pretrain(load_config(None, [*SHORT, "max_steps=2"]), tmp_path, data=memory_data())
    tmp = str(tmp_path / "checkpoints" / ".tmp-step-00000002")
    manifest = next(i for i, p in enumerate(synced) if p.startswith(f"{tmp}/.manifest.json."))
    for name in ("trainer.pt", "rng-0.pt", "model.safetensors", "config.json", "run_state.json"):
        assert synced.index(f"{tmp}/{name}") < manifest, name
    # the directory entry of the manifest (the last fsync of the directory), then the rename
    assert max(i for i, p in enumerate(synced) if p == tmp) > manifest
    assert verify_checkpoint(tmp_path / "checkpoints" / "step-00000002") is None


def test_a_save_cut_short_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = torch.save

    def failing_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if str(f).endswith(".tmp-step-00000004/trainer.pt"):
            raise OSError(28, "No space left on device")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError):
        pretrain(load_config(None, [*SHORT, "keep_last=1"]), tmp_path, data=memory_data())
    # keep_last=1, yet step 2 survives: pruning happens only once the new checkpoint is in place.
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002"]
    assert verify_checkpoint(tmp_path / "checkpoints" / "step-00000002") is None
    monkeypatch.setattr(torch, "save", real_save)
    report = pretrain(load_config(None, [*SHORT, "keep_last=1"]), tmp_path, data=memory_data(), resume=True)
    assert report["steps"] == 4 and [p.name for p in list_checkpoints(tmp_path)] == ["step-00000004"]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_verify_finds_truncated_altered_and_missing_files(run: Path) -> None:
    path = run / "checkpoints" / "step-00000004"
    assert verify_checkpoint(path) is None
    weights = path / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-10])
    assert verify_checkpoint(path) == (
        f"model.safetensors has {len(original) - 10:,} bytes, manifest.json says {len(original):,}"
    )
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # same size, one bit flipped
    assert verify_checkpoint(path) == "model.safetensors does not match its SHA-256 in manifest.json"
    weights.write_bytes(original)
    (path / "rng-0.pt").unlink()
    assert verify_checkpoint(path) == "rng-0.pt is missing"


def test_checkpoints_without_a_manifest_get_structural_checks(run: Path) -> None:
    path = run / "checkpoints" / "step-00000004"
    (path / "manifest.json").unlink()  # as written before manifests existed
    assert verify_checkpoint(path) is None
    trainer_file = path / "trainer.pt"
    trainer_file.write_bytes(trainer_file.read_bytes()[:-100])
    assert (
        verify_checkpoint(path)
        == f"trainer.pt is not a complete torch file ({trainer_file.stat().st_size:,} bytes)"
    )
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])
    assert "model.safetensors has" in (verify_checkpoint(path) or "")


def test_older_checkpoints_are_compared_on_the_config_in_trainer_pt(run: Path) -> None:
    for path in list_checkpoints(run):
        (path / "run_state.json").unlink()
        (path / "manifest.json").unlink()
    (run / "report.json").unlink()  # not finished: resuming must plan against the checkpoint
    with pytest.raises(ConfigError, match=r"model\.hidden_size 32 → 48 \(fixed for a run\)"):
        pretrain(load_config(None, [*SHORT, "model.hidden_size=48"]), run, data=memory_data(), resume=True)
    report = pretrain(load_config(None, SHORT), run, data=memory_data(), resume=True)
    assert report["steps"] == 4 and (run / "report.json").is_file()


def test_loading_weights_of_another_shape_is_a_checkpoint_error(run: Path) -> None:
    trainer = Trainer(load_config(None, [*SHORT, "model.hidden_size=48"]), memory_data(), run)
    with pytest.raises(CheckpointError, match=r"weights have other shapes than the model \(.*\(.*32\) vs"):
        ckpt.load_checkpoint(
            run / "checkpoints" / "step-00000004", trainer.wrapped, trainer.model, trainer.optimizer,
            None, trainer.runtime, sharded=False,
        )  # fmt: skip
