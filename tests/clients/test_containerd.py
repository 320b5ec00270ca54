"""Real containerd 1.6 through ``ctr``: the io.containerd.runc.v2 shim with runc, and with its BinaryName
(``--runc-binary``) set to styrolite, side by side.

ctr 1.6 has no ``update``, ``--pids-limit`` or ``--user``: those operations are covered through podman and
docker (tests/clients/test_podman_docker.py), which drive the same runtime commands.
"""

from __future__ import annotations

import os
import time

import pytest
from clientlab import output_of as text
from clientlab import unique_name as name

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]




def task_status(containerd, container: str) -> str:
    for line in containerd.ctr("task", "ls").stdout.decode().splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == container:
            return fields[-1]
    return "ABSENT"


def wait_status(containerd, container: str, wanted: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while task_status(containerd, container) != wanted:
        assert time.monotonic() < deadline, f"{container}: {task_status(containerd, container)}, never {wanted}"
        time.sleep(0.2)


def remove(containerd, container: str) -> None:
    containerd.ctr("task", "kill", "-s", "SIGKILL", container)
    containerd.ctr("task", "delete", "-f", container)
    containerd.ctr("container", "delete", container)


def test_run_output_and_exit_code(containerd, runtime):
    result = containerd.run(runtime, "run", "--rm", containerd.IMAGE, name(), "sh", "-c",
                            "echo out; echo err >&2; exit 3")
    assert result.returncode == 3, text(result)
    assert result.stdout.decode() == "out\n" and "err" in result.stderr.decode()


@pytest.mark.parametrize(("argv", "words"), [
    (["/etc/passwd"], "permission denied"),
    (["/bin/absent"], "no such file or directory"),
])
def test_command_that_cannot_run(containerd, runtime, argv, words):
    result = containerd.run(runtime, "run", "--rm", containerd.IMAGE, name(), *argv)
    assert result.returncode != 0, text(result)
    assert words in text(result).lower()


def test_interactive_tty(containerd, runtime):
    code, screen = containerd.pty(runtime, "run", "--rm", "-t", containerd.IMAGE, name(), "sh",
                                  keys=b"tty; echo in-$((6*7)); exit 5\r")
    assert code == 5, screen
    assert "in-42" in screen and "/dev/pts/" in screen


def test_detach_exec_kill(containerd, runtime):
    container = name()
    containerd.run(runtime, "run", "-d", containerd.IMAGE, container, "sleep", "300", check=True)
    try:
        wait_status(containerd, container, "RUNNING")
        result = containerd.ctr("task", "exec", "--exec-id", "e1", container, "sh", "-c", "echo from-exec; exit 4")
        assert result.returncode == 4 and result.stdout.decode() == "from-exec\n", text(result)
        containerd.ctr("task", "kill", "-s", "SIGKILL", container)
        wait_status(containerd, container, "STOPPED")
        deleted = containerd.ctr("task", "delete", container)
        assert deleted.returncode == 0, text(deleted)
    finally:
        remove(containerd, container)


def test_stop_with_a_term_handler(containerd, runtime):
    container = name()
    containerd.run(runtime, "run", "-d", containerd.IMAGE, container, "sh", "-c",
                   "trap 'exit 7' TERM; while true; do sleep 0.1; done", check=True)
    try:
        wait_status(containerd, container, "RUNNING")
        containerd.ctr("task", "kill", "-s", "SIGTERM", container)
        wait_status(containerd, container, "STOPPED")
        assert "7" in text(containerd.ctr("task", "delete", container))  # "exit with non-zero exit code 7"
    finally:
        remove(containerd, container)


def test_pause_and_resume(containerd, runtime):
    container = name()
    containerd.run(runtime, "run", "-d", containerd.IMAGE, container, "sleep", "300", check=True)
    try:
        wait_status(containerd, container, "RUNNING")
        assert containerd.ctr("task", "pause", container).returncode == 0
        wait_status(containerd, container, "PAUSED")
        assert containerd.ctr("task", "resume", container).returncode == 0
        wait_status(containerd, container, "RUNNING")
    finally:
        remove(containerd, container)


def test_read_only(containerd, runtime):
    result = containerd.run(runtime, "run", "--rm", "--read-only", containerd.IMAGE, name(), "sh", "-c",
                            "touch /x 2>/dev/null || echo root-read-only")
    assert result.returncode == 0 and result.stdout.decode() == "root-read-only\n", text(result)


def test_tmpfs(containerd, runtime):
    result = containerd.run(runtime, "run", "--rm", "--mount", "type=tmpfs,src=tmpfs,dst=/data,options=size=8m",
                            containerd.IMAGE, name(), "sh", "-c", "stat -f -c %T /data; touch /data/f && echo writable")
    assert result.returncode == 0, text(result)
    assert result.stdout.decode().split() == ["tmpfs", "writable"]


def test_device(containerd, runtime):
    device = next((d for d in ("/dev/fuse", "/dev/loop-control", "/dev/kmsg") if os.path.exists(d)), None)
    if device is None:
        pytest.skip("no spare character device on this host")
    result = containerd.run(runtime, "run", "--rm", "--device", device, containerd.IMAGE, name(), "sh", "-c",
                            f"ls -l {device} | cut -c1")
    assert result.returncode == 0 and result.stdout.decode() == "c\n", text(result)


def test_privileged(containerd, runtime):
    result = containerd.run(runtime, "run", "--rm", "--privileged", containerd.IMAGE, name(), "sh", "-c",
                            "mount -t tmpfs scratch /tmp && echo mounted")
    if runtime == "runc" and "apply caps" in text(result):
        pytest.skip(f"runc cannot run it on this host: {text(result).strip()}")
    assert result.returncode == 0 and result.stdout.decode() == "mounted\n", text(result)


def test_memory_limit_oom_is_137(containerd, runtime):
    result = containerd.run(runtime, "run", "--rm", "--memory-limit", str(32 << 20), containerd.IMAGE, name(),
                            "sh", "-c", "tail /dev/zero")
    assert result.returncode == 137, text(result)
