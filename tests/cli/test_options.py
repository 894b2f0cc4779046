"""`with_options`: an option group's flags become the command's own, and it receives what the group builds."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
import typer
from typer.testing import CliRunner

from lmforge.cli.options import classification_data, with_options


def _size(
    width: Annotated[int, typer.Option("--width", help="Columns.")] = 2,
    height: Annotated[int, typer.Option("--height")] = 3,
) -> tuple[int, int]:
    return width, height


def _app(seen: dict[str, Any]) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @with_options(size=_size, data=classification_data)
    def draw(name: Annotated[str, typer.Argument()], *, size: tuple[int, int], data: Any) -> None:
        seen.update(name=name, size=size, data=data)

    @app.command()
    def other() -> None:  # a second command keeps typer from collapsing the app into one
        pass

    return app


def test_group_options_are_the_commands_and_it_receives_what_the_group_builds() -> None:
    seen: dict[str, Any] = {}
    app = _app(seen)
    result = CliRunner().invoke(
        app, ["draw", "box", "--width", "5", "--text-column", "review", "--on-error", "skip"]
    )
    assert result.exit_code == 0, result.output
    assert seen["name"] == "box" and seen["size"] == (5, 3)
    data = seen["data"]
    # A nested group (classification_data uses labelled_data) fills every field it owns.
    assert (data.text_column, data.label_column, data.on_error, data.limit) == (
        "review",
        "label",
        "skip",
        None,
    )
    help_text = CliRunner().invoke(app, ["draw", "--help"], env={"COLUMNS": "200"}).output
    for flag in ("--width", "--height", "--text-column", "--label-column", "--limit", "--on-error"):
        assert flag in help_text


def test_a_groups_validation_reaches_the_user() -> None:
    result = CliRunner().invoke(_app({}), ["draw", "box", "--on-error", "ignore"])
    assert result.exit_code == 2 and "--on-error must be raise or skip" in result.output


def test_a_group_parameter_must_be_keyword_only() -> None:
    def command(size: tuple[int, int]) -> None: ...

    with pytest.raises(TypeError, match="size must be keyword-only"):
        with_options(size=_size)(command)
