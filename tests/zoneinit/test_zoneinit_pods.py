"""PID 1's answers to a pod's shim, over IDM, with the fork/exec runtime (tests/zone_fakes.py): create from
containerd's OCI config with volumes, attach from the first byte with back-pressure, stdin and its EOF, a
terminal's size, pause/resume, update, stats, the OOM event, the termination log, exec with an OCI process,
hot-plugged disks verified before use, and refusals that leave nothing behind."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest
from zoneinit_harness import Harness, RemoteError

from idm import messages as m
from zoneinit.mounts import hotplug

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def zone(tmp_path):
    harness = Harness(tmp_path)
    harness.side.root_disk()
    yield harness
    for pid in harness.runtime.pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
    harness.pump(lambda: not harness.containers.running())
    harness.close()


def oci(args: list[str], **process: object) -> dict:
    """containerd 1.6's CRI config.json for runc, minus the host bind mounts (a shim sends those as volumes)."""
    config = copy.deepcopy(json.loads((FIXTURES / "containerd-1.6-cri-app.json").read_text()))
    config["mounts"] = [mount for mount in config["mounts"] if mount["type"] != "bind"]
    config["process"].update(args=args, **process)
    return config


def create(zone, cid, args, *, start=True, stdin=False, **extra):
    return zone.call("container.create", {"container": {"name": cid, "image": "rootfs0", "stdin": stdin},
                                          "oci": oci(args), "start": start, **extra})


def attach(zone, cid):
    reply = zone.call("container.attach", {"id": cid})
    return reply["stream"], reply


def test_attach_gets_the_output_from_the_first_byte_and_feeds_stdin(zone):
    zone.call("hello", {"events": True})
    create(zone, "app", ["sh", "-c", "echo one; echo two >&2; read x; echo got:$x; exit 5"], stdin=True,
           attach=True)
    zone.pump(lambda: zone.containers.get("app").output.total >= 8)   # it wrote before anyone attached
    sid, reply = attach(zone, "app")
    assert reply == {"id": "app", "stream": sid, "window": 1 << 20, "terminal": False, "stdin": True}
    zone.send(m.Message(m.DATA, sid, payload=b"hi\n", channel="stdin"))
    zone.send(m.Message(m.CLOSE, sid, channel="stdin"))
    out, result = zone.stream_until_close(sid)
    assert out == {"stdout": b"one\ngot:hi\n", "stderr": b"two\n"}
    assert result == {"exit_code": 5, "error": None}
    assert zone.event("container.exit").payload["exit_code"] == 5
    assert zone.bundles["app"]["process"]["user"]["additionalGids"] == [2000, 3000]   # containerd's process


def test_unread_output_makes_the_container_wait_and_nothing_is_lost(zone):
    create(zone, "chatty", ["sh", "-c", "head -c 2000000 /dev/zero | tr '\\0' x; echo done >&2"], attach=True)
    container = zone.containers.get("chatty")
    zone.pump(lambda: container.waiting_fds)   # the buffer is full: its pipe is not read any more
    buffered = len(container.attach.pending["stdout"])
    assert container.attach.limit <= buffered <= container.attach.limit + 64 * 1024
    time.sleep(0.3)
    zone.pump_once()
    assert container.status == "running" and len(container.attach.pending["stdout"]) == buffered   # it waits
    sid, _ = attach(zone, "chatty")
    out, result = zone.stream_until_close(sid)
    assert out["stdout"] == b"x" * 2_000_000 and out["stderr"] == b"done\n" and result["exit_code"] == 0


def test_attach_later_without_attach_starts_now_and_a_second_attach_is_refused(zone):
    zone.call("container.create", {"container": {"name": "late", "image": "root0",
                                                 "args": ["sh", "-c", "echo early; read x; echo late"],
                                                 "stdin": True}, "start": True})
    zone.pump(lambda: zone.containers.get("late").output.total >= 6)
    sid, reply = attach(zone, "late")
    assert reply["stdin"] is True
    with pytest.raises(RemoteError) as error:
        attach(zone, "late")
    assert error.value.code == "invalid-argument" and "already has an attached stream" in str(error.value)
    zone.call("container.close_stdin", {"id": "late"})
    out, result = zone.stream_until_close(sid)
    assert out == {"stdout": b"late\n"} and result["exit_code"] == 0   # "early" was before the attach


def test_a_terminal_gets_its_size_and_stdin(zone):
    zone.call("container.create", {"container": {"name": "tty", "image": "root0", "terminal": True, "stdin": True,
                                                 "args": ["sh", "-c", "read x; stty size; echo got:$x"]},
                                   "attach": True})
    assert zone.call("container.resize", {"id": "tty", "rows": 30, "cols": 100}) == {"id": "tty", "rows": 30,
                                                                                       "cols": 100}
    sid, reply = attach(zone, "tty")
    assert reply["terminal"] is True and reply["stdin"] is True
    zone.call("container.start", {"id": "tty"})
    zone.send(m.Message(m.DATA, sid, payload=b"hi\n", channel="stdin"))
    out, result = zone.stream_until_close(sid)
    assert result["exit_code"] == 0
    assert b"30 100" in out["stdout"] and b"got:hi" in out["stdout"] and set(out) == {"stdout"}
    with pytest.raises(RemoteError) as error:
        zone.call("container.resize", {"id": "tty", "rows": 0, "cols": 1})
    assert error.value.code == "invalid-argument"


def test_resize_without_a_terminal_is_refused(zone):
    create(zone, "plain", ["sleep", "30"])
    with pytest.raises(RemoteError) as error:
        zone.call("container.resize", {"id": "plain", "rows": 10, "cols": 10})
    assert error.value.code == "invalid-argument" and "no terminal" in str(error.value)


def test_pause_resume_update_stats(zone):
    create(zone, "worker", ["sleep", "30"])
    assert zone.call("container.pause", {"id": "worker"})["status"] == "paused"
    with pytest.raises(RemoteError) as error:
        zone.call("container.pause", {"id": "worker"})
    assert error.value.code == "invalid-argument" and "paused" in str(error.value)
    assert zone.call("container.resume", {"id": "worker"})["status"] == "running"
    assert zone.call("container.update", {"id": "worker", "resources": {"memory": {"limit": 64 << 20},
                                                                        "pids": {"limit": 32}}})["id"] == "worker"
    update = next(call for call in zone.runtime.calls if call[0] == "update")
    assert update[2].memory.limit == 64 << 20 and update[2].pids.limit == 32
    with pytest.raises(RemoteError) as error:
        zone.call("container.update", {"id": "worker", "resources": {"memory": {"limit": "lots"}}})
    assert error.value.code == "invalid-argument" and "resources.memory.limit" in str(error.value)
    stats = zone.call("container.stats", {"id": "worker"})
    assert stats["memory"]["working_set"] == 16384 - 1024 and stats["memory"]["anon"] == 4096
    assert stats["id"] == "worker"
    zone.call("container.signal", {"id": "worker", "signal": "KILL"})
    zone.call("container.wait", {"id": "worker"})
    with pytest.raises(RemoteError) as error:
        zone.call("container.stats", {"id": "worker"})
    assert error.value.code == "invalid-argument" and "stopped" in str(error.value)


def test_an_oom_kill_is_an_event_before_the_exit(zone):
    zone.call("hello", {"events": True})
    create(zone, "hog", ["sleep", "30"])
    events = zone.runtime.cgroups / "hog" / "memory.events"
    events.write_text(events.read_text().replace("oom_kill 0", "oom_kill 1"))
    zone.call("container.signal", {"id": "hog", "signal": "KILL"})
    oom = zone.event("container.oom")
    exited = zone.event("container.exit")
    assert oom.payload == {"id": "hog", "oom_kills": 1} and oom.id < exited.id
    assert exited.payload["exit_code"] == 137
    assert oom.id in [msg.id for msg in zone.server.unacked_events()]   # durable, like container.exit


def test_the_termination_log_is_read_back_after_the_exit(zone):
    volumes = [{"kind": "files", "destination": "/dev/termination-log", "readonly": False, "files": [{"data": b""}]},
               {"kind": "files", "destination": "/etc/config", "files": [{"path": "greeting", "data": b"hi"}]}]
    create(zone, "job", ["true"], volumes=volumes)
    zone.call("container.wait", {"id": "job"})
    written = zone.tmp / "pod/files/job/0"
    written.write_bytes(b"it went wrong\n")   # what the container wrote through its bind mount
    assert zone.call("container.read_file", {"id": "job", "path": "/dev/termination-log"})["data"] == \
        b"it went wrong\n"
    assert zone.call("container.read_file", {"id": "job", "path": "/etc/config/greeting", "max": 1})["data"] == b"h"
    os.symlink("/etc/passwd", zone.tmp / "pod/files/job/1/escape")
    for path, code in (("/etc/config/escape", "invalid-argument"), ("/etc/shadow", "not-found"),
                       ("/etc/config", "invalid-argument")):
        with pytest.raises(RemoteError) as error:
            zone.call("container.read_file", {"id": "job", "path": path})
        assert error.value.code == code, (path, error.value)
    zone.call("container.delete", {"id": "job"})
    assert not (zone.tmp / "pod/files/job").exists()


def test_exec_takes_an_oci_process_and_additional_gids(zone):
    create(zone, "box", ["sleep", "30"])
    process = {"args": ["sh", "-c", "echo $FROM; exit 4"], "env": ["PATH=/usr/bin:/bin", "FROM=containerd"],
               "cwd": "/tmp", "user": {"uid": 1000, "gid": 3000, "additionalGids": [2000]}, "terminal": False,
               "selinuxLabel": "system_u:system_r:container_t"}
    reply = zone.call("exec", {"container": "box", "process": process})
    out, result = zone.stream_until_close(reply["stream"])
    assert out.get("stdout") == b"containerd\n" and result == {"exit_code": 4}
    ran = zone.runtime.processes[-1]
    assert (ran.user.uid, ran.user.gid, ran.user.additional_gids, ran.cwd) == (1000, 3000, [2000], "/tmp")
    assert ran.selinux_label is None
    reply = zone.call("exec", {"container": "box", "command": ["true"],
                               "user": {"uid": 5, "gid": 6, "additional_gids": [7, 8]}})
    zone.stream_until_close(reply["stream"])
    assert zone.runtime.processes[-1].user.additional_gids == [7, 8]


@pytest.fixture
def sysfs(zone, monkeypatch):
    monkeypatch.setattr(hotplug, "SYS_BLOCK", str(zone.tmp / "sys"))
    monkeypatch.setattr(hotplug, "DEV", str(zone.tmp / "dev"))
    return zone


def test_a_hot_plugged_disk_is_found_verified_and_detached(sysfs):
    zone = sysfs
    image = b"erofs image bytes" * 1000
    digest = "sha256:" + hashlib.sha256(image).hexdigest()
    request = zone.request("disk.attach", {"name": "img1", "serial": "r-img1", "sha256": digest, "size": len(image),
                                           "fstype": "erofs", "owner_shift": 65536})
    time.sleep(0.1)
    zone.pump_once()
    assert not any(msg.id == request for msg in zone.inbox)   # still waiting for the device
    device = zone.side.add_disk_device("vdz", "r-img1", image)
    assert zone.reply_to(request) == {"name": "img1", "device": str(device)}
    zone.pump(lambda: "img1" in zone.side.disks.verified)   # hashed in a helper from the attach on
    zone.call("container.create", {"container": {"name": "on-img1", "image": "img1"},
                                   "oci": oci(["sleep", "30"]), "start": True})
    with pytest.raises(RemoteError) as error:
        zone.call("disk.detach", {"name": "img1"})
    assert error.value.code == "invalid-argument" and "on-img1" in str(error.value)
    zone.call("container.signal", {"id": "on-img1", "signal": "KILL"})
    zone.call("container.wait", {"id": "on-img1"})
    zone.call("container.delete", {"id": "on-img1"})
    assert zone.call("disk.detach", {"name": "img1"}) == {"name": "img1", "detached": True}
    with pytest.raises(RemoteError) as error:
        zone.call("disk.detach", {"name": "img1"})
    assert error.value.code == "not-found"


def test_a_disk_that_does_not_match_its_digest_is_never_used(sysfs):
    zone = sysfs
    zone.side.add_disk_device("vdy", "r-bad", b"tampered")
    zone.call("disk.attach", {"name": "bad", "serial": "r-bad", "sha256": "sha256:" + "0" * 64, "size": 8})
    with pytest.raises(RemoteError) as error:
        zone.call("container.create", {"container": {"name": "c", "image": "bad"}, "oci": oci(["true"])})
    assert "disk bad" in str(error.value) and "refusing to mount it" in str(error.value)
    assert zone.call("container.list")["containers"] == []


@pytest.mark.parametrize(("payload", "expected"), [
    ({"serial": "never"}, "no disk with serial 'never' appeared within 0.2 s"),
    ({}, "exactly one of 'serial'"),
    ({"serial": "s", "device": "/dev/vdq"}, "exactly one of 'serial'"),
    ({"device": "/etc/passwd"}, "not a /dev/<name> path"),
    ({"serial": "x" * 21}, "1-20 printable"),
    ({"serial": "s", "role": "addons"}, "only root images"),
    ({"serial": "s", "owner_shift": 1000}, "multiple of 65536"),
    ({"serial": "s", "fstype": "vfat"}, "fstype 'vfat'"),
    ({"serial": "s", "sha256": "md5:x"}, "'sha256' must be"),
    ({"serial": "s", "name": "rootfs0"}, "already attached"),
])
def test_bad_disk_attach_requests_are_refused(sysfs, payload, expected):
    request = {"name": "d1", "sha256": "sha256:" + "a" * 64, "size": 4096, "timeout": 0.2, **payload}
    with pytest.raises(RemoteError) as error:
        sysfs.call("disk.attach", {k: v for k, v in request.items() if v is not None})
    assert expected in str(error.value)


def test_refusals_leave_nothing_behind(zone):
    bad = oci(["true"])
    bad["mounts"].append({"destination": "/host", "type": "bind", "source": "/var/lib/secret", "options": ["rbind"]})
    for payload, expected in (
        ({"container": {"name": "x", "image": "rootfs0"}, "oci": bad}, "/var/lib/secret"),
        ({"container": {"name": "x", "image": "nodisk"}, "oci": oci(["true"])}, "'nodisk' is not an attached root"),
        ({"container": {"name": "x", "image": "rootfs0", "args": ["true"]}, "oci": oci(["true"])},
         "$.container.args: given by $.oci"),
        ({"container": {"name": "x", "image": "rootfs0"}, "oci": oci([])}, "$.oci.process.args"),
        ({"container": {"name": "x", "image": "rootfs0"}, "oci": {**oci(["true"]), "linux": {
            **oci(["true"])["linux"], "sysctl": {"vm.overcommit_memory": "1"}}}}, "not namespaced"),
    ):
        with pytest.raises(RemoteError) as error:
            zone.call("container.create", payload)
        assert error.value.code == "invalid-argument" and expected in str(error.value), error.value
    assert zone.call("container.list")["containers"] == [] and zone.runtime.calls == []
    assert not (zone.tmp / "bundles").exists()


def test_a_dead_pid_namespace_holder_refuses_sharing_containers_by_name(zone):
    """The pod's pid namespace was made and its holder died (any exit PID 1 reaps, a container's or not, is
    no container's exit): a container sharing it is refused before anything of it exists, never run in a pid
    namespace of its own; one with its own pid namespace still runs."""
    create(zone, "steady", ["sleep", "30"])
    holder = os.fork()
    if holder == 0:  # pragma: no cover - the "holder"
        os._exit(0)
    zone.pump(lambda: holder not in zone.runtime.pids.values() and not os.path.exists(f"/proc/{holder}"))
    zone.side.pod.pid_holder = holder
    assert not zone.take(lambda msg: msg.type == "container.exit")      # the stray exit stopped nothing
    assert zone.containers.get("steady").status == "running"
    shared = oci(["true"])
    shared["linux"]["namespaces"][0]["path"] = "/proc/20480/ns/pid"    # the sandbox's: CRI's POD mode
    with pytest.raises(RemoteError) as error:
        zone.call("container.create", {"container": {"name": "joiner", "image": "rootfs0"}, "oci": shared})
    assert error.value.code == "invalid-argument"
    assert f"shared pid namespace (shareProcessNamespace) is gone: its pid 1, the holder process {holder}, has " \
           "exited" in str(error.value)
    assert [c["id"] for c in zone.call("container.list")["containers"]] == ["steady"]
    assert not (zone.tmp / "bundles" / "joiner").exists()
    create(zone, "own", ["true"])                                        # its own pid namespace: unaffected
    zone.call("container.signal", {"id": "steady", "signal": "KILL"})
