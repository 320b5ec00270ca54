"""PID 1 fails closed and hides nothing (issue 10 section 4): a container never starts with weaker settings
than asked, and a failure while cleaning up is reported (console line + IDM zone.error) with PID 1 going on."""

from __future__ import annotations

import contextlib
import os
import signal
import sys

import pytest
from zoneinit_harness import Harness

from styrolite.errors import ContainerError
from zoneinit.config.plan import ContainerPlan
from zoneinit.containers.bundle import build_config
from zoneinit.errors import ZoneInitError


@pytest.fixture
def zone(tmp_path):
    harness = Harness(tmp_path)
    harness.call("hello", {"events": True})
    yield harness
    for pid in harness.runtime.pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    harness.runtime.record_error = None
    harness.pump(lambda: not harness.containers.running())
    harness.close()


def _create(zone, cid, args):
    return zone.call("container.create", {"id": cid, "image": "root0", "args": args, "start": True})


def test_without_the_hardened_defaults_a_container_fails_instead_of_starting_weaker(zone, monkeypatch):
    monkeypatch.setitem(sys.modules, "styrolite.spec.defaults", None)  # a build without them
    with pytest.raises(ZoneInitError, match="refusing to start a container with weaker settings"):
        build_config(ContainerPlan(id="app", args=["true"]))
    with pytest.raises(Exception) as e:
        _create(zone, "app", ["true"])
    assert "refusing to start a container with weaker settings" in str(e.value)
    event = zone.event("container.exit")
    assert event.payload["id"] == "app" and event.payload["exit_code"] == 125
    assert "hardened default config" in event.payload["error"]
    assert zone.runtime.calls == []  # never handed to the runtime


def test_a_runtime_that_cannot_delete_is_reported_and_the_zone_goes_on(zone):
    _create(zone, "box", ["sleep", "100"])
    zone.runtime.delete_error = ContainerError("delete container 'box': cgroup busy")
    assert zone.call("container.delete", {"id": "box", "force": True}) == {"id": "box", "deleted": True}
    error = zone.event("zone.error")
    assert "delete container box from the runtime" in error.payload["message"]
    assert "cgroup busy" in error.payload["message"]
    assert zone.call("ping")["pong"]


def test_a_bundle_that_cannot_be_removed_is_reported(zone):
    _create(zone, "done", ["true"])
    zone.call("container.wait", {"id": "done"})
    zone.cleanup_error = ZoneInitError("clean up container done: remove /run/zone/bundles/done: EBUSY")
    zone.call("container.delete", {"id": "done"})
    assert "remove the bundle of container done" in zone.event("zone.error").payload["message"]
    assert zone.call("container.list")["containers"] == []


def test_an_exit_the_runtime_could_not_record_is_reported_and_still_delivered(zone):
    zone.runtime.record_error = ContainerError("record the exit (7) of container 'job'")
    _create(zone, "job", ["sh", "-c", "exit 7"])
    exit_event = zone.event("container.exit")
    assert exit_event.payload == {"id": "job", "exit_code": 7, "main": False}
    assert "record the exit (7) of container 'job'" in zone.event("zone.error").payload["message"]


def test_remove_bundle_names_what_it_could_not_undo(tmp_path):
    from styrolite.syscalls.fake import RecordingSyscalls
    from zoneinit.containers.bundle import remove_bundle
    from zoneinit.mounts.table import MountTable

    bundles, scratch = tmp_path / "bundles", tmp_path / "scratch"
    (bundles / "c1" / "rootfs").mkdir(parents=True)
    (scratch / "c1" / "upper").mkdir(parents=True)
    remove_bundle("c1", MountTable(RecordingSyscalls()), bundles=str(bundles), scratch=str(scratch))
    assert not (bundles / "c1").exists() and not (scratch / "c1").exists()
    remove_bundle("c1", MountTable(RecordingSyscalls()), bundles=str(bundles), scratch=str(scratch))  # gone: fine


def test_remove_bundle_never_deletes_through_a_live_mount_and_says_so(tmp_path, monkeypatch):
    from styrolite.syscalls.fake import RecordingSyscalls
    from zoneinit.containers.bundle import remove_bundle
    from zoneinit.mounts.table import MountTable

    bundles = tmp_path / "bundles"
    (bundles / "c1" / "rootfs" / "etc").mkdir(parents=True)
    monkeypatch.setattr(os.path, "ismount", lambda path: path.endswith("/rootfs"))
    with pytest.raises(ZoneInitError, match="rootfs is still mounted: its files are kept"):
        remove_bundle("c1", MountTable(RecordingSyscalls()), bundles=str(bundles), scratch=str(tmp_path / "s"))
    assert (bundles / "c1" / "rootfs" / "etc").is_dir()
