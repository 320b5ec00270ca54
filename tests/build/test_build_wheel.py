"""Packaging: a wheel holds exactly the top-level packages pyproject.toml declares, every module of them, and
nothing setuptools staged on the way (its build directory must not land in build/, our zonebuild package)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def declared_packages() -> dict[str, str]:
    """import name -> folder, from pyproject.toml's [tool.zone.packages] (the one list setup.py reads)."""
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["zone"]["packages"]


def _source_tree(into: Path) -> Path:
    """The checkout's tracked (and new, not ignored) files, as a clean tree pip can build from."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    for name in filter(None, listed.stdout.split("\0")):
        source = REPO / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    return into


def test_wheel_holds_exactly_our_packages(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    source = _source_tree(tmp_path / "src")
    before = sorted(os.listdir(source / "build"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                             "--disable-pip-version-check", "-q", "-w", str(tmp_path / "dist"), str(source)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    # setuptools staged its copies elsewhere: build/ (zonebuild) is as it was, no build/lib, no build/bdist.*
    assert sorted(os.listdir(source / "build")) == before
    (wheel,) = (tmp_path / "dist").glob("zone-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    declared = declared_packages()
    assert top_level == set(declared)
    assert not [n for n in names if n.startswith(("zonebuild/lib/", "zonebuild/bdist", "build/"))]
    # every module of every declared folder is in the wheel, under the package's import name
    for package, folder in declared.items():
        for module in (REPO / folder).rglob("*.py"):
            if "__pycache__" in module.parts or not (module.parent / "__init__.py").is_file():
                continue
            if subprocess.run(["git", "check-ignore", "-q", str(module)], cwd=REPO).returncode == 0:
                continue
            assert f"{package}/{module.relative_to(REPO / folder).as_posix()}" in names, module
    assert "zonebuild/stage0/init.c" in names
