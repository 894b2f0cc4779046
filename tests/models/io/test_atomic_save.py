"""Saving replaces a checkpoint directory as a whole: no stale file survives a re-save, and a save
that fails or crashes part-way leaves the previous checkpoint complete and loadable."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer as Backend
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

import lmforge
from lmforge.calibrate import get_calibrator
from lmforge.calibrate.io import save_calibrator
from lmforge.errors import CheckpointError
from lmforge.models import TransformerModel, preset_config
from lmforge.tokenizers import Tokenizer

WORDS = ["[PAD]", "[UNK]", "good", "bad", "movie", "plot"]


def _classifier(seed: int) -> TransformerModel:
    torch.manual_seed(seed)
    config = preset_config(
        "bert-tiny", head="sequence_classification", num_labels=3, vocab_size=len(WORDS), num_layers=1
    )
    return TransformerModel(config).eval()


def _tokenizer() -> Tokenizer:
    backend = Backend(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    return Tokenizer(backend, special_tokens={"pad_token": "[PAD]", "unk_token": "[UNK]"})


def _calibrated_checkpoint(path: Path) -> Path:
    """A checkpoint with a tokenizer and a calibrator.json, as ``lmforge calibrate --save-into`` leaves it."""
    lmforge.save(_classifier(0), path, _tokenizer())
    rng = np.random.default_rng(0)
    save_calibrator(get_calibrator("temperature").fit(rng.normal(size=(40, 3)), rng.integers(0, 3, 40)), path)
    assert lmforge.load(path).calibrator is not None
    return path


def _snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def test_resave_leaves_no_stale_calibrator_or_tokenizer(tmp_path: Path) -> None:
    checkpoint = _calibrated_checkpoint(tmp_path / "ckpt")
    assert {"calibrator.json", "tokenizer.json"} <= set(_snapshot(checkpoint))
    new = _classifier(1)
    lmforge.save(new, checkpoint)  # a new model without tokenizer or calibrator
    assert sorted(_snapshot(checkpoint)) == ["config.json", "model.safetensors"]
    loaded = lmforge.load(checkpoint)
    assert loaded.calibrator is None and loaded.tokenizer is None
    torch.testing.assert_close(loaded.model.state_dict(), new.state_dict(), rtol=0, atol=0)
    assert _siblings(checkpoint) == []  # no temporary or set-aside directory left behind


def test_save_hf_over_a_checkpoint_leaves_no_stale_file(tmp_path: Path) -> None:
    checkpoint = _calibrated_checkpoint(tmp_path / "ckpt")
    lmforge.save_hf(_classifier(1), checkpoint)
    assert sorted(_snapshot(checkpoint)) == ["config.json", "model.safetensors"]
    assert lmforge.load(checkpoint).tokenizer is None


def test_failed_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = _calibrated_checkpoint(tmp_path / "ckpt")
    before = _snapshot(checkpoint)

    def crash(self: Tokenizer, directory: str | Path) -> Path:  # weights and config already written
        raise OSError("disk full")

    monkeypatch.setattr(Tokenizer, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        lmforge.save(_classifier(1), checkpoint, _tokenizer())
    assert _snapshot(checkpoint) == before
    assert _siblings(checkpoint) == []
    monkeypatch.undo()
    loaded = lmforge.load(checkpoint)
    assert loaded.calibrator is not None and loaded.tokenizer is not None
    torch.testing.assert_close(loaded.model.state_dict(), _classifier(0).state_dict(), rtol=0, atol=0)


def test_failure_between_the_renames_puts_the_previous_checkpoint_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = _calibrated_checkpoint(tmp_path / "ckpt")
    before = _snapshot(checkpoint)
    real_replace = os.replace
    calls: list[str] = []

    def replace(src: str | Path, dst: str | Path) -> None:
        calls.append(Path(dst).name)
        if len(calls) == 2:  # the old one is aside, the new one not yet in
            raise OSError("interrupted")
        real_replace(src, dst)

    monkeypatch.setattr("lmforge.fileio.os.replace", replace)
    with pytest.raises(OSError, match="interrupted"):
        lmforge.save(_classifier(1), checkpoint)
    assert calls[:2] == [".ckpt.old", "ckpt"]
    assert _snapshot(checkpoint) == before and _siblings(checkpoint) == []


def test_crash_between_the_renames_is_recoverable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hard crash (no handler runs) after the first rename leaves only ``.ckpt.old``: loading says
    where it is, and the next save puts it back before building, so even a failing save keeps it."""
    checkpoint = _calibrated_checkpoint(tmp_path / "ckpt")
    before = _snapshot(checkpoint)
    os.replace(checkpoint, tmp_path / ".ckpt.old")  # the state such a crash leaves
    with pytest.raises(CheckpointError, match=r"interrupted.*\.ckpt\.old"):
        lmforge.load(checkpoint)

    def crash(self: Tokenizer, directory: str | Path) -> Path:
        raise OSError("crash again")

    monkeypatch.setattr(Tokenizer, "save", crash)
    with pytest.raises(OSError, match="crash again"):
        lmforge.save(_classifier(1), checkpoint, _tokenizer())
    assert _snapshot(checkpoint) == before and _siblings(checkpoint) == []
    monkeypatch.undo()
    lmforge.save(_classifier(1), checkpoint)
    assert sorted(_snapshot(checkpoint)) == ["config.json", "model.safetensors"]


def test_refuses_to_replace_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not a model directory"):
        lmforge.save(_classifier(0), tmp_path)
    with pytest.raises(CheckpointError, match="not a model directory"):
        lmforge.save_hf(_classifier(0), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
