"""The hyperparameter search space of ``lmforge tune``: one typed range per fine-tuning option.

A space maps a tunable name to a :class:`ParamSpace`: a float or int range (optionally on a log
scale, optionally stepped), a list of choices, or a fixed value. :data:`DEFAULT_SPACE` searches
the usual fine-tuning knobs; a YAML file (``--search-space``) overrides single entries::

    lr: {low: 1.0e-5, high: 3.0e-4, log: true}
    batch_size: {choices: [16, 32]}
    epochs: {low: 2, high: 5}          # int range (epochs and batch_size are integers)
    dropout: 0.1                       # fixed: not searched

Names the file leaves out keep their default range. Every mistake raises a
:class:`~lmforge.errors.ConfigError` naming the file and the field (``lr.low``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import ConfigError
from lmforge.train.finetune_config import FinetuneConfig
from lmforge.train.recipe import read_yaml

__all__ = ["DEFAULT_SPACE", "TUNABLE", "ParamSpace", "apply_params", "load_search_space"]

#: Tunable names, whether each is an integer, and the inclusive bounds of its legal values.
TUNABLE: dict[str, tuple[bool, float, float]] = {
    "lr": (False, 0.0, 1.0),
    "batch_size": (True, 1, 1 << 16),
    "warmup_ratio": (False, 0.0, 1.0),
    "weight_decay": (False, 0.0, 1.0),
    "dropout": (False, 0.0, 0.99),
    "epochs": (True, 1, 1000),
    "label_smoothing": (False, 0.0, 0.99),
    "layer_decay": (False, 0.01, 1.0),
}
_KEYS = ("low", "high", "log", "step", "choices")


@dataclass(frozen=True)
class ParamSpace:
    """The values one hyperparameter may take.

    Attributes:
        kind: ``float`` / ``int`` (a range ``[low, high]``), ``categorical`` (``choices``) or
            ``fixed`` (``value``, not searched).
        low: range start (inclusive).
        high: range end (inclusive).
        log: sample the range on a log scale (learning rates).
        step: discretisation step of the range; ``None``: continuous (floats) or 1 (ints).
        choices: the categorical values.
        value: the fixed value.
    """

    kind: Literal["float", "int", "categorical", "fixed"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    value: Any = None

    def suggest(self, trial: Any, name: str) -> Any:
        """The value an Optuna ``trial`` proposes for ``name`` (fixed values are not recorded)."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        assert self.low is not None and self.high is not None
        if self.kind == "int":
            step = int(self.step or 1)
            return trial.suggest_int(name, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (written to ``tune.json``)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, (), False)}


DEFAULT_SPACE: dict[str, ParamSpace] = {
    "lr": ParamSpace("float", 1e-5, 5e-4, log=True),
    "batch_size": ParamSpace("categorical", choices=(8, 16, 32)),
    "warmup_ratio": ParamSpace("float", 0.0, 0.2),
    "weight_decay": ParamSpace("float", 0.0, 0.1),
    "dropout": ParamSpace("float", 0.0, 0.3),
    "epochs": ParamSpace("int", 1, 4),
}


def _number(value: Any, source: str, field: str, integer: bool) -> float:
    # PyYAML reads `1e-5` (no dot) as a string; accept it as a number.
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{source}: field {field!r} must be a number, got {value!r}")
    if integer and float(value) != int(value):
        raise ConfigError(f"{source}: field {field!r} must be an integer, got {value!r}")
    return int(value) if integer else float(value)


def _checked(value: Any, source: str, field: str, name: str) -> float:
    integer, lowest, highest = TUNABLE[name]
    number = _number(value, source, field, integer)
    if not lowest <= number <= highest or (name == "lr" and number <= 0):
        raise ConfigError(
            f"{source}: field {field!r} = {value!r} is outside [{lowest}, {highest}] for {name}"
        )
    return number


def parse_param(name: str, spec: Any, source: str) -> ParamSpace:
    """One entry of a search-space file: a scalar (fixed), or a mapping with a range or choices."""
    if name not in TUNABLE:
        raise ConfigError(f"{source}: unknown field {name!r}; tunable: {', '.join(TUNABLE)}")
    integer = TUNABLE[name][0]
    if not isinstance(spec, Mapping):
        if isinstance(spec, list):
            raise ConfigError(f"{source}: field {name!r}: write a list of values as {{choices: [...]}}")
        return ParamSpace("fixed", value=_checked(spec, source, name, name))
    unknown = [key for key in spec if key not in _KEYS]
    if unknown:
        raise ConfigError(f"{source}: field '{name}.{unknown[0]}' is unknown; use {', '.join(_KEYS)}")
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) != {"choices"}:
            raise ConfigError(f"{source}: field {name!r}: give either choices or low/high, not both")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{source}: field '{name}.choices' must be a non-empty list")
        values = tuple(_checked(v, source, f"{name}.choices[{i}]", name) for i, v in enumerate(choices))
        return ParamSpace("categorical", choices=values)
    for key in ("low", "high"):
        if key not in spec:
            raise ConfigError(f"{source}: field '{name}.{key}' is missing (a range needs low and high)")
    low = _checked(spec["low"], source, f"{name}.low", name)
    high = _checked(spec["high"], source, f"{name}.high", name)
    if low >= high:
        raise ConfigError(f"{source}: field '{name}.low' ({low}) must be below '{name}.high' ({high})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{source}: field '{name}.log' must be true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{source}: field '{name}.low' must be > 0 with log: true")
    step = None
    if spec.get("step") is not None:
        step = _number(spec["step"], source, f"{name}.step", integer)
        if step <= 0:
            raise ConfigError(f"{source}: field '{name}.step' must be > 0")
        if log:
            raise ConfigError(f"{source}: field '{name}.step' cannot be combined with log: true")
    return ParamSpace("int" if integer else "float", low, high, log=log, step=step)


def load_search_space(path: str | Path | None = None) -> dict[str, ParamSpace]:
    """The default space, with the entries of the YAML file at ``path`` (if any) replacing defaults."""
    space = dict(DEFAULT_SPACE)
    if path is None:
        return space
    source = str(path)
    data = read_yaml(path, "search space")
    if data is None:
        return space
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a search space is a mapping of names ({', '.join(TUNABLE)}) to ranges")
    for name, spec in data.items():
        space[str(name)] = parse_param(str(name), spec, source)
    return space


def apply_params(base: FinetuneConfig, params: Mapping[str, Any]) -> FinetuneConfig:
    """``base`` with the sampled hyperparameters set (``lr`` and ``weight_decay`` live in ``optim``)."""
    optim_fields = {k: params[k] for k in ("lr", "weight_decay") if k in params}
    fields = {k: v for k, v in params.items() if k not in optim_fields}
    unknown = [k for k in fields if k not in TUNABLE]
    if unknown:
        raise ConfigError(f"unknown hyperparameter {unknown[0]!r}; tunable: {', '.join(TUNABLE)}")
    if "epochs" in fields:
        fields["epochs"] = float(fields["epochs"])
    return dataclasses.replace(base, optim=dataclasses.replace(base.optim, **optim_fields), **fields)
