"""The real PID 1, booted as init of a fresh PID + mount namespace on this host.

No QEMU: ``unshare --pid --fork --mount`` gives ZoneInit PID 1 in a namespace, so everything is real except
the kernel under it: early mounts, the config "disk" (a JSON file), a squashfs root image on a read-only loop
device verified by sha256, the overlay bundle, Styrolite creating and starting the container, the reaper,
IDM over the zone's unix socket, and shutdown ending in reboot(RB_POWER_OFF), which in a child PID
namespace only kills that namespace's init (with SIGINT) - never the host.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from idm import messages as m
from idm.transport import connect_unix
from zoneinit.config.diskformat import encode_config_disk
from zoneinit.config.parser import parse_zone_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUSYBOX = shutil.which("busybox")

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not (BUSYBOX and shutil.which("mksquashfs") and shutil.which("losetup")
                            and shutil.which("unshare")), reason="needs busybox, mksquashfs, losetup, unshare"),
]

LAUNCH = r"""
import os, sys
host_pidns = sys.argv[3]
if os.getpid() != 1 or os.readlink("/proc/self/ns/pid") == host_pidns:
    raise SystemExit("refusing: not PID 1 of a new PID namespace")
from styrolite.syscalls import LINUX
LINUX.mount("proc", "/proc", "proc", 0)  # this PID namespace's own /proc (a zone has no host /proc to skip)
LINUX.mount("tmpfs", "/run", "tmpfs", 0)  # container state (/run/styrolite) must never land on the host's /run
from zoneinit.boot.phases import boot, supervise
from zoneinit.boot.zone import Zone, ZonePaths
from zoneinit.mounts.early import EARLY_MOUNTS
early = tuple(e for e in EARLY_MOUNTS if e.target not in ("/tmp", "/proc", "/dev", "/sys/fs/cgroup"))
zone = Zone(paths=ZonePaths(cmdline=sys.argv[1], idm_socket=sys.argv[2]), console=False, early=early)
boot(zone)
supervise(zone)
"""


@pytest.fixture(scope="module")
def root_image(tmp_path_factory):
    base = tmp_path_factory.mktemp("image")
    root = base / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, root / "bin/busybox")
    for applet in ("sh", "echo", "sleep", "cat", "hostname", "ls", "mount"):
        os.symlink("busybox", root / "bin" / applet)
    (root / "etc").mkdir()
    image = base / "root.sqfs"
    subprocess.run(["mksquashfs", str(root), str(image), "-quiet", "-noappend", "-all-root"], check=True)
    device = subprocess.run(["losetup", "--find", "--show", "--read-only", str(image)], check=True,
                            capture_output=True, text=True).stdout.strip()
    yield device, hashlib.sha256(image.read_bytes()).hexdigest(), image.stat().st_size
    subprocess.run(["losetup", "-d", device], check=False)


def _boot(tmp_path, config):
    """Write the config disk the way the host does (ZONECFG1 header + canonical JSON) and boot."""
    disk = tmp_path / "config.img"
    disk.write_bytes(encode_config_disk(parse_zone_config(config)))
    (tmp_path / "cmdline").write_text(f"console=ttyS0 zone.config={disk}\n")
    sock = tmp_path / "idm.sock"
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount", "--uts", "--propagation", "private", sys.executable, "-c", LAUNCH,
         str(tmp_path / "cmdline"), str(sock), os.readlink("/proc/self/ns/pid")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    return proc, sock


class Client:
    def __init__(self, sock_path, timeout=30.0):
        deadline = time.monotonic() + timeout
        while not os.path.exists(sock_path):
            if time.monotonic() > deadline:
                raise TimeoutError("the zone never opened its IDM socket")
            time.sleep(0.05)
        self.t = connect_unix(str(sock_path))
        self.t.sock.setblocking(True)
        self.t.sock.settimeout(timeout)
        self.decoder = m.MessageDecoder()
        self.inbox = []
        self.n = 0

    def _read_until(self, predicate):
        while True:
            for i, msg in enumerate(self.inbox):
                if predicate(msg):
                    return self.inbox.pop(i)
            data = self.t.sock.recv(65536)
            if not data:
                raise EOFError("zone closed IDM")
            self.inbox.extend(self.decoder.feed(data))

    def call(self, type_, payload=None):
        self.n += 1
        self.t.sock.sendall(m.encode(m.request(self.n, type_, payload)))
        msg = self._read_until(lambda x: x.id == self.n and x.kind in (m.RESPONSE, m.ERROR))
        assert msg.kind == m.RESPONSE, msg.payload
        return msg.payload

    def event(self, type_):
        return self._read_until(lambda x: x.kind == m.EVENT and x.type == type_).payload


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _finish(proc, timeout=60):
    """Wait for the zone to power off; if it doesn't, SIGKILL its init (the namespace dies with it)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for child in _children(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        proc.kill()
        out, _ = proc.communicate(timeout=30)
        pytest.fail(f"the zone did not power off:\n{out}")
    return out


def test_zone_boots_runs_main_container_and_powers_off(tmp_path, root_image):
    device, digest, size = root_image
    config = {
        "version": 1,
        "name": "t1",
        "options": {"shutdown_grace": 2},
        "disks": [{"name": "root0", "role": "root", "device": device, "sha256": f"sha256:{digest}", "size": size}],
        "containers": [
            {"name": "app", "image": "root0", "main": True, "stdin": True,
             "args": ["sh", "-c", "echo hello from $(hostname); read line; echo got $line; exit 7"]},
            {"name": "side", "image": "root0", "args": ["sleep", "1000"]},
        ],
    }
    proc, sock = _boot(tmp_path, config)
    try:
        client = Client(sock)
        client.call("hello", {"events": True})
        ready = client.event("zone.ready")
        phases = [p["name"] for p in ready["boot"]["phases"]]
        assert phases[:3] == ["early-mounts", "cmdline", "supervisor"] and phases[-1] == "ready"
        assert ready["errors"] == [] and ready["pid1"] is True and ready["main"] == "app"
        info = client.call("zone.info")
        assert [(c["id"], c["status"]) for c in info["containers"]] == [("app", "running"), ("side", "running")]
        reply = client.call("exec", {"id": "app", "args": ["sh", "-c", "echo $$; cat /proc/1/cmdline"]})
        out = b""
        while True:
            msg = client._read_until(lambda x: x.id == reply["stream"] and x.kind in (m.DATA, m.CLOSE))
            if msg.kind == m.DATA:
                out += msg.payload
            elif not msg.channel:
                assert msg.payload == {"exit_code": 0}
                break
        assert b"sh\0-c\0echo hello" in out  # the exec joined the container's PID namespace
        client.t.sock.sendall(m.encode(m.request(99, "container.logs", {"id": "app"})))
        logs = client._read_until(lambda x: x.id == 99 and x.kind == m.RESPONSE).payload["data"]
        assert logs == b"hello from t1\n"
        wait = client.n = client.n + 1
        client.t.sock.sendall(m.encode(m.request(wait, "container.wait", {"id": "app"})))
        client.call("container.signal", {"id": "app", "signal": "KILL"})
        exit_event = client.event("container.exit")
        assert exit_event == {"id": "app", "exit_code": 137, "main": True, "signal": "SIGKILL"}
        assert client._read_until(lambda x: x.id == wait and x.kind == m.RESPONSE).payload["exit_code"] == 137
        client.call("events.ack", {"upto": 1 << 40})
        assert client.event("zone.shutdown")["action"] == "poweroff"
    finally:
        out = _finish(proc)
    # reboot(RB_POWER_OFF) from a namespace's init: the kernel kills it with SIGINT
    assert proc.returncode in (128 + signal.SIGINT, -signal.SIGINT), out
    assert "container app exited with 137" in out
    assert "container side exited with" in out  # stopped by the shutdown (SIGTERM, then SIGKILL after grace)
    assert "poweroff" in out


def test_bad_digest_fails_closed(tmp_path, root_image):
    device, digest, size = root_image
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    config = {
        "version": 1,
        "name": "t2",
        "disks": [{"name": "root0", "role": "root", "device": device, "sha256": f"sha256:{wrong}", "size": size}],
        "containers": [{"name": "app", "image": "root0", "main": True, "args": ["true"]}],
    }
    proc, sock = _boot(tmp_path, config)
    try:
        client = Client(sock)
        client.call("hello", {"events": True})
        # the zone waits (exit_ack_wait) for us to see and acknowledge the exit before powering off
        event = client._read_until(lambda x: x.kind == m.EVENT and x.type == "container.exit")
        assert event.payload["id"] == "app" and event.payload["exit_code"] == 125
        assert "sha256" in event.payload["error"] and "refusing to mount" in event.payload["error"]
        client.call("events.ack", {"upto": event.id})
    finally:
        out = _finish(proc)
    assert "refusing to mount" in out
    with open("/proc/self/mountinfo") as f:
        assert not any(line.split()[4].startswith("/run/zone/images") for line in f)
