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
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RUNTIME = "io.containerd.zone.v2"

pytestmark = [pytest.mark.root, pytest.mark.slow]

if os.geteuid() != 0 or shutil.which("containerd") is None or shutil.which("ctr") is None:
    pytest.skip("needs root and Debian's containerd + ctr", allow_module_level=True)


class Containerd:
    def __init__(self, root: Path, backend: str | None) -> None:
        self.dir = root
        self.address = str(root / "c.sock")
        self.sockets = root / "s"
        bindir = root / "bin"
        bindir.mkdir()
        shim = bindir / "containerd-shim-zone-v2"
        shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m shim.main "$@"\n')
        shim.chmod(0o755)
        (root / "rootfs").mkdir()
        (root / "fifo").mkdir()
        (root / "config.toml").write_text(f"""version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.address}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
""")
        env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", PYTHONPATH=f"{REPO}:{HERE}",
                   ZONE_SHIM_SOCKET_DIR=str(self.sockets))
        env.pop("ZONE_SHIM_BACKEND", None)
        if backend:
            env["ZONE_SHIM_BACKEND"] = backend
        self.log = open(root / "containerd.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(["containerd", "--config", str(root / "config.toml"), "--log-level", "debug"],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.address):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not start: {self.logs()[-2000:]}")
            time.sleep(0.05)

    def logs(self) -> str:
        return (self.dir / "containerd.log").read_text(errors="replace")

    def ctr(self, *args: str, input: bytes | None = None, timeout: float = 60,
            check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["ctr", "--address", self.address, "--namespace", "zonetest", *args], input=input,
                                capture_output=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} exited {result.returncode}: {result.stderr.decode()}")
        return result

    def run(self, container_id: str, *command: str, detach: bool = False, input: bytes | None = None,
            check: bool = False) -> subprocess.CompletedProcess:
        flags = ["-d"] if detach else ["--rm"]
        return self.ctr("run", *flags, "--runtime", RUNTIME, "--fifo-dir", str(self.dir / "fifo"), "--rootfs",
                        str(self.dir / "rootfs"), container_id, *command, input=input, check=check)

    def shim_processes(self) -> list[int]:
        """Processes (shims, the double's processes) whose working directory is in this containerd's state."""
        state = str(self.dir / "state")
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/cwd").startswith(state):
                        found.append(int(entry))
        return found

    def wait_no_shims(self, timeout: float = 15) -> list[int]:
        deadline = time.monotonic() + timeout
        while (left := self.shim_processes()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in self.shim_processes():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self.log.close()


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


class Events:
    def __init__(self, containerd: Containerd) -> None:
        self.path = containerd.dir / "events.log"
        self.file = open(self.path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(["ctr", "--address", containerd.address, "events"], stdout=self.file,
                                     stderr=subprocess.STDOUT)
        time.sleep(0.3)

    def wait_for(self, *needles: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.path.read_text(errors="replace")
            if all(n in text for n in needles) or time.monotonic() > deadline:
                return text
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        self.file.close()


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
    try:
        listing = containerd.ctr("task", "ls").stdout.decode()
        assert "d1" in listing and "RUNNING" in listing
        out = containerd.ctr("task", "exec", "--fifo-dir", str(containerd.dir / "fifo"), "--exec-id", "x1", "d1",
                             "sh", "-c", "echo exec output; exit 4", check=False)
        assert out.returncode == 4 and out.stdout == b"exec output\n"
        assert "PID" in containerd.ctr("task", "ps", "d1").stdout.decode()
        containerd.ctr("task", "pause", "d1")
        assert "PAUSED" in containerd.ctr("task", "ls").stdout.decode()
        containerd.ctr("task", "resume", "d1")
        metrics = containerd.ctr("task", "metrics", "d1").stdout.decode()
        assert "memory.usage_in_bytes" in metrics or "memory.usage" in metrics, metrics
        containerd.ctr("task", "kill", "-s", "SIGKILL", "d1")
        deadline = time.monotonic() + 10
        while "STOPPED" not in containerd.ctr("task", "ls").stdout.decode() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "STOPPED" in containerd.ctr("task", "ls").stdout.decode()
        again = containerd.ctr("task", "kill", "-s", "SIGKILL", "d1", check=False)
        assert again.returncode != 0 and b"process already finished" in again.stderr
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


def test_without_a_zone_backend_runs_fail_with_the_reason() -> None:
    root = Path(tempfile.mkdtemp(prefix="zsc", dir="/tmp"))
    daemon = Containerd(root, None)
    try:
        result = daemon.run("n1", "true")
        assert result.returncode != 0
        assert b"no zone backend: the IDM host link" in result.stderr, result.stderr
        assert daemon.wait_no_shims() == []
        assert b"n1" not in daemon.ctr("task", "ls").stdout
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
