"""The ``classifier`` fixture: a tiny classifier checkpoint with train.csv / test.csv beside it."""

from __future__ import annotations

from pathlib import Path

import pytest
from compress_utils import tiny_classifier


@pytest.fixture
def classifier(tmp_path: Path) -> Path:
    return tiny_classifier(tmp_path)
