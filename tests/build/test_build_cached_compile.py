"""zonebuild.cachedir.cached_compile: the one cache rule of the Nuitka compiles (initrd and styrolite binary)."""

from __future__ import annotations

from pathlib import Path

import pytest

from zonebuild.cachedir import COMPILE_ATTEMPTS, cached_compile
from zonebuild.errors import BuildError


def _writer(calls: list[Path]):
    def compile_into(work: Path) -> None:
        calls.append(work)
        (work / "dist").mkdir(parents=True)
        (work / "dist" / "prog").write_text("built")
    return compile_into


def test_a_compile_is_cached_under_its_key_and_found_again(tmp_path: Path) -> None:
    calls: list[Path] = []
    path, hit = cached_compile(tmp_path, lambda: "k1", "dist/prog", _writer(calls), error=BuildError, log=print)
    assert (path, hit) == (tmp_path / "k1" / "dist" / "prog", False) and path.read_text() == "built"
    assert not (tmp_path / "k1.partial").exists()
    again = cached_compile(tmp_path, lambda: "k1", "dist/prog", _writer(calls), error=BuildError, log=print)
    assert again == (path, True) and len(calls) == 1


def test_sources_that_change_mid_compile_are_compiled_again_and_never_cached_under_the_old_key(tmp_path):
    keys = iter(["old", "new", "new", "new"])
    calls: list[Path] = []
    path, hit = cached_compile(tmp_path, lambda: next(keys), "dist/prog", _writer(calls), error=BuildError,
                               log=print)
    assert path == tmp_path / "new" / "dist" / "prog" and not hit
    assert not (tmp_path / "old").exists() and not (tmp_path / "old.partial").exists()


def test_a_failed_compile_raises_its_error_when_the_sources_held(tmp_path: Path) -> None:
    def failing(work: Path) -> None:
        raise BuildError("nuitka failed (exit 1)")
    with pytest.raises(BuildError, match="nuitka failed"):
        cached_compile(tmp_path, lambda: "k", "dist/prog", failing, error=BuildError, log=print)
    assert not (tmp_path / "k").exists()


def test_sources_that_never_settle_give_up_by_name(tmp_path: Path) -> None:
    counter = iter(range(100))
    with pytest.raises(BuildError, match=f"kept changing during {COMPILE_ATTEMPTS} compiles"):
        cached_compile(tmp_path, lambda: str(next(counter)), "dist/prog", _writer([]), error=BuildError,
                       log=print)
