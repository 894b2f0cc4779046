"""``lmforge assets list|path|check``: the bundled real models and corpora."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from lmforge.cli.options import console


def assets_list() -> None:
    """List every asset, its package pin and whether it is installed."""
    from lmforge.assets import check_asset, list_assets

    table = Table("asset", "kind", "source", "license", "installed")
    for asset in list_assets():
        status = check_asset(asset.name)
        table.add_row(
            asset.name, asset.kind, asset.install_command, asset.license, "yes" if status["ok"] else "no"
        )
    console.print(table)


def assets_path(name: str) -> None:
    """Print the path of an installed asset's main file or folder."""
    from lmforge.assets import asset_path

    print(asset_path(name))


def assets_check(
    names: Annotated[list[str] | None, typer.Argument(help="Assets to check (default: all).")] = None,
) -> None:
    """Check assets are installed and complete; exit 2 when one is missing."""
    from lmforge.assets import check_asset, get_asset, list_assets
    from lmforge.errors import AssetMissingError

    missing = []
    for name in names or [a.name for a in list_assets()]:
        status = check_asset(name)
        mark = "[green]ok[/green]" if status["ok"] else "[red]missing[/red]"
        console.print(f"{name}: {mark}")
        if not status["ok"]:
            missing.append(get_asset(name))
    if missing:
        commands = "; ".join(sorted({a.install_command for a in missing}))
        raise AssetMissingError(
            f"missing asset(s): {', '.join(a.name for a in missing)}; install with: {commands}"
        )
