"""A pod in a real zone, the way the containerd shim drives one (docs/pods-contract.md): QEMU TCG, the zone
kernel, our initrd; over ZoneLink only.

The zone boots with **no containers** and ``poweroff_on_exit: false`` and stays up. A busybox rootfs built by
host.pod.rootfs (erofs, owners shifted) is hot-plugged over QMP and announced with ``disk.attach``; containers
are created from containerd 1.6's CRI config for runc (tests/zoneinit/fixtures, captured from a real
``crictl create``) turned into a create request as a shim would turn it (host bind mounts become volumes):
attach from the first byte, stdin, exec with a tty and with additional gids, pause/resume, update, stats,
OOM (container.oom + 137), two containers over localhost, two sharing the pod's pid namespace
(shareProcessNamespace), file and emptyDir volumes, the termination log;
then delete, detach the disk (unplugged: DEVICE_DELETED), shut down. Nothing is left behind.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from host.backends import Backend
from host.backends.hotplug import PluggedDisk, qemu_block_nodes
from host.launch import create_and_boot
from host.link import ZoneLink
from host.state import ZoneDir
from host.zonedef import ZoneDef
from idm.errors import RemoteError

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "zoneinit" / "fixtures"
BOOT_TIMEOUT = float(os.environ.get("ZONE_TEST_BOOT_TIMEOUT", "240"))
SHIFT = 65536
pytestmark = [pytest.mark.root, pytest.mark.slow]


@dataclass
class Pod:
    zone: ZoneDir
    backend: Backend
    link: ZoneLink
    disk: PluggedDisk
    image: Any
    numbers: dict[str, float] = field(default_factory=dict)


def _busybox_layer(layout: Path, into: Path) -> None:
    """The busybox image's one layer, unpacked as containerd's overlayfs snapshotter would."""
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_bytes())
    into.mkdir(parents=True)
    with tarfile.open(layout / "blobs/sha256" / manifest["layers"][0]["digest"][7:]) as layer:
        layer.extractall(into, filter="fully_trusted")


@pytest.fixture(scope="module")
def pod(zone_inputs: Any) -> Iterator[Pod]:
    from host.pod.rootfs import rootfs_image

    work = Path(tempfile.mkdtemp(prefix="zone-pod-"))
    state = work / "state"
    name = f"pod-{uuid.uuid4().hex[:8]}"
    _busybox_layer(zone_inputs.busybox_image, work / "snapshots/1/fs")
    (work / "snapshots/2/fs").mkdir(parents=True)
    (work / "snapshots/2/work").mkdir()
    mounts = [{"type": "overlay", "source": "overlay",
               "options": [f"upperdir={work}/snapshots/2/fs", f"workdir={work}/snapshots/2/work",
                           f"lowerdir={work}/snapshots/1/fs"]}]
    image = rootfs_image(mounts, owner_shift=SHIFT, fstype="erofs", cache_dir=work / "cache")
    definition = ZoneDef(name=name, kernel_image=str(zone_inputs.kernel_image), initrd=str(zone_inputs.initrd),
                         memory_mib=320)
    document = {"version": 1, "name": name, "hostname": "web-0", "options": {"poweroff_on_exit": False}}
    zone, backend = create_and_boot(definition, daemonize=False, root=state, document=document)
    link = None
    try:
        link = ZoneLink.open(zone, timeout=BOOT_TIMEOUT)
        link.wait_event("zone.ready", timeout=BOOT_TIMEOUT)
        assert link.info()["containers"] == []
        started = time.monotonic()
        disk = backend.attach_disk(image.path, name="rootfs0")
        attached = link.attach_disk("rootfs0", sha256=image.sha256, size=image.size, fstype="erofs",
                                    owner_shift=SHIFT, **disk.zone_locator())
        assert attached["device"].startswith("/dev/vd")
        pod = Pod(zone, backend, link, disk, image, {"disk_attach": time.monotonic() - started})
        yield pod
    finally:
        if zone.console_log.exists():   # shown by pytest when a test failed
            print(f"zone console (tail):\n{zone.console_log.read_text(errors='replace')[-6000:]}")
        if link is not None:
            link.close()
        backend.kill()
        zone.remove()
        subprocess.run(["rm", "-rf", str(work)], check=False)


def cri_request(fixture: str, name: str, args: list[str], *, env: list[str] | None = None,
                resources: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """containerd's config.json as a shim sends it: host bind mounts become volumes (the sandbox's name files
    as files, /dev/shm a memory emptyDir, the termination log a writable file, hostPath dirs emptyDirs)."""
    oci = copy.deepcopy(json.loads((FIXTURES / fixture).read_text()))
    oci["process"]["args"] = args
    if env:
        oci["process"]["env"] += env
    if resources is not None:
        oci["linux"]["resources"] = resources
    volumes: list[dict[str, Any]] = []
    kept = []
    for mount in oci["mounts"]:
        destination = mount["destination"]
        if mount["type"] != "bind":
            kept.append(mount)
        elif destination == "/dev/shm":
            volumes.append({"kind": "emptydir", "name": "dev-shm", "destination": destination, "medium": "memory"})
        elif destination == "/dev/termination-log":
            volumes.append({"kind": "files", "destination": destination, "readonly": False,
                            "files": [{"path": "", "data": b"", "mode": 0o666}]})
        elif destination.startswith("/etc/host") or destination == "/etc/resolv.conf":
            text = {"/etc/hostname": b"web-0\n", "/etc/hosts": b"127.0.0.1 localhost\n10.1.0.5 web-0\n",
                    "/etc/resolv.conf": b"nameserver 10.96.0.10\noptions ndots:5\n"}[destination]
            volumes.append({"kind": "files", "destination": destination, "readonly": "ro" in mount["options"],
                            "files": [{"path": "", "data": text}]})
        elif destination == "/etc/config":
            volumes.append({"kind": "files", "destination": destination,
                            "files": [{"path": "greeting", "data": b"hello from a configMap\n"},
                                      {"path": "nested/key", "data": b"v", "mode": 0o600}]})
        else:
            volumes.append({"kind": "emptydir", "name": "data", "destination": destination})
    oci["mounts"] = kept
    return oci, volumes


class Attached:
    """Reads an attach stream's channels in threads, timing the first byte."""

    def __init__(self, attach: Any) -> None:
        self.attach = attach
        self.data: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self.first: float | None = None
        self.threads = [threading.Thread(target=self._read, args=(name, reader), daemon=True)
                        for name, reader in (("stdout", attach.stdout), ("stderr", attach.stderr)) if reader]
        for thread in self.threads:
            thread.start()

    def _read(self, name: str, reader: Any) -> None:
        while chunk := reader.read(65536):
            if self.first is None:
                self.first = time.monotonic()
            self.data[name] += chunk

    def wait_for(self, needle: bytes, channel: str = "stdout", timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.data[channel]:
            assert time.monotonic() < deadline, f"no {needle!r} on {channel}: {bytes(self.data[channel])!r}"
            time.sleep(0.02)

    def finish(self, timeout: float = 60) -> dict[str, Any]:
        result = self.attach.wait(timeout)
        for thread in self.threads:
            thread.join(timeout)
        return dict(result)


def test_a_container_from_a_cri_config(pod: Pod) -> None:
    oci, volumes = cri_request("containerd-1.6-cri-app.json", "app", [
        "sh", "-c", "echo first-line; id; cat /etc/config/greeting; cat /etc/hosts; hostname; "
        "cat /proc/sys/kernel/shmmax /proc/sys/net/ipv4/tcp_keepalive_time; "
        "echo $GREETING; read line; echo got:$line; echo err-line >&2; "
        "echo bye > /dev/termination-log; exit 3"])
    oci["linux"]["sysctl"] = {"kernel.shmmax": "123456789", "net.ipv4.tcp_keepalive_time": "600"}
    created_at = time.monotonic()
    summary = pod.link.create({"name": "app", "image": "rootfs0", "stdin": True}, oci=oci, volumes=volumes,
                              attach=True)
    created = time.monotonic()
    assert summary["status"] == "created" and summary["args"][0] == "sh"
    attached = Attached(pod.link.attach("app"))
    assert attached.attach.stdin is not None and not attached.attach.terminal
    started_at = time.monotonic()
    pod.link.start("app")
    pod.numbers["create"] = created - created_at
    pod.numbers["create_to_start"] = time.monotonic() - created_at
    attached.wait_for(b"first-line")
    assert attached.first is not None
    pod.numbers["start_to_first_byte"] = attached.first - started_at
    attached.attach.stdin.write(b"hello-stdin\n")
    attached.attach.stdin.close()
    result = attached.finish()
    out = bytes(attached.data["stdout"])
    assert result["exit_code"] == 3, out
    assert b"uid=1000 gid=3000 groups=2000,3000" in out, out
    assert b"hello from a configMap" in out and b"10.1.0.5 web-0" in out and b"\nhello\n" in out
    assert b"got:hello-stdin" in out
    assert b"\nweb-0\n123456789\n600\n" in out   # the pod's host name and sysctls
    assert bytes(attached.data["stderr"]) == b"err-line\n"
    assert pod.link.read_file("app", "/dev/termination-log") == b"bye\n"
    logs = pod.link.logs("app")
    assert b"first-line" in logs["data"]
    pod.link.delete("app")


def test_exec_with_a_tty_and_a_user(pod: Pod) -> None:
    oci, volumes = cri_request("containerd-1.6-cri-app.json", "sleeper",
                               ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"])
    pod.link.create({"name": "sleeper", "image": "rootfs0"}, oci=oci, volumes=volumes, attach=True, start=True)
    process = dict(oci["process"], args=["sh", "-c", "stty size; tty; id -G"], terminal=True,
                   consoleSize={"height": 40, "width": 120})
    session = pod.link.exec(container="sleeper", process=process)
    out, _err, code = session.communicate(b"")
    assert code == 0, out
    assert b"40 120" in out and b"/dev/pts/" in out and b"3000 2000" in out, out
    plain = pod.link.exec(["id"], container="sleeper", user={"uid": 1234, "gid": 1234, "additional_gids": [7]})
    out, _err, code = plain.communicate()
    assert code == 0 and out.strip() == b"uid=1234 gid=1234 groups=7", out
    pod.link.signal("sleeper", "SIGTERM")
    assert pod.link.wait("sleeper", timeout=60)["exit_code"] == 0
    pod.link.delete("sleeper")


def test_pause_resume_update_stats(pod: Pod) -> None:
    oci, volumes = cri_request("containerd-1.6-cri-app.json", "ticker",
                               ["sh", "-c", "while true; do echo tick; sleep 0.2; done"])
    pod.link.create({"name": "ticker", "image": "rootfs0"}, oci=oci, volumes=volumes, attach=True, start=True)
    attached = Attached(pod.link.attach("ticker"))
    attached.wait_for(b"tick")
    assert pod.link.pause("ticker")["status"] == "paused"
    time.sleep(1.0)
    before = len(attached.data["stdout"])
    time.sleep(1.5)
    assert len(attached.data["stdout"]) == before   # frozen: no output
    assert pod.link.resume("ticker")["status"] == "running"
    deadline = time.monotonic() + 30
    while len(attached.data["stdout"]) == before:
        assert time.monotonic() < deadline, "no output after resume"
        time.sleep(0.1)
    pod.link.update("ticker", {"memory": {"limit": 96 << 20}, "pids": {"limit": 64}})
    stats = pod.link.stats("ticker")
    assert stats["memory"]["limit"] == 96 << 20 and stats["pids"]["limit"] == 64
    assert stats["memory"]["usage"] and stats["memory"]["working_set"] <= stats["memory"]["usage"]
    assert stats["cpu"]["usage_usec"] and stats["pids"]["current"] >= 1
    pod.link.signal("ticker", "SIGKILL")
    assert attached.finish()["exit_code"] == 137
    pod.link.delete("ticker")


def test_oom_kill_is_reported(pod: Pod) -> None:
    memory = {"memory": {"limit": 24 << 20, "swap": 24 << 20}}
    oci, volumes = cri_request("containerd-1.6-cri-app.json", "hog",
                               ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"], resources=memory)
    pod.link.create({"name": "hog", "image": "rootfs0"}, oci=oci, volumes=volumes, start=True)
    oom = pod.link.wait_event("container.oom", timeout=60, id="hog")
    assert oom.payload["oom_kills"] >= 1
    exited = pod.link.wait_event("container.exit", timeout=60, id="hog")
    assert exited.payload["exit_code"] == 137 and exited.payload.get("signal") == "SIGKILL"
    assert oom.seq < exited.seq
    pod.link.delete("hog")
    # a child killed while the container lives on: only the memory.events watch can tell
    oci, volumes = cri_request("containerd-1.6-cri-app.json", "parent", [
        "sh", "-c", "dd if=/dev/zero of=/dev/null bs=64M count=1; echo survived; sleep 100"], resources=memory)
    pod.link.create({"name": "parent", "image": "rootfs0"}, oci=oci, volumes=volumes, attach=True, start=True)
    attached = Attached(pod.link.attach("parent"))
    assert pod.link.wait_event("container.oom", timeout=60, id="parent").payload["oom_kills"] == 1
    attached.wait_for(b"survived")
    assert pod.link.containers()[0]["status"] == "running"
    pod.link.signal("parent", "SIGKILL")
    assert attached.finish()["exit_code"] == 137
    pod.link.delete("parent")


def test_two_containers_share_localhost_and_an_emptydir(pod: Pod) -> None:
    server_oci, volumes = cri_request("containerd-1.6-cri-app.json", "server",
                                      ["sh", "-c", "echo shared > /data/from-server; nc -l -p 8080"])
    pod.link.create({"name": "server", "image": "rootfs0"}, oci=server_oci, volumes=volumes, attach=True,
                    start=True)
    server = Attached(pod.link.attach("server"))
    client_oci, volumes = cri_request("containerd-1.6-cri-app.json", "client", [
        "sh", "-c", "cat /data/from-server; for i in $(seq 50); do "
        "echo hello-over-localhost | nc 127.0.0.1 8080 && exit 0; sleep 0.2; done; exit 1"])
    pod.link.create({"name": "client", "image": "rootfs0"}, oci=client_oci, volumes=volumes, attach=True,
                    start=True)
    client = Attached(pod.link.attach("client"))
    assert client.finish()["exit_code"] == 0
    assert b"shared" in client.data["stdout"]
    server.wait_for(b"hello-over-localhost")
    assert server.finish()["exit_code"] == 0
    for name in ("client", "server"):
        pod.link.delete(name)


def test_two_containers_share_the_pods_pid_namespace(pod: Pod) -> None:
    """shareProcessNamespace: containerd's config for the tty container names the sandbox's pid namespace; in
    the zone both containers join the pod's, whose pid 1 is its holder, and see each other's processes. A
    container with its own pid namespace (the app config) sees neither."""
    def shared(name: str, args: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        oci, volumes = cri_request("containerd-1.6-cri-tty.json", name, args)
        assert oci["linux"]["namespaces"][0]["type"] == "pid" and oci["linux"]["namespaces"][0]["path"]
        oci["process"]["terminal"] = False
        return oci, volumes

    oci, volumes = shared("first", ["sleep", "4242"])
    pod.link.create({"name": "first", "image": "rootfs0"}, oci=oci, volumes=volumes, start=True)
    oci, volumes = shared("second", ["sh", "-c", "cat /proc/1/comm; ps -o pid,args; ls /proc"])
    pod.link.create({"name": "second", "image": "rootfs0"}, oci=oci, volumes=volumes, attach=True, start=True)
    second = Attached(pod.link.attach("second"))
    assert second.finish()["exit_code"] == 0
    out = bytes(second.data["stdout"]).decode()
    assert out.splitlines()[0] == "pod-pid-holder", out           # pid 1 of the pod's pid namespace
    assert "sleep 4242" in out and "ps -o pid,args" in out, out   # the first container's process, and its own
    oci, volumes = cri_request("containerd-1.6-cri-app.json", "own", ["ps", "-o", "pid,args"])
    pod.link.create({"name": "own", "image": "rootfs0"}, oci=oci, volumes=volumes, attach=True, start=True)
    own = Attached(pod.link.attach("own"))
    assert own.finish()["exit_code"] == 0
    assert "sleep 4242" not in own.data["stdout"].decode() and "pod-pid-holder" not in own.data["stdout"].decode()
    pod.link.signal("first", "SIGKILL")
    assert pod.link.wait("first", timeout=60)["exit_code"] == 137
    for name in ("first", "second", "own"):
        pod.link.delete(name)
    # the pod's pid namespace outlives its containers (its holder is no container: the zone still powers off
    # at the end, test_zz), and the next container sharing it joins the same one
    oci, volumes = shared("third", ["cat", "/proc/1/comm"])
    pod.link.create({"name": "third", "image": "rootfs0"}, oci=oci, volumes=volumes, attach=True, start=True)
    third = Attached(pod.link.attach("third"))
    assert third.finish()["exit_code"] == 0 and bytes(third.data["stdout"]) == b"pod-pid-holder\n"
    pod.link.delete("third")


def test_refusals_name_what_cannot_be_honoured(pod: Pod) -> None:
    oci, volumes = cri_request("containerd-1.6-cri-app.json", "bad", ["true"])
    with pytest.raises(RemoteError) as error:
        pod.link.create({"name": "bad", "image": "rootfs0"},
                        oci={**oci, "mounts": [*oci["mounts"], {"destination": "/host", "type": "bind",
                                                                "source": "/var/lib/x", "options": ["rbind"]}]})
    assert error.value.code == "invalid-argument" and "/var/lib/x" in error.value.remote_message
    with pytest.raises(RemoteError) as error:
        pod.link.create({"name": "bad", "image": "rootfs0"}, oci={**oci, "hooks": {"prestart": [{"path": "/x"}]}})
    assert error.value.code == "invalid-argument" and "hooks" in error.value.remote_message
    with pytest.raises(RemoteError) as error:
        pod.link.create({"name": "bad", "image": "nodisk"}, oci=oci, volumes=volumes)
    assert "nodisk" in error.value.remote_message
    assert all(c["id"] != "bad" for c in pod.link.containers())   # nothing was left behind


def test_zz_detach_the_disk_and_shut_down(pod: Pod) -> None:
    oci, volumes = cri_request("containerd-1.6-cri-app.json", "holder", ["sleep", "100"])
    pod.link.create({"name": "holder", "image": "rootfs0"}, oci=oci, volumes=volumes, start=True)
    with pytest.raises(RemoteError) as error:
        pod.link.detach_disk("rootfs0")
    assert "holder" in error.value.remote_message
    pod.link.signal("holder", "SIGKILL")
    pod.link.wait("holder", timeout=60)
    pod.link.delete("holder")
    pod.link.detach_disk("rootfs0")
    pod.backend.detach_disk(pod.disk)
    assert "node-rootfs0" not in qemu_block_nodes(pod.zone.qmp_socket)
    assert pod.link.info()["containers"] == []
    print(f"pod numbers (s): {json.dumps({k: round(v, 3) for k, v in pod.numbers.items()})}")
    pod.link.shutdown("test done")
    assert pod.backend.wait(60), "the zone did not power off"
