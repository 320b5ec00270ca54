"""The multi-call dispatcher and the ELF closure helper (fast; the Nuitka product is tested in test_build_initrd)."""

from __future__ import annotations

from pathlib import Path

import pytest

from zonebuild.elfdeps import closure, find_library, ldd
from zoneinit import multicall


def test_applet_chosen_by_basename_or_first_argument() -> None:
    assert multicall.applet_name(["/bin/zone", "ps"]) == ("zone", ["/bin/zone", "ps"])
    assert multicall.applet_name(["/lib/zone/init"]) == ("init", ["/lib/zone/init"])
    # Nuitka reports the resolved binary as argv[0]: the exec'd name (from /proc/self/cmdline) decides
    assert multicall.applet_name(["/lib/zone/zone-init", "-v"], "/bin/zone") == ("zone", ["zone", "-v"])
    assert multicall.applet_name(["/lib/zone/zone-init", "selftest"]) == ("selftest", ["selftest"])
    assert multicall.applet_name(["./a.out", "styrolite", "list"]) == ("styrolite", ["styrolite", "list"])


def test_unknown_applet_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert multicall.main(["/bin/bogus"]) == multicall.EXIT_USAGE
    assert "unknown applet 'bogus'" in capsys.readouterr().err
    # the binary's own name is not an applet: running it by hand never starts PID 1
    by_own_name = multicall.applet_name(["/lib/zone/zone-init"], "/lib/zone/zone-init")
    assert by_own_name == ("zone-init", ["/lib/zone/zone-init"])


def test_missing_module_is_a_clear_message(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(multicall.APPLETS, "ghost", ("zoneinit.no_such_module_here", "main"))
    assert multicall.main(["ghost"]) == multicall.EXIT_MISSING
    assert "not in this build" in capsys.readouterr().err


def test_dispatch_runs_the_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(multicall.APPLETS, "probe", ("json", "dumps"))  # any importable callable
    calls: list[list[str]] = []
    monkeypatch.setattr("json.dumps", lambda: calls.append(list(__import__("sys").argv)) or 5)
    assert multicall.main(["x", "probe", "--flag"]) == 5
    assert calls == [["probe", "--flag"]]


def test_elf_closure_finds_libc_and_dlopened_libraries() -> None:
    libs = closure([Path("/bin/ls")], ("libgcc_s.so.1",))
    names = {p.name for p in libs}
    assert "libc.so.6" in names and "libgcc_s.so.1" in names
    assert any(n.startswith("ld-linux") for n in names)
    if Path("/bin/busybox").exists():
        assert ldd(Path("/bin/busybox")) == []  # busybox-static: nothing to stage
    with pytest.raises(FileNotFoundError, match="not found"):
        find_library("libdefinitely-not-here.so.9")
