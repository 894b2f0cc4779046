"""Shared test setup: nothing may reach a model hub."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from lmforge.runtime import torch_threads

# Set before any test module imports transformers / huggingface_hub, which read them once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread for the test: tiny models run many small ops, and on a shared,
    oversubscribed CPU extra threads only wait. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    with torch_threads(1):
        yield
