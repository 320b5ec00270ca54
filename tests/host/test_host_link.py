"""host.link.ZoneLink, a shim's client of a zone, against PID 1's real handlers on their loop in a thread (the
fork/exec runtime of tests/zone_fakes.py) over a socketpair: every pod request has a typed method, the attach
stream is usable from threads, refusals come back as RemoteError with the zone's code."""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from zone_fakes import LoopThread, ZoneSide

from host.errors import BackendError
from host.link import ZoneLink
from idm.client import IdmClient
from idm.errors import RemoteError
from idm.server import IdmServer
from idm.transport import socket_pair
from zoneinit.console import ConsoleLog
from zoneinit.mounts import hotplug
from zoneinit.supervisor.loop import Supervisor

CRI = Path(__file__).resolve().parents[1] / "zoneinit" / "fixtures" / "containerd-1.6-cri-app.json"


class Zone:
    def __init__(self, tmp: Path) -> None:
        log = ConsoleLog(fd=-1)
        self.server = IdmServer(info=lambda: {"zone": "linked", "ready": True})
        self.loop = LoopThread(self.server, Supervisor(log), reap=True)
        self.side = ZoneSide(tmp, self.loop.supervisor, self.server, log, self.server.emit)
        self.side.root_disk()
        zone_end, host_end = socket_pair()
        self.server.add_transport(zone_end, name="host", persistent=False)
        self.loop.start()
        client = IdmClient(host_end, name="test")
        self.link = ZoneLink("linked", client, client, client.info)   # as ZoneLink.open makes it


@pytest.fixture
def zone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Zone]:
    monkeypatch.setattr(hotplug, "SYS_BLOCK", str(tmp_path / "sys"))
    monkeypatch.setattr(hotplug, "DEV", str(tmp_path / "dev"))
    zone = Zone(tmp_path)
    yield zone
    for container in zone.link.containers():
        if container["status"] in ("running", "created", "paused"):
            if container["status"] == "paused":
                zone.link.resume(container["id"])
            zone.link.signal(container["id"], "SIGKILL")
            zone.link.wait(container["id"], timeout=10)
    zone.link.close()
    zone.loop.stop()


def oci(args: list[str], **process: object) -> dict:
    config = copy.deepcopy(json.loads(CRI.read_text()))
    config["mounts"] = [mount for mount in config["mounts"] if mount["type"] != "bind"]
    config["process"].update(args=args, **process)
    return config


def test_a_pod_container_through_the_link_from_threads(zone: Zone) -> None:
    link = zone.link
    summary = link.create({"name": "app", "image": "rootfs0", "stdin": True},
                          oci=oci(["sh", "-c", "echo ready; cat; echo bye >&2; exit 2"]),
                          volumes=[{"kind": "files", "destination": "/dev/termination-log", "readonly": False,
                                    "files": [{"path": "", "data": b""}]}], attach=True)
    assert summary["status"] == "created" and summary["args"][0] == "sh"
    attached = link.attach("app")
    assert attached.stdin is not None and attached.stderr is not None and not attached.terminal
    link.start("app")
    out = bytearray()
    err = bytearray()

    def pump(reader, into: bytearray) -> None:
        while chunk := reader.read(7):   # small reads: the reader keeps what it has not handed out
            into += chunk

    threads = [threading.Thread(target=pump, args=(attached.stdout, out)),
               threading.Thread(target=pump, args=(attached.stderr, err))]
    for thread in threads:
        thread.start()
    payload = bytes(range(256)) * 8192   # 2 MiB through cat: stdin credit and stdout credit both ways
    attached.stdin.write(payload)
    attached.stdin.close()
    result = attached.wait(30)
    for thread in threads:
        thread.join(30)
    assert result["exit_code"] == 2 and result["id"] == "app"
    assert bytes(out) == b"ready\n" + payload and bytes(err) == b"bye\n"
    with pytest.raises(BrokenPipeError):
        attached.stdin.write(b"too late")
    assert link.read_file("app", "/dev/termination-log") == b""
    link.delete("app")


def test_typed_calls(zone: Zone) -> None:
    link = zone.link
    link.create({"name": "w", "image": "rootfs0"}, oci=oci(["sleep", "30"]), start=True)
    assert link.pause("w")["status"] == "paused"
    assert link.resume("w")["status"] == "running"
    assert link.update("w", {"cpu": {"quota": 50000, "period": 100000}})["id"] == "w"
    stats = link.stats("w")
    assert stats["id"] == "w" and stats["memory"]["working_set"] == 15360 and stats["pids"]["current"] == 1
    session = link.exec(container="w", process={"args": ["id", "-u"], "cwd": "/", "env": ["PATH=/usr/bin:/bin"],
                                               "user": {"uid": 0, "gid": 0, "additionalGids": [4]}})
    assert session.communicate()[2] == 0
    assert zone.side.runtime.processes[-1].user.additional_gids == [4]
    with pytest.raises(RemoteError) as error:
        link.resize("w", 24, 80)
    assert error.value.code == "invalid-argument"
    link.close_stdin("w")   # no stdin asked for: nothing to close, not an error
    with pytest.raises(BackendError, match="give a command"):
        link.exec(container="w")


def test_disks_through_the_link(zone: Zone) -> None:
    image = b"rootfs" * 4096
    zone.side.add_disk_device("vdx", "r-abc", image)
    attached = zone.link.attach_disk("img", sha256="sha256:" + hashlib.sha256(image).hexdigest(), size=len(image),
                                     serial="r-abc", owner_shift=65536)
    assert attached == {"name": "img", "device": str(zone.side.tmp / "dev" / "vdx")}
    zone.link.detach_disk("img")
    with pytest.raises(RemoteError) as error:
        zone.link.attach_disk("img2", sha256="sha256:" + "1" * 64, size=1, serial="absent", wait=0.1)
    assert error.value.code == "not-found" and "absent" in error.value.remote_message
