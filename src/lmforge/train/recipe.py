"""Fine-tuning recipes: YAML files of ``lmforge finetune`` option values (``lmforge tune``'s best.yaml)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from lmforge.errors import ConfigError

__all__ = ["read_option_recipe", "read_yaml"]


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed YAML file at ``path`` (``what`` it holds names it in errors).

    Raises:
        ConfigError: the file cannot be read, or is not valid YAML.
    """
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def read_option_recipe(path: str | Path, known: Iterable[str]) -> dict[str, Any]:
    """The option values of a recipe, keys spelled as Python names (``batch-size`` -> ``batch_size``).

    Args:
        path: the YAML file, a mapping of option names to values (``null`` values are dropped).
        known: the option names a recipe may set.

    Raises:
        ConfigError: unreadable file, invalid YAML, not a mapping, or an unknown key (named, with
            the known ones).
    """
    data = read_yaml(path, "recipe")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of option names (batch_size: 16) to values")
    known = set(known)
    values = {str(key).replace("-", "_"): v for key, v in data.items() if v is not None}
    for key in values:
        if key not in known:
            raise ConfigError(
                f"{path}: unknown field {key!r}; recipe keys are the command's options: {', '.join(sorted(known))}"
            )
    return values
