"""containerd-shim-zone-v2 under a real containerd 1.6 (Debian's), started by the test with its own root,
state and sockets in a temporary directory, and stopped by it.

Proven here, with `ctr` as the client: containerd finds the shim on PATH for runtime io.containerd.zone.v2,
runs `start`, connects over ttrpc, drives the Task service (create, start, wait, exec, ps, pause, resume,
metrics, kill, delete, shutdown), receives the shim's events (ttrpc Events.Forward; also the publish
binary), runs `delete` after the shim disconnects or dies, and shows the shim's errors to its user. The
zone side is the host-process backend double (ZONE_SHIM_BACKEND): real zones are qemu-tests' business.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from containerd_lab import Containerd, Events

pytestmark = [pytest.mark.root, pytest.mark.slow]

if os.geteuid() != 0 or shutil.which("containerd") is None or shutil.which("ctr") is None:
    pytest.skip("needs root and Debian's containerd + ctr", allow_module_level=True)


@pytest.fixture
def containerd() -> Iterator[Containerd]:
    # short paths: unix socket paths are limited to 107 bytes
    root = Path(tempfile.mkdtemp(prefix="zsc", dir="/tmp"))
    daemon = Containerd(root, "shim_backend_double:create")
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_run_output_exit_code_and_events(containerd: Containerd) -> None:
    events = Events(containerd)
    try:
        result = containerd.run("c1", "sh", "-c", "echo hello from a zone shim; echo on-stderr >&2; exit 7")
        assert result.returncode == 7, result.stderr
        assert b"hello from a zone shim\n" in result.stdout
        assert b"on-stderr" in result.stdout + result.stderr
        text = events.wait_for("/tasks/delete", "/containers/delete")
    finally:
        events.stop()
    lines = [line for line in text.splitlines() if '"c1"' in line and "/tasks/" in line]
    topics = [line.split()[5] for line in lines]
    assert topics == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"], text
    assert '"exit_status":7' in lines[2]
    assert containerd.wait_no_shims() == []  # Shutdown ended the shim; nothing left behind


def test_stdin_is_piped_through(containerd: Containerd) -> None:
    result = containerd.run("cat1", "cat", input=b"through containerd's stdin fifo\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"through containerd's stdin fifo\n"


def test_detached_task_exec_ps_pause_metrics_kill(containerd: Containerd) -> None:
    assert containerd.run("d1", "sleep", "60", detach=True).returncode == 0

    def tasks() -> str:
        return containerd.ctr("task", "ls").stdout.decode()

    try:
        assert "d1" in tasks() and "RUNNING" in tasks(), tasks()
        out = containerd.ctr("task", "exec", "--fifo-dir", str(containerd.dir / "fifo"), "--exec-id", "x1", "d1",
                             "sh", "-c", "echo exec output; exit 4", check=False)
        assert (out.returncode, out.stdout) == (4, b"exec output\n"), out
        assert "PID" in containerd.ctr("task", "ps", "d1").stdout.decode()
        containerd.ctr("task", "pause", "d1")
        assert "PAUSED" in tasks(), tasks()
        containerd.ctr("task", "resume", "d1")
        assert "RUNNING" in tasks(), tasks()
        metrics = containerd.ctr("task", "metrics", "d1").stdout.decode()
        assert "memory.usage_in_bytes" in metrics or "memory.usage" in metrics, metrics
        containerd.ctr("task", "kill", "-s", "SIGKILL", "d1")
        deadline = time.monotonic() + 20
        while "STOPPED" not in tasks() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "STOPPED" in tasks(), tasks()
        again = containerd.ctr("task", "kill", "-s", "SIGKILL", "d1", check=False)
        assert again.returncode != 0 and b"process already finished" in again.stderr, again
    finally:
        containerd.ctr("task", "rm", "-f", "d1", check=False)
        containerd.ctr("container", "rm", "d1", check=False)
    assert containerd.wait_no_shims() == []


def test_shim_errors_reach_the_client(containerd: Containerd) -> None:
    assert containerd.run("e1", "sleep", "60", detach=True).returncode == 0
    try:
        checkpoint = containerd.ctr("task", "checkpoint", "e1", check=False)
        assert checkpoint.returncode != 0 and b"checkpoint is not supported by zones" in checkpoint.stderr
        paused = containerd.ctr("task", "resume", "e1", check=False)
        assert paused.returncode != 0 and b"cannot resume e1: it is running" in paused.stderr
    finally:
        containerd.ctr("task", "kill", "-s", "SIGKILL", "e1", check=False)
        time.sleep(0.5)
        containerd.ctr("task", "rm", "-f", "e1", check=False)
        containerd.ctr("container", "rm", "e1", check=False)


def test_killed_shim_is_cleaned_up_by_delete(containerd: Containerd) -> None:
    assert containerd.run("k1", "sleep", "60", detach=True).returncode == 0
    bundle = containerd.dir / "state" / "io.containerd.runtime.v2.task" / "zonetest" / "k1"
    shim_pid = int((bundle / "shim.pid").read_text())
    address = (bundle / "address").read_text()
    assert os.path.exists(address.removeprefix("unix://"))
    os.kill(shim_pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    logs = ""
    while time.monotonic() < deadline:
        logs = containerd.logs()
        if "cleaning up dead shim" in logs and "k1" in logs:
            break
        time.sleep(0.1)
    assert "cleaning up after shim disconnected" in logs
    assert "failed to clean up after shim disconnected" not in logs
    deadline = time.monotonic() + 10
    while os.path.exists(address.removeprefix("unix://")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(address.removeprefix("unix://"))  # `delete` removed the dead shim's socket
    containerd.ctr("task", "rm", "-f", "k1", check=False)
    containerd.ctr("container", "rm", "k1")
    # the double's "container" was the dead shim's child: a real zone backend kills the VMM in
    # cleanup_after_crash; here the test reaps what the double left
    for pid in containerd.shim_processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_publish_binary_delivers_events(containerd: Containerd) -> None:
    from shim.events import PublishBinary, Publisher
    from shim.protos import events_pb2

    events = Events(containerd)
    try:
        publisher = Publisher(PublishBinary(shutil.which("containerd") or "containerd", containerd.address),
                              "zonetest", retries=0)
        publisher.publish(events_pb2.TaskOOM(container_id="published-by-binary"))
        publisher.close(20)
        text = events.wait_for("published-by-binary")
    finally:
        events.stop()
    assert "/tasks/oom" in text and '"container_id":"published-by-binary"' in text
    assert publisher.sent == 1 and publisher.dropped == 0


def test_with_a_bad_zone_config_runs_fail_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default backend (zones) with a config it refuses: `ctr run` fails with the shim's reason, and
    nothing is left."""
    root = Path(tempfile.mkdtemp(prefix="zsc", dir="/tmp"))
    config = root / "shim.toml"
    config.write_text("vcpus = 0\n")
    monkeypatch.setenv("ZONE_SHIM_CONFIG", str(config))
    daemon = Containerd(root, None)
    try:
        result = daemon.run("n1", "true")
        assert result.returncode != 0
        assert b"vcpus = 0: 1 to 64" in result.stderr, result.stderr
        assert daemon.wait_no_shims() == []
        assert b"n1" not in daemon.ctr("task", "ls").stdout
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_terminal_and_resize(containerd: Containerd) -> None:
    """`ctr run -t` on a pseudo-terminal of 31x97: the shim bridges containerd's terminal FIFOs and
    ResizePty reaches the process's terminal."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 31, 97, 0, 0))
    command = ["ctr", "--address", containerd.address, "--namespace", "zonetest", "run", "--rm", "-t",
               "--runtime", "io.containerd.zone.v2", "--fifo-dir", str(containerd.dir / "fifo"), "--rootfs",
               str(containerd.dir / "rootfs"), "t1", "sh", "-c", "sleep 1; tty; stty size; exit 5"]
    proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        if proc.poll() is not None and b"31 97" in output:
            break
    code = proc.wait(30)
    os.close(master)
    assert b"/dev/pts/" in output, output
    assert b"31 97" in output, output
    assert code == 5


def test_log_uri_binary(containerd: Containerd) -> None:
    """`ctr run --log-uri binary://...`: containerd's logging-binary contract (fds 3/4/5, env)."""
    from shimtest import LOGGER

    logger = containerd.dir / "logger.sh"
    logger.write_text(LOGGER)
    logger.chmod(0o755)
    result = containerd.ctr("run", "--rm", "--runtime", "io.containerd.zone.v2", "--log-uri",
                            f"binary://{logger}?dir={containerd.dir}", "--rootfs", str(containerd.dir / "rootfs"),
                            "lg1", "sh", "-c", "echo logged-out; echo logged-err >&2; exit 2", check=False)
    assert result.returncode == 2, result.stderr
    out, err = containerd.dir / "zonetest-lg1.out", containerd.dir / "zonetest-lg1.err"
    deadline = time.monotonic() + 10
    while not (out.exists() and err.exists() and out.read_text() and err.read_text()) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    assert (out.read_text(), err.read_text()) == ("logged-out\n", "logged-err\n")
