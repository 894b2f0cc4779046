"""Resumable training checkpoints: atomic directories, keep-last-N, and exact RNG restore.

``RUN/checkpoints/step-00000100/`` holds an lmforge model checkpoint (``lmforge.load`` reads it)
plus ``trainer.pt`` (optimizer, loss scaler, step, best validation loss) and one
``rng-<rank>.pt`` per process (python, numpy and torch generator states). It is written under a
temporary name and renamed when complete, so a run killed at any moment (even ``kill -9``)
leaves only whole checkpoints; :func:`latest` ignores leftovers.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmforge.errors import CheckpointError
from lmforge.models import TransformerModel
from lmforge.models.checkpoint import WEIGHTS_NAME, save
from lmforge.tokenizers import Tokenizer
from lmforge.train.distributed import Runtime, barrier

CHECKPOINTS = "checkpoints"
_PREFIX = "step-"
_TMP = ".tmp-"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"{_PREFIX}{step:08d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX) :]))


def latest(run_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


# ---------------------------------------------------------------------------------------------
# RNG


def rng_state() -> dict[str, Any]:
    """Generator states of python, numpy and torch (CPU and every CUDA device)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, keys.tolist(), pos, has_gauss, gauss),  # lists load with weights_only
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# Model and optimizer state (plain, DDP or FSDP2)


def _full_state(
    wrapped: nn.Module, model: TransformerModel, optimizer: torch.optim.Optimizer, sharded: bool
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Full (unsharded) model and optimizer state dicts; collective under FSDP."""
    if not sharded:
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(wrapped, options=options)
    optim_state = get_optimizer_state_dict(wrapped, optimizer, options=options)
    prefix = "model."
    return _strip(model_state, prefix), dict(optim_state)


def _strip(state: Mapping[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    """Parameter names relative to the model inside the loss wrapper."""
    return {k.removeprefix(prefix): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def save_model(
    wrapped: nn.Module,
    model: TransformerModel,
    path: Path,
    tokenizer: Tokenizer | None,
    runtime: Runtime,
    sharded: bool,
) -> None:
    """Write an lmforge checkpoint of ``model`` (gathered from all processes when sharded)."""
    if not sharded:
        if runtime.is_main:
            save(model, path, tokenizer)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if runtime.is_main:
        _save_unsharded(model, _strip(state, "model."), path, tokenizer)


def _save_unsharded(
    model: TransformerModel, state: dict[str, torch.Tensor], path: Path, tokenizer: Tokenizer | None
) -> None:
    copy = TransformerModel(model.config)
    copy.load_state_dict(state, strict=False)
    copy.tie_weights()
    save(copy, path, tokenizer)


def save_checkpoint(
    run_dir: Path,
    step: int,
    wrapped: nn.Module,
    model: TransformerModel,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    trainer_state: dict[str, Any],
    tokenizer: Tokenizer | None,
    runtime: Runtime,
    sharded: bool,
    keep_last: int,
) -> Path:
    """Write checkpoint ``step`` atomically (temp dir, then rename) and drop the oldest beyond ``keep_last``."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.parent / f"{_TMP}{final.name}"
    if runtime.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier(runtime)
    model_state, optim_state = _full_state(wrapped, model, optimizer, sharded)
    torch.save(rng_state(), tmp / f"rng-{runtime.rank}.pt")
    if runtime.is_main:
        if sharded:
            _save_unsharded(model, model_state, tmp, tokenizer)
        else:
            save(model, tmp, tokenizer)
        payload = {
            **trainer_state,
            "step": step,
            "world_size": runtime.world_size,
            "optimizer": optim_state,
            "scaler": scaler.state_dict() if scaler is not None else None,
        }
        torch.save(payload, tmp / "trainer.pt")
    barrier(runtime)
    if runtime.is_main:
        _fsync_dir(tmp)
        if final.exists():  # the same step saved again (e.g. final save right after a periodic one)
            old = final.parent / f"{_TMP}old-{final.name}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
        for stale in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(stale, ignore_errors=True)
    barrier(runtime)
    return final


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(
    path: Path,
    wrapped: nn.Module,
    model: TransformerModel,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    runtime: Runtime,
    sharded: bool,
) -> dict[str, Any]:
    """Restore model, optimizer, scaler and this process's RNG; returns the trainer state dict."""
    from safetensors.torch import load_file

    try:
        weights = load_file(str(path / WEIGHTS_NAME))
        payload = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors / pickle raise many types for damaged files
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    if payload.get("world_size", 1) != runtime.world_size:
        raise CheckpointError(
            f"{path}: written by {payload.get('world_size')} process(es), resumed with {runtime.world_size}; "
            "resume with the same torchrun --nproc_per_node"
        )
    if sharded:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True)
        full = {f"model.{k}": v for k, v in weights.items()}
        if (
            model.config.tie_embeddings
            and "model.lm_head.decoder.weight" not in full
            and model.lm_head is not None
        ):
            full["model.lm_head.decoder.weight"] = full["model.embeddings.token.weight"]
        set_model_state_dict(wrapped, dict(full), options=options)
        set_optimizer_state_dict(wrapped, optimizer, payload["optimizer"], options=options)
    else:
        missing, unexpected = model.load_state_dict(weights, strict=False)
        tied = {"lm_head.decoder.weight"} if model.config.tie_embeddings else set()
        if unexpected or set(missing) - tied:
            raise CheckpointError(f"{path}: weights do not match the model ({(missing + unexpected)[:5]})")
        model.tie_weights()
        optimizer.load_state_dict(payload["optimizer"])
    if scaler is not None and payload.get("scaler") is not None:
        scaler.load_state_dict(payload["scaler"])
    rng_file = path / f"rng-{runtime.rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=True))
    return {k: v for k, v in payload.items() if k not in ("optimizer", "scaler")}
