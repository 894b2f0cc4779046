"""Resumable training checkpoints: complete-or-absent directories, keep-last-N, exact RNG restore.

``RUN/checkpoints/step-00000100/`` holds an lmforge model checkpoint (``lmforge.load`` reads it)
plus ``trainer.pt`` (optimizer, loss scaler, step, the loop's best / patience / throughput
state), one ``rng-<rank>.pt`` per process (python, numpy and torch generator states), ``run_state.json`` (the settings the run
had at that step) and, written last, ``manifest.json`` (size and SHA-256 of every other file).
The directory is built under a temporary name, every file fsynced, then renamed, so a run killed
at any moment (even ``kill -9`` or a power cut) leaves only whole checkpoints; :func:`latest`
ignores leftovers and :func:`verify_checkpoint` finds one damaged later (a truncated copy).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import struct
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmforge.errors import CheckpointError
from lmforge.fileio import atomic_write_text, fsync_tree, replace_dir
from lmforge.models import TransformerModel
from lmforge.models.io.checkpoint import WEIGHTS_NAME, save, write_checkpoint
from lmforge.tokenizers import Tokenizer
from lmforge.train.distributed import Runtime, barrier

CHECKPOINTS = "checkpoints"
MANIFEST = "manifest.json"
RUN_STATE = "run_state.json"
_PREFIX = "step-"
_TMP = ".tmp-"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"{_PREFIX}{step:08d}"


def checkpoint_step(path: Path) -> int:
    """The step of a ``step-NNNNNNNN`` directory."""
    return int(path.name[len(_PREFIX) :])


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and p.name[5:].isdigit()]
    return sorted(found, key=checkpoint_step)


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
    model: TransformerModel,
    state: dict[str, torch.Tensor],
    path: Path,
    tokenizer: Tokenizer | None,
    write: Callable[[TransformerModel, Path, Tokenizer | None], object] = save,
) -> None:
    copy = TransformerModel(model.config)
    copy.load_state_dict(state, strict=False)
    copy.tie_weights()
    write(copy, path, tokenizer)


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
    run_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``step`` complete-or-absent and drop the oldest beyond ``keep_last``.

    Files go into a temporary sibling, are fsynced, get a ``manifest.json`` (written last), then
    the directory is renamed into place. Older checkpoints are pruned only after that rename, so
    the previous complete one survives a crash at any point of the save.

    Args:
        run_state: JSON-serialisable settings of the run at this step (``run_state.json``);
            resuming compares them with the new settings.
    """
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
        # write_checkpoint, not save: save would replace tmp as a whole, dropping the RNG files.
        if sharded:
            _save_unsharded(model, model_state, tmp, tokenizer, write=write_checkpoint)
        else:
            write_checkpoint(model, tmp, tokenizer)
        payload = {
            **trainer_state,
            "step": step,
            "world_size": runtime.world_size,
            "optimizer": optim_state,
            "scaler": scaler.state_dict() if scaler is not None else None,
        }
        torch.save(payload, tmp / "trainer.pt")
        state = {"step": step, **(run_state or {})}
        (tmp / RUN_STATE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    barrier(runtime)
    if runtime.is_main:
        # Data before the marker, the marker before the rename: after a power cut the manifest
        # never describes bytes that did not reach the disk.
        fsync_tree(tmp)
        write_manifest(tmp, step)
        replace_dir(tmp, final)  # fsyncs, swaps in whole (the same step saved again replaces it)
        older = [p for p in list_checkpoints(run_dir) if checkpoint_step(p) < step]
        for stale in older[: max(0, len(older) - (keep_last - 1))]:
            shutil.rmtree(stale, ignore_errors=True)
    barrier(runtime)
    return final


# ---------------------------------------------------------------------------------------------
# Completeness: fsync, manifest, verification


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, step: int) -> Path:
    """Record the size and SHA-256 of every file in ``directory`` in its ``manifest.json`` (atomic)."""
    files = {
        path.relative_to(directory).as_posix(): {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }
    text = json.dumps({"step": step, "files": files}, indent=2) + "\n"
    return atomic_write_text(directory / MANIFEST, text)


def verify_checkpoint(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be resumed from, or ``None`` when it is complete.

    Every file must match its size and SHA-256 in ``manifest.json``; the weights' safetensors
    header must account for the file's size and each ``.pt`` file must be a whole torch archive.
    Checkpoints from before manifests existed get the structural checks only.
    """
    manifest_file = path / MANIFEST
    if manifest_file.is_file():
        try:
            manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
            files = dict(manifest["files"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"{MANIFEST} is unreadable ({type(exc).__name__})"
        for name, expected in files.items():
            file = path / name
            if not file.is_file():
                return f"{name} is missing"
            size = file.stat().st_size
            if size != expected["bytes"]:
                return f"{name} has {size:,} bytes, {MANIFEST} says {expected['bytes']:,}"
            if _sha256(file) != expected["sha256"]:
                return f"{name} does not match its SHA-256 in {MANIFEST}"
    for name in (WEIGHTS_NAME, "trainer.pt"):
        if not (path / name).is_file():
            return f"{name} is missing"
    problem = _safetensors_problem(path / WEIGHTS_NAME)
    if problem:
        return f"{WEIGHTS_NAME} {problem}"
    for file in sorted(path.glob("*.pt")):
        try:  # torch.save writes a zip archive; its directory sits at the end, so a cut file fails here
            with zipfile.ZipFile(file) as archive:
                archive.infolist()
        except (OSError, zipfile.BadZipFile):
            return f"{file.name} is not a complete torch file ({file.stat().st_size:,} bytes)"
    return None


def _safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file's framing (an 8-byte header length, a JSON header, data)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as file:
            (header_length,) = struct.unpack("<Q", file.read(8))
            if header_length > size - 8:
                return f"is cut short ({size:,} bytes)"
            header = json.loads(file.read(header_length))
    except (OSError, struct.error, ValueError):
        return f"has no readable header ({size:,} bytes)"
    ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    expected = 8 + header_length + max(ends, default=0)
    return None if size == expected else f"has {size:,} bytes, its header needs {expected:,}"


def read_run_state(path: Path) -> dict[str, Any] | None:
    """The ``run_state.json`` of a checkpoint, or ``None`` for checkpoints written before it existed."""
    file = path / RUN_STATE
    if not file.is_file():
        return None
    return dict(json.loads(file.read_text(encoding="utf-8")))


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
    _check_shapes(path, weights, model)
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


def _check_shapes(path: Path, weights: Mapping[str, torch.Tensor], model: TransformerModel) -> None:
    """Refuse weights of another shape by name, before ``load_state_dict`` fails with a traceback."""
    own = model.state_dict()
    wrong = [
        f"{name} {tuple(tensor.shape)} vs {tuple(own[name].shape)}"
        for name, tensor in weights.items()
        if name in own and own[name].shape != tensor.shape
    ]
    if wrong:
        raise CheckpointError(
            f"{path}: weights have other shapes than the model ({'; '.join(wrong[:3])}); "
            "the checkpoint was written for another model config"
        )
