"""The zone backend: the Task service's ``ZoneBackend`` over a pod zone booted with ``host`` and driven over IDM.

One instance per shim, i.e. per pod. How each call maps (docs/kubernetes.md has the whole table):

| backend call | on the host | over IDM (one ZoneLink for the zone's life) |
| --- | --- | --- |
| start_zone | pod NIC (tap + tc), config disk, QEMU (``shim.zone.boot``) | wait for ``zone.ready`` |
| create_container | mounts classified, rootfs image + hot-plug | ``disk.attach``, ``container.create``, ``.attach`` |
| start_container | | ``container.start`` |
| signal | | ``container.signal`` / ``exec.signal`` |
| exec_process / start_exec | | ``exec`` (a stream: stdin, stdout, stderr, the exit code on close) |
| resize_pty | | ``container.resize`` / ``exec.resize`` |
| stats | | ``container.stats`` (else ``zone.metrics``); the sandbox: ``zone.metrics`` |
| pause / resume / update | | ``container.pause`` / ``container.resume`` / ``container.update`` |
| delete_container | disk unplugged when its last user goes | ``container.delete``, ``disk.detach`` |
| stop_zone | QEMU killed after the grace; tc filters and state removed | ``zone.shutdown`` |

What the zone reports on its own arrives as IDM events on one thread: ``container.exit`` -> the process's
exit (durable events may come twice: de-duplicated by sequence number), ``container.oom`` -> TaskOOM. An
exec's exit is its stream's end. When QEMU exits or the link breaks, every process still running ends
(``zone_stopped``), with the console's last line as the reason in the shim's log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from host.link import ContainerAttach
from idm.errors import IdmError
from shim.ttrpc.status import FailedPrecondition, NotFound, Unavailable
from shim.zone import stats as zone_stats_module
from shim.zone.boot import PodZone, ZoneRecord, cleanup_zone
from shim.zone.config import ConfigError, ShimConfig, load
from shim.zone.disks import PodDisks
from shim.zone.requests import guarded
from shim.zone.sandbox import pod_sandbox
from shim.zone.streams import PendingStream
from shim.zone.translate import container_request, exec_request
from shim.zone.volumes import classify
from shim.zone_backend import BackendEvents, ContainerSpec, ContainerStats, ExecSpec, ProcessStreams, SandboxSpec

log = logging.getLogger("shim.zone")

CREATE_TIMEOUT = 120.0


@dataclass
class ZoneContainer:
    id: str
    disk: str
    attach: ContainerAttach
    copy_back: list[tuple[str, str]] = field(default_factory=list)
    exited: bool = False


@dataclass
class ZoneExec:
    container_id: str
    exec_id: str
    spec: ExecSpec
    stream: PendingStream
    session: Any = None   # idm.client.ExecSession once started


class PodZoneBackend:
    """``shim.zone_backend.ZoneBackend`` for one pod zone under QEMU."""

    def __init__(self, config: ShimConfig | None = None) -> None:
        self._config = config
        self._lock = threading.RLock()
        self.zone: PodZone | None = None
        self.disks: PodDisks | None = None
        self.events: BackendEvents | None = None
        self.containers: dict[str, ZoneContainer] = {}
        self.execs: dict[tuple[str, str], ZoneExec] = {}
        self.sandbox_id = ""
        self._seen_events: set[int] = set()
        self._stopping = False
        self._gone: str | None = None

    # --- the zone -----------------------------------------------------------------------------------------
    def _zone(self) -> PodZone:
        zone = self.zone
        if zone is None:
            raise Unavailable("the pod has no zone (its sandbox was not created by this shim)")
        if self._gone is not None:
            raise Unavailable(f"the pod's zone has stopped: {self._gone}")
        return zone

    def start_zone(self, sandbox: SandboxSpec, events: BackendEvents) -> int:
        try:
            config = self._config or load(sandbox.config_path)
        except ConfigError as e:
            raise FailedPrecondition(str(e)) from e
        pod = pod_sandbox(sandbox)
        log.info("booting zone %s for pod %s/%s (%s; %d MiB, %d vcpu)", pod.zone_name, pod.namespace, pod.name,
                 config.source, config.memory_mib, config.vcpus)
        zone = PodZone.boot(config, pod)
        self._config, self.zone, self.events, self.sandbox_id = config, zone, events, sandbox.sandbox_id
        _timing("sandbox", sandbox.sandbox_id, zone.timings)
        cache = Path(config.rootfs_cache) if config.rootfs_cache else None
        self.disks = PodDisks(zone.link, zone.backend, owner_shift=None if config.user_namespace else 0,
                              cache_dir=cache)
        zone.record.write(sandbox.bundle)
        threading.Thread(target=self._event_loop, name="zone-events", daemon=True).start()
        threading.Thread(target=self._watch_vmm, name="zone-vmm", daemon=True).start()
        return zone.pid

    def stop_zone(self, timeout: float) -> None:
        with self._lock:
            zone, self._stopping = self.zone, True
        if zone is None:
            return
        grace = min(timeout, self._config.stop_timeout) if self._config is not None else timeout
        how = zone.stop(grace)
        log.info("zone %s stopped: %s", zone.zone.name, how)
        if self.disks is not None:
            self.disks.forget()

    def _event_loop(self) -> None:
        zone = self.zone
        assert zone is not None and self.events is not None
        while True:
            try:
                event = zone.link.next_event(None)
            except IdmError as e:
                log.warning("zone events: %s", e)
                break
            if event is None:
                break
            if event.seq in self._seen_events:
                continue   # durable events are resent to a new subscriber (at least once)
            self._seen_events.add(event.seq)
            payload = event.payload
            if event.type == "container.exit":
                self._container_exited(str(payload.get("id")), payload)
            elif event.type == "container.oom":
                self.events.oom(str(payload.get("id")))
            elif event.type in ("zone.error", "zone.warning"):
                log.warning("zone %s: %s", event.type, payload.get("message"))
            elif event.type == "zone.shutdown":
                log.info("zone shutting down: %s", payload.get("reason"))
        if not self._stopping:
            self._zone_gone(f"the IDM link to the zone closed; console: {zone.console_reason()}")

    def _watch_vmm(self) -> None:
        zone = self.zone
        assert zone is not None
        zone.wait()
        if not self._stopping:
            self._zone_gone(f"the zone's QEMU (pid {zone.pid}) exited with {zone.process.returncode}; console: "
                            f"{zone.console_reason()}")

    def _zone_gone(self, reason: str) -> None:
        with self._lock:
            if self._gone is not None:
                return
            self._gone = reason
        log.warning("%s", reason)
        if self.disks is not None:
            self.disks.forget()
        for record in list(self.execs.values()):
            record.stream.fail(reason)
        if self.events is not None:
            self.events.zone_stopped(reason)

    def _container_exited(self, container_id: str, payload: dict[str, Any]) -> None:
        with self._lock:
            container = self.containers.get(container_id)
        if container is None or container.exited:
            return
        container.exited = True
        code = payload.get("exit_code")
        if not isinstance(code, int):
            code = 255
            log.warning("container %s ended without an exit code: %s", container_id, payload.get("error"))
        elif payload.get("error"):
            log.warning("container %s: %s", container_id, payload["error"])
        self._copy_back(container)
        assert self.events is not None
        self.events.process_exited(container_id, "", code, datetime.now(UTC))

    def _copy_back(self, container: ZoneContainer) -> None:
        """Files the container wrote for the host (the termination log) back to their host paths."""
        zone = self.zone
        for path, host_path in container.copy_back:
            try:
                data = zone.link.read_file(container.id, path) if zone is not None else b""
                with open(host_path, "wb") as f:
                    f.write(data)
            except (IdmError, OSError) as e:
                log.warning("container %s: copying %s back to %s: %s", container.id, path, host_path, e)

    # --- containers ---------------------------------------------------------------------------------------
    def create_container(self, spec: ContainerSpec) -> tuple[int, ProcessStreams]:
        zone = self._zone()
        assert self.disks is not None
        delivery = classify(spec.container_id, spec.spec)
        started = time.monotonic()
        disk, attach_timing = self.disks.acquire(spec.rootfs)
        try:
            request = container_request(spec, disk, delivery)
            created = time.monotonic()
            summary = guarded(f"create container {spec.container_id}", lambda: zone.link.create(
                request["container"], oci=request["oci"], volumes=request.get("volumes"), attach=True,
                timeout=CREATE_TIMEOUT))
            # the container's own stdio, kept by PID 1 from its first byte, bridged before it starts
            attach = guarded(f"attach to {spec.container_id}", lambda: zone.link.attach(spec.container_id))
        except BaseException:
            with contextlib.suppress(Exception):
                zone.link.delete(spec.container_id, force=True)
            with contextlib.suppress(Exception):
                self.disks.release(disk)
            raise
        _timing("container", spec.container_id, {
            "rootfs_image": attach_timing.image_seconds, "rootfs_cached": float(attach_timing.cached),
            "hotplug": attach_timing.hotplug_seconds, "idm_create": time.monotonic() - created,
            "create_total": time.monotonic() - started}, disk=disk)
        with self._lock:
            self.containers[spec.container_id] = ZoneContainer(spec.container_id, disk, attach,
                                                               list(delivery.copy_back))
        zone.record.write(spec.bundle)
        streams = ProcessStreams(stdin=attach.stdin if spec.stdin else None, stdout=attach.stdout,
                                 stderr=attach.stderr)
        pid = summary.get("pid")
        return pid if isinstance(pid, int) else 0, streams

    def start_container(self, container_id: str) -> int:
        zone = self._zone()
        started = time.monotonic()
        summary = guarded(f"start {container_id}", lambda: zone.link.start(container_id))
        _timing("container", container_id, {"idm_start": time.monotonic() - started})
        pid = summary.get("pid")
        return pid if isinstance(pid, int) else 0

    def delete_container(self, container_id: str) -> None:
        with self._lock:
            container = self.containers.pop(container_id, None)
        if container is None:
            return
        zone = self.zone
        alive = zone is not None and self._gone is None
        if zone is not None and alive:
            guarded(f"delete {container_id}", lambda: zone.link.delete(container_id, force=True))
        if self.disks is not None:
            self.disks.release(container.disk, zone_alive=alive)

    # --- execs --------------------------------------------------------------------------------------------
    def exec_process(self, spec: ExecSpec) -> ProcessStreams:
        self._zone()
        with self._lock:
            if spec.container_id not in self.containers:
                raise NotFound(f"container {spec.container_id} is not in this zone")
            pending = PendingStream()
            self.execs[(spec.container_id, spec.exec_id)] = ZoneExec(spec.container_id, spec.exec_id, spec, pending)
        return ProcessStreams(stdin=pending.sink() if spec.stdin else None, stdout=pending.source("stdout"),
                              stderr=None if spec.terminal else pending.source("stderr"))

    def start_exec(self, container_id: str, exec_id: str) -> int:
        zone = self._zone()
        record = self._exec(container_id, exec_id)
        request = exec_request(record.spec)
        try:
            session = guarded(f"exec {container_id}/{exec_id}", lambda: zone.link.exec(
                container=container_id, process=request["process"], tty=request["tty"], rows=request.get("rows"),
                cols=request.get("cols")))
        except BaseException as e:
            record.stream.fail(str(e))
            raise
        record.session = session
        if not record.spec.stdin:
            record.stream.close_input("stdin")
        record.stream.set(session.stream)
        threading.Thread(target=self._wait_exec, args=(record,), name=f"exec-{exec_id}", daemon=True).start()
        pid = session.info.get("pid")
        return pid if isinstance(pid, int) else 0

    def _wait_exec(self, record: ZoneExec) -> None:
        try:
            code = record.session.wait(None)
        except IdmError as e:
            if self._gone is None and not self._stopping:
                log.warning("exec %s/%s: %s", record.container_id, record.exec_id, e)
            code = 255 if self._gone is None else 137
        if self.events is not None:
            self.events.process_exited(record.container_id, record.exec_id, code, datetime.now(UTC))

    def _exec(self, container_id: str, exec_id: str) -> ZoneExec:
        with self._lock:
            record = self.execs.get((container_id, exec_id))
        if record is None:
            raise NotFound(f"exec {exec_id} of {container_id} does not exist")
        return record

    def delete_exec(self, container_id: str, exec_id: str) -> None:
        with self._lock:
            record = self.execs.pop((container_id, exec_id), None)
        if record is not None and record.session is None:
            record.stream.fail("deleted before it started")

    # --- signals, terminals ----------------------------------------------------------------------------------
    def signal(self, container_id: str, exec_id: str, signal: int, all: bool) -> None:
        zone = self._zone()
        if exec_id:
            record = self._exec(container_id, exec_id)
            if record.session is None:
                raise NotFound(f"exec {exec_id} has not started")
            guarded(f"signal {container_id}/{exec_id}", lambda: record.session.signal(signal))
            return
        guarded(f"signal {container_id}", lambda: zone.link.signal(container_id, signal, all_processes=all))

    def resize_pty(self, container_id: str, exec_id: str, width: int, height: int) -> None:
        zone = self._zone()
        if exec_id:
            record = self._exec(container_id, exec_id)
            if record.session is not None:
                guarded(f"resize {container_id}/{exec_id}", lambda: record.session.resize(height, width))
            return
        guarded(f"resize {container_id}", lambda: zone.link.resize(container_id, height, width))

    # --- statistics and resources -------------------------------------------------------------------------------
    def stats(self, container_id: str) -> ContainerStats:
        zone = self._zone()
        if container_id == self.sandbox_id or container_id not in self.containers:
            return zone_stats_module.zone_stats(guarded("zone metrics", lambda: zone.link.metrics()))
        if self.containers[container_id].exited:
            raise NotFound(f"container {container_id} has stopped: it has no cgroup to measure")
        return zone_stats_module.container_stats(guarded(f"stats of {container_id}",
                                                         lambda: zone.link.stats(container_id)))

    def pause(self, container_id: str) -> None:
        zone = self._zone()
        guarded(f"pause {container_id}", lambda: zone.link.pause(container_id))

    def resume(self, container_id: str) -> None:
        zone = self._zone()
        guarded(f"resume {container_id}", lambda: zone.link.resume(container_id))

    def update(self, container_id: str, resources: dict[str, Any], annotations: dict[str, str]) -> None:
        zone = self._zone()
        if container_id == self.sandbox_id:
            return   # the pod's own resources: the zone's size is fixed at boot
        guarded(f"update {container_id}", lambda: zone.link.update(container_id, resources))

    # --- after a crash ---------------------------------------------------------------------------------------
    def cleanup_after_crash(self, bundle: str, container_id: str) -> None:
        record = ZoneRecord.read(bundle)
        if record is None:
            return
        cleanup_zone(record)
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(bundle, "zone-state.json"))


def _timing(kind: str, ident: str, values: dict[str, float], **extra: str) -> None:
    """One machine-readable log line per step (bench/pod_start.py reads them from containerd's log)."""
    fields = " ".join([*(f"{k}={v:.3f}" for k, v in values.items()), *(f"{k}={v}" for k, v in extra.items())])
    log.info("timing %s=%s %s", kind, ident, fields)


def create() -> PodZoneBackend:
    """The factory ``shim.backends`` calls (``ZONE_SHIM_BACKEND=shim.zone.backend:create`` names it too)."""
    return PodZoneBackend()

