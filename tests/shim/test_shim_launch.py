"""`start` and `delete` as containerd runs them, without containerd: pod grouping, the daemon, clean-up."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import empty_pb2

from shim.launch import LaunchError, group_of, socket_address
from shim.protos import shim_pb2
from shim.ttrpc.client import Client
from shim.ttrpc.status import InvalidArgument

REPO = Path(__file__).resolve().parents[2]
TASK = "containerd.task.v2.Task"


@pytest.fixture
def sockets() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="zss", dir="/tmp"))
    yield path
    for entry in path.iterdir():
        entry.unlink()
    path.rmdir()


def bundle(root: Path, name: str, annotations: dict[str, str] | None = None) -> Path:
    path = root / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"process": {"args": ["true"]}, "annotations": annotations or {}}))
    return path


def shim(action: str, bundle_dir: Path, container_id: str, sockets: Path, *extra: str,
         namespace: str = "k8s.io") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), ZONE_SHIM_SOCKET_DIR=str(sockets))
    env.pop("ZONE_SHIM_BACKEND", None)
    args = [sys.executable, "-m", "shim.main", "-namespace", namespace, "-address", "/run/test/containerd.sock",
            "-publish-binary", "/bin/true", "-id", container_id, *extra, action]
    return subprocess.run([a for a in args if a], cwd=bundle_dir, env=env, capture_output=True, timeout=30,
                          stdin=subprocess.DEVNULL)


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        time.sleep(0.05)
    return False


def test_group_of(tmp_path: Path) -> None:
    assert group_of(str(bundle(tmp_path, "a", {"io.kubernetes.cri.sandbox-id": "pod"})), "a") == "pod"
    assert group_of(str(bundle(tmp_path, "b")), "b") == "b"
    (tmp_path / "c").mkdir()
    with pytest.raises(InvalidArgument, match=r"cannot read config\.json"):
        group_of(str(tmp_path / "c"), "c")
    (tmp_path / "c" / "config.json").write_text("[")
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        group_of(str(tmp_path / "c"), "c")
    (tmp_path / "c" / "config.json").write_text('{"annotations": {"a": 1}}')
    with pytest.raises(InvalidArgument, match="annotations is not an object of strings"):
        group_of(str(tmp_path / "c"), "c")


def test_socket_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZONE_SHIM_SOCKET_DIR", "/run/x")
    a = socket_address("/run/containerd/containerd.sock", "k8s.io", "pod")
    assert a.startswith("unix:///run/x/") and len(a) == len("unix:///run/x/") + 64
    assert a == socket_address("/run/containerd/containerd.sock", "k8s.io", "pod")
    assert a != socket_address("/run/containerd/containerd.sock", "default", "pod")
    assert a != socket_address("/other.sock", "k8s.io", "pod")
    monkeypatch.setenv("ZONE_SHIM_SOCKET_DIR", "/" + "d" * 60)
    with pytest.raises(LaunchError, match="longer than 106 bytes"):
        socket_address("/a", "b", "c")


def test_one_shim_per_pod_start_and_delete(tmp_path: Path, sockets: Path) -> None:
    sandbox = bundle(tmp_path, "pod1", {"io.kubernetes.cri.sandbox-id": "pod1",
                                        "io.kubernetes.cri.container-type": "sandbox"})
    os.mkfifo(sandbox / "log")
    log_fd = os.open(sandbox / "log", os.O_RDONLY | os.O_NONBLOCK)  # containerd's reader
    started = shim("start", sandbox, "pod1", sockets)
    assert started.returncode == 0, started.stderr
    address = started.stdout.decode()
    assert address.startswith(f"unix://{sockets}/") and "\n" not in address
    assert (sandbox / "address").read_text() == address
    daemon = int((sandbox / "shim.pid").read_text())
    try:
        assert os.getsid(daemon) == daemon  # its own session and process group
        with Client.connect(address) as client:
            info = client.call(TASK, "Connect", shim_pb2.ConnectRequest(id="pod1"), shim_pb2.ConnectResponse,
                               timeout=10)
        assert info.shim_pid == daemon and info.version.startswith("containerd-shim-zone-v2")
        # a second container of the pod gets the same shim
        member = bundle(tmp_path, "c1", {"io.kubernetes.cri.sandbox-id": "pod1"})
        again = shim("start", member, "c1", sockets)
        assert again.returncode == 0 and again.stdout.decode() == address
        assert (member / "address").read_text() == address and not (member / "shim.pid").exists()
        # another pod gets another shim
        other = shim("start", bundle(tmp_path, "pod2", {"io.kubernetes.cri.sandbox-id": "pod2"}), "pod2", sockets)
        assert other.returncode == 0 and other.stdout.decode() != address
        other_pid = int((tmp_path / "pod2" / "shim.pid").read_text())
        os.kill(other_pid, signal.SIGTERM)
        assert wait_gone(other_pid)
        # `delete` while the pod's shim lives: nothing is torn down
        deleted = shim("delete", member, "c1", sockets, "-bundle", str(member))
        assert deleted.returncode == 0, deleted.stderr
        response = shim_pb2.DeleteResponse.FromString(deleted.stdout)
        assert response.exit_status == 137 and response.exited_at.seconds > 0
        assert os.path.exists(address.removeprefix("unix://"))
        # Shutdown with no task left ends the shim and removes its socket
        with Client.connect(address) as client:
            client.call(TASK, "Shutdown", shim_pb2.ShutdownRequest(id="pod1"), empty_pb2.Empty, timeout=10)
        assert wait_gone(daemon)
        assert not os.path.exists(address.removeprefix("unix://"))
        time.sleep(0.1)
        assert b"serving pod1" in os.read(log_fd, 65536)  # the daemon logged to containerd's log FIFO
    finally:
        os.close(log_fd)
        if not wait_gone(daemon, 0):
            os.kill(daemon, signal.SIGKILL)


def test_delete_after_a_killed_shim_removes_its_socket(tmp_path: Path, sockets: Path) -> None:
    solo = bundle(tmp_path, "solo")
    started = shim("start", solo, "solo", sockets)
    assert started.returncode == 0, started.stderr
    address = started.stdout.decode()
    daemon = int((solo / "shim.pid").read_text())
    assert (solo / "shim.log").exists()  # no log FIFO from containerd: a file
    os.kill(daemon, signal.SIGKILL)
    assert wait_gone(daemon)
    assert os.path.exists(address.removeprefix("unix://"))  # stale
    deleted = shim("delete", solo, "solo", sockets, "-bundle", str(solo))
    assert deleted.returncode == 0, deleted.stderr
    assert shim_pb2.DeleteResponse.FromString(deleted.stdout).exit_status == 137
    assert not os.path.exists(address.removeprefix("unix://"))


def test_start_replaces_a_stale_socket(tmp_path: Path, sockets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    solo = bundle(tmp_path, "stale")
    monkeypatch.setenv("ZONE_SHIM_SOCKET_DIR", str(sockets))
    address = socket_address("/run/test/containerd.sock", "k8s.io", "stale")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(address.removeprefix("unix://"))
    stale.close()  # a socket file nobody listens on
    started = shim("start", solo, "stale", sockets)
    assert started.returncode == 0 and started.stdout.decode() == address
    daemon = int((solo / "shim.pid").read_text())
    with Client.connect(address) as client:
        client.call(TASK, "Shutdown", shim_pb2.ShutdownRequest(id="stale"), empty_pb2.Empty, timeout=10)
    assert wait_gone(daemon)


def test_daemon_answers_a_bad_config_with_the_reason(tmp_path: Path, sockets: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The zone backend (the default) reads its config before it boots anything: a typo in it fails the
    Create naming the key, and the daemon still shuts down cleanly."""
    config = tmp_path / "shim.toml"
    config.write_text("memroy_mib = 512\n")
    monkeypatch.setenv("ZONE_SHIM_CONFIG", str(config))
    solo = bundle(tmp_path, "nob")
    address = shim("start", solo, "nob", sockets).stdout.decode()
    daemon = int((solo / "shim.pid").read_text())
    try:
        with Client.connect(address) as client:
            from shim.ttrpc import Code, RpcError

            with pytest.raises(RpcError) as info:
                client.call(TASK, "Create", shim_pb2.CreateTaskRequest(id="nob", bundle=str(solo)),
                            shim_pb2.CreateTaskResponse, timeout=10)
            assert info.value.code == Code.FAILED_PRECONDITION
            assert f"{config}: unknown setting 'memroy_mib'" in info.value.message
            client.call(TASK, "Shutdown", shim_pb2.ShutdownRequest(id="nob"), empty_pb2.Empty, timeout=10)
        assert wait_gone(daemon)
    finally:
        if not wait_gone(daemon, 0):
            os.kill(daemon, signal.SIGKILL)


@pytest.mark.parametrize(("args", "message"), [
    (["-namespace", "", "start"], b"shim namespace cannot be empty"),
    (["-namespace", "ns", "-id", "x", "start"], b"config.json"),
])
def test_bad_invocations_fail_with_one_line(tmp_path: Path, args: list[str], message: bytes) -> None:
    result = subprocess.run([sys.executable, "-m", "shim.main", *args], cwd=tmp_path, capture_output=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), stdin=subprocess.DEVNULL, timeout=30)
    assert result.returncode == 1
    assert message in result.stderr and result.stderr.count(b"\n") == 1
    assert b"Traceback" not in result.stderr


def test_sigterm_stops_the_daemon(tmp_path: Path, sockets: Path) -> None:
    solo = bundle(tmp_path, "term")
    assert shim("start", solo, "term", sockets).returncode == 0
    daemon = int((solo / "shim.pid").read_text())
    os.kill(daemon, signal.SIGTERM)
    assert wait_gone(daemon)


def test_version() -> None:
    result = subprocess.run([sys.executable, "-m", "shim.main", "-v"], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=30)
    assert result.returncode == 0 and "containerd-shim-zone-v2" in result.stdout

