"""Fine-tuning recipes (`lmforge finetune --config best.yaml`) read into option values."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.errors import ConfigError
from lmforge.train.recipe import read_option_recipe


def test_recipe_keys_become_python_names_and_nulls_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "best.yaml"
    path.write_text("batch-size: 8\nlr: 3.0e-5\npatience: null\n", encoding="utf-8")
    assert read_option_recipe(path, {"batch_size", "lr", "patience"}) == {"batch_size": 8, "lr": 3e-5}


@pytest.mark.parametrize(
    ("text", "message"),
    [("lr: [1\n", "not valid YAML"), ("- 1\n", "a recipe is a mapping"), ("lrr: 1\n", "unknown field 'lrr'")],
)
def test_bad_recipes_name_the_file_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        read_option_recipe(path, {"lr"})
    assert str(path) in str(info.value)
