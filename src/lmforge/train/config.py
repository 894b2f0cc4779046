"""Typed pretraining configuration: dataclasses loaded from a YAML recipe plus ``key=value`` overrides.

A recipe only sets fields of :class:`TrainConfig`; every key is checked against the dataclasses,
so a typo fails with the file and the dotted field name instead of being silently ignored::

    config = load_config("recipes/pretrain/gpt-bible-tiny.yaml", ["optim.lr=3e-4", "max_steps=200"])

The ``model`` section names a preset (``lmforge.models.preset_config``) and may override any
:class:`lmforge.config.ModelConfig` field next to it (``model.hidden_size=256``).
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from lmforge.config import ModelConfig
from lmforge.errors import ConfigError
from lmforge.tasks.corpus import ObjectiveConfig
from lmforge.tasks.pretraining import get_objective


@dataclass
class ModelSection:
    """Which model to train.

    Attributes:
        preset: a preset name (``gpt2-tiny``, ``bert-tiny``, ``t5-tiny``, ...).
        overrides: :class:`ModelConfig` fields that replace the preset's (written flat in YAML,
            next to ``preset``). ``vocab_size`` and special-token ids come from the data unless set.
        vocab_multiple: round the embedding table up to a multiple of this (faster matmuls);
            the extra rows are never produced by the tokenizer.
    """

    preset: str = "gpt2-tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    vocab_multiple: int = 1


@dataclass
class DataConfig:
    """Where examples come from and how many go into a step.

    Attributes:
        path: a directory written by ``lmforge data prepare`` (``--data`` on the command line).
        batch_size: sequences per optimizer step, over all processes and accumulation steps.
        micro_batch_size: sequences per forward pass in one process; ``None``: ``batch_size``
            divided by the number of processes (no accumulation).
    """

    path: str | None = None
    batch_size: int = 32
    micro_batch_size: int | None = None


@dataclass
class OptimConfig:
    """Optimizer, regularisation and learning-rate schedule.

    Attributes:
        name: ``adamw`` or ``sgd`` (with ``momentum``).
        lr: peak learning rate, reached after ``warmup_steps``.
        weight_decay: decoupled (AdamW) or L2 (SGD) decay of matrices; biases, norms and (unless
            ``decay_embeddings``) embeddings are never decayed.
        l1: weight of an L1 penalty on the decayed parameters, added to the loss.
        clip_grad_norm: clip the global gradient norm to this; ``None`` or 0 disables.
        schedule: after warmup, ``cosine`` or ``linear`` decay to ``min_lr_ratio * lr``, or ``constant``.
    """

    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.01
    decay_embeddings: bool = False
    l1: float = 0.0
    clip_grad_norm: float | None = 1.0
    warmup_steps: int = 0
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = 0.1


@dataclass
class TrainConfig:
    """A whole pretraining run.

    Attributes:
        max_steps: optimizer steps (also the length of the learning-rate schedule).
        max_minutes: stop early (and save) after this much wall time; ``None``: no limit.
        eval_every / eval_batches: validate every N steps on the first ``eval_batches`` batches.
        log_every: steps between metric lines; checkpoint_every: steps between checkpoints.
        keep_last: complete checkpoints to keep (the best model is kept separately).
        precision: ``auto`` (bf16 on CUDA when supported, else fp16 with loss scaling; fp32 on
            CPU), ``fp32``, ``bf16`` (autocast, CPU or CUDA) or ``fp16`` (CUDA, GradScaler).
        device: ``auto`` picks CUDA when present.
        compile: wrap the model in ``torch.compile``.
        activation_checkpointing: recompute each block in the backward pass to save memory.
        distributed: under ``torchrun``, ``ddp`` replicates the model, ``fsdp`` shards it (FSDP2).
        threads: torch intra-op threads; ``None`` leaves torch's default.
        cpu_memory_reuse: on CPU, keep freed memory in the process for the next step instead of
            returning it to the OS (avoids page-faulting large activations in every step).
    """

    model: ModelSection = field(default_factory=ModelSection)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    max_steps: int = 1000
    max_minutes: float | None = None
    seed: int = 0
    eval_every: int = 100
    eval_batches: int = 8
    log_every: int = 10
    checkpoint_every: int = 100
    keep_last: int = 2
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    activation_checkpointing: bool = False
    distributed: Literal["ddp", "fsdp"] = "ddp"
    threads: int | None = None
    cpu_memory_reuse: bool = True
    tensorboard: bool = True
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        model = data.pop("model")
        data["model"] = {
            "preset": model["preset"],
            "vocab_multiple": model["vocab_multiple"],
            **model["overrides"],
        }
        return data

    def check(self, source: str = "config") -> None:
        """Cross-field checks that types alone cannot express."""
        positive = {
            "max_steps": self.max_steps,
            "eval_every": self.eval_every,
            "eval_batches": self.eval_batches,
            "log_every": self.log_every,
            "checkpoint_every": self.checkpoint_every,
            "keep_last": self.keep_last,
            "data.batch_size": self.data.batch_size,
            "objective.seq_len": self.objective.seq_len,
            "model.vocab_multiple": self.model.vocab_multiple,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{source}: field {name!r} must be positive, got {value}")
        objective = self.objective
        for name in ("mask_probability", "noise_density"):
            if not 0 < getattr(objective, name) < 1:
                raise ConfigError(f"{source}: field 'objective.{name}' must be in (0, 1)")
        if objective.mask_replace < 0 or objective.random_replace < 0:
            raise ConfigError(f"{source}: objective.mask_replace / random_replace must be >= 0")
        if objective.mask_replace + objective.random_replace > 1:
            raise ConfigError(f"{source}: objective.mask_replace + objective.random_replace must be <= 1")
        get_objective(objective.kind).check(objective, source)
        if self.optim.lr <= 0:
            raise ConfigError(f"{source}: field 'optim.lr' must be positive")


# ---------------------------------------------------------------------------------------------
# Loading and overrides


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML recipe (or start from defaults) and apply ``section.field=value`` overrides.

    Args:
        path: the recipe file; ``None`` starts from :class:`TrainConfig` defaults.
        overrides: strings like ``optim.lr=3e-4`` or ``model.num_layers=2``; values are parsed
            as YAML scalars (``true``, ``1e-3``, ``[0.9, 0.95]``, ``null``).

    Raises:
        ConfigError: unreadable YAML, an unknown field or a value of the wrong type, naming the
            file (or the override) and the dotted field.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read recipe ({exc.strerror})") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of fields, got {type(loaded).__name__}")
        data = loaded
    config = _build(TrainConfig, data, source, "")
    for item in overrides:
        _apply_override(config, item)
    config.check(source if not overrides else f"{source} with overrides {' '.join(overrides)}")
    return config


def _apply_override(config: TrainConfig, item: str) -> None:
    where = f"command-line override {item!r}"
    if "=" not in item:
        raise ConfigError(f"{where}: expected key=value (e.g. optim.lr=3e-4)")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    if parts[0] == "model" and len(parts) == 2:
        _set_model_field(config.model, parts[1], value, where)
        return
    target: Any = config
    for i, part in enumerate(parts):
        hints = get_type_hints(type(target))
        if part not in hints:
            raise _unknown(where, ".".join(parts[:i]), part, type(target))
        if i == len(parts) - 1:
            setattr(target, part, _coerce(value, hints[part], where, key))
        else:
            target = getattr(target, part)
            if not dataclasses.is_dataclass(target):
                raise ConfigError(f"{where}: {'.'.join(parts[: i + 1])!r} is not a section")


def _unknown(source: str, prefix: str, name: str, cls: type) -> ConfigError:
    dotted = f"{prefix}.{name}" if prefix else name
    known = ", ".join(f.name for f in dataclasses.fields(cls))
    return ConfigError(f"{source}: unknown field {dotted!r} (known: {known})")


def _build(cls: type, data: Any, source: str, prefix: str) -> Any:
    if cls is ModelSection:
        return _build_model(data, source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: field {prefix or 'top level'!r} must be a mapping")
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name not in hints:
            raise _unknown(source, prefix, str(name), cls)
        dotted = f"{prefix}.{name}" if prefix else name
        hint = hints[name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value if value is not None else {}, source, dotted)
        else:
            kwargs[name] = _coerce(value, hint, source, dotted)
    return cls(**kwargs)


_MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}


def _build_model(data: Any, source: str) -> ModelSection:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: field 'model' must be a mapping")
    section = ModelSection()
    for name, value in data.items():
        _set_model_field(section, str(name), value, source)
    return section


def _set_model_field(section: ModelSection, name: str, value: Any, source: str) -> None:
    if name == "preset":
        section.preset = _coerce(value, str, source, "model.preset")
    elif name == "vocab_multiple":
        section.vocab_multiple = _coerce(value, int, source, "model.vocab_multiple")
    elif name in _MODEL_FIELDS:
        hint = get_type_hints(ModelConfig)[name]
        section.overrides[name] = _coerce(value, hint, source, f"model.{name}")
    else:
        raise ConfigError(
            f"{source}: unknown field 'model.{name}' (model takes 'preset', 'vocab_multiple' and "
            "lmforge.config.ModelConfig fields such as hidden_size, num_layers, dropout)"
        )


def _coerce(value: Any, hint: Any, source: str, name: str) -> Any:
    """Check ``value`` against a type hint, converting where YAML is looser (int -> float, list -> tuple)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, source, name)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{source}: field {name!r}: invalid value {value!r}"
        )
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{source}: field {name!r}: {value!r} is not one of {choices}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{source}: field {name!r} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, source, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (dict, list):
        if not isinstance(value, origin):
            raise ConfigError(f"{source}: field {name!r} must be a {origin.__name__}, got {value!r}")
        return value
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: field {name!r} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: field {name!r} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: field {name!r} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: field {name!r} must be a string, got {value!r}")
        return value
    return value
