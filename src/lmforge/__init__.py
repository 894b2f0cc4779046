"""lmforge: build, train, calibrate and serve language models on a laptop.

The Python API mirrors the CLI::

    import lmforge
    bundle = lmforge.load("smollm2-135m-instruct")   # model + tokenizer + config
    ids = bundle.tokenizer.encode("The capital of France is")

``load``/``save`` are imported lazily so that ``import lmforge.assets`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmforge.errors import LmforgeError
from lmforge.version import __version__

if TYPE_CHECKING:
    from lmforge.api import load
    from lmforge.models.io.checkpoint import LoadedModel, save
    from lmforge.models.io.hf import save_hf

__all__ = ["LmforgeError", "LoadedModel", "__version__", "load", "save", "save_hf"]


def __getattr__(name: str) -> Any:
    if name == "load":
        # lmforge.api.load attaches a calibrator saved in the checkpoint (calibrate stage).
        from lmforge.api import load

        return load
    if name in ("LoadedModel", "save"):
        from lmforge.models.io import checkpoint

        return getattr(checkpoint, name)
    if name == "save_hf":
        from lmforge.models.io.hf import save_hf

        return save_hf
    raise AttributeError(f"module 'lmforge' has no attribute {name!r}")
