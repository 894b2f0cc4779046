"""Shared test setup: nothing may reach a model hub."""

from __future__ import annotations

import os

# Set before any test module imports transformers / huggingface_hub, which read them once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
