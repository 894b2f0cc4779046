"""Process-wide runtime settings that a single run may change and must give back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op CPU thread count set to ``threads`` for the block (left as it is when ``None``
    or 0), then restored, so that one run's ``--threads`` does not leak into the next in the same
    process (tests, notebooks, the Python API)."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
