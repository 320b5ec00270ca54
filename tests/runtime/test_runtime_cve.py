"""Regression tests for the two classic runc escapes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import err, out


@pytest.mark.root
def test_container_cannot_open_the_runtime_binary_through_proc_exe(make_bundle, styrolite):
    """CVE-2019-5736: while the container is created, its pid 1 is still the runtime (host Python).

    The runtime is non-dumpable, so container root without CAP_SYS_PTRACE cannot open /proc/1/exe,
    neither to read nor to overwrite the host binary.
    """
    bundle = make_bundle(["true"])
    styrolite("create", "-b", str(bundle), "c1", check=True)
    probe = styrolite("exec", "c1", "sh", "-c",
                      "cat /proc/1/exe > /dev/null && echo READ; echo x >> /proc/1/exe && echo WROTE; "
                      "readlink /proc/1/exe || echo no-link; cat /proc/self/exe > /dev/null && echo self-ok")
    text = out(probe) + err(probe)
    assert "READ" not in text and "WROTE" not in text
    assert "Permission denied" in text
    assert "self-ok" in text  # the control: a dumpable process of our own is readable


def test_leaked_descriptors_cannot_become_the_cwd(make_bundle, styrolite):
    """CVE-2024-21626: a runtime fd to a host directory, used as process.cwd, would escape the rootfs."""
    for fd in range(3, 12):
        bundle = make_bundle(["sh", "-c", "pwd; ls"], edit=lambda c, fd=fd: c["process"].update(
            cwd=f"/proc/self/fd/{fd}"))
        result = styrolite("run", "-b", str(bundle), f"leak{fd}")
        assert result.returncode != 0, f"fd {fd}: {out(result)}"
        assert "Traceback" not in err(result)


@pytest.mark.root
def test_container_process_sees_only_stdio_descriptors(make_bundle, styrolite):
    bundle = make_bundle(["sh", "-c", "ls /proc/self/fd"])
    result = styrolite("run", "-b", str(bundle), "c1")
    assert result.returncode == 0, err(result)
    assert out(result).split() == ["0", "1", "2", "3"]  # 3 is ls's own directory handle


@pytest.mark.root
def test_preserve_fds_passes_exactly_those(make_bundle, styrolite, tmp_path, state_root):
    data = tmp_path / "extra"
    data.write_text("passed through\n")
    bundle = make_bundle(["sh", "-c", "cat <&3; ls /proc/self/fd"])
    # fd 3 is set up in a shell around the runtime (never in pytest's own process)
    result = subprocess.run(
        ["sh", "-c", f'exec 3<"{data}"; exec "$@"', "sh", sys.executable, "-m", "styrolite.cli",
         "--root", str(state_root), "run", "--preserve-fds", "1", "-b", str(bundle), "c1"],
        capture_output=True, timeout=60)
    assert result.returncode == 0, err(result)
    assert out(result).split() == ["passed", "through", "0", "1", "2", "3", "4"]
