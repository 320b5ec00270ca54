"""The host's IDM link to one zone: a typed client of the zone's requests (docs/idm.md section 7).

``ZoneLink.open(zone)`` connects through the zone's backend (QEMU's virtio-serial socket, a Xen vchan) and
says hello; the CLI opens one per command, a long-running caller (a containerd shim) keeps one per zone.
Every request has a method with a typed result; a request the zone refuses raises ``idm.errors.RemoteError``
(its ``code`` says why: ``not-found``, ``invalid-argument``...), a link that breaks ``ConnectionClosed``.

One link, shared: QEMU's chardev socket takes one client at a time. While a foreground ``zonehost run``
holds the link to stream output, it lends it (``share``) to other CLI calls on ``<zone>/ctl.sock``
(``host.callproxy``), and ``open`` goes through that; streams and events need the link itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, cast

from host.errors import BackendError
from host.linktypes import (
    AttachedDisk,
    AttachInfo,
    BootPhase,
    BootTimeline,
    ContainerDefinition,
    ContainerExit,
    ContainerLogs,
    ContainerStats,
    ContainerSummary,
    Volume,
    VolumeFile,
    ZoneInfo,
    ZoneMetrics,
)
from host.state import ZoneDir
from idm.client import ClientStream, ExecSession, IdmClient, StreamReader, StreamWriter
from idm.errors import IdmError, IdmTimeout
from idm.streams import DEFAULT_WINDOW

__all__ = ["AttachInfo", "AttachedDisk", "BootPhase", "BootTimeline", "ContainerAttach", "ContainerDefinition",
           "ContainerExit", "ContainerLogs", "ContainerStats", "ContainerSummary", "LogStream", "Volume",
           "VolumeFile", "ZoneEvent", "ZoneInfo", "ZoneLink", "ZoneMetrics"]

CLIENT_NAME = "zonehost"


@dataclass(frozen=True)
class ZoneEvent:
    seq: int
    type: str                     # container.exit, zone.ready, zone.error...
    payload: dict[str, object]    # docs/idm.md section 6


@dataclass
class LogStream:
    """A followed container output: ``(channel, bytes)`` chunks until the container stops, then ``result``."""

    stream: ClientStream

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        while (item := self.stream.read()) is not None:
            yield item

    def result(self, timeout: float | None = 30.0) -> dict[str, object]:
        """``{exit_code, dropped, error}`` from the zone's close of the stream."""
        result = self.stream.wait(timeout)
        return result if isinstance(result, dict) else {}


@dataclass
class ContainerAttach:
    """A container's own stdio (``container.attach``), for threads: ``stdout``/``stderr`` are byte sources
    (``read(n)``, ``b""`` at the end), ``stdin`` a byte sink (``write``, ``close`` = EOF) when the container
    was created with ``stdin``; with a terminal there is no ``stderr``. ``wait`` gives the container's exit."""

    stream: ClientStream
    info: AttachInfo
    stdout: StreamReader
    stderr: StreamReader | None
    stdin: StreamWriter | None

    @property
    def terminal(self) -> bool:
        return self.info["terminal"]

    def wait(self, timeout: float | None = None) -> ContainerExit:
        """``{exit_code, error}`` once the container has stopped and all it wrote was read."""
        result = self.stream.wait(timeout)
        result = result if isinstance(result, dict) else {}
        return cast(ContainerExit, {"id": self.info["id"], "exit_code": result.get("exit_code"),
                                    "status": "stopped", "error": result.get("error")})

    def detach(self) -> None:
        """End this attach; the container runs on and keeps its output for the next one."""
        self.stream.cancel()


class Caller(Protocol):
    """What plain requests need: the IDM client, or a call proxy of a link held elsewhere."""

    def call(self, type_: str, payload: Any = None, timeout: float | None = 30.0) -> Any: ...

    def close(self) -> None: ...


class ZoneLink:
    """One IDM link to one zone. Use ``ZoneLink.open(zone)``; close it (or use it as a context manager)."""

    def __init__(self, name: str, caller: Caller, client: IdmClient | None, hello: ZoneInfo) -> None:
        self.name = name
        self._caller = caller
        self._client = client   # None when borrowed through a call proxy: no streams, no events
        self.hello = hello

    @classmethod
    def open(cls, zone: ZoneDir, *, timeout: float = 30.0, events: bool = True) -> ZoneLink:
        """Connect to ``zone``'s PID 1 and say hello, waiting up to ``timeout`` for it to answer (it may still
        be booting). BackendError if it does not."""
        from host.backends import backend_for
        from host.callproxy import proxy_for

        proxy = proxy_for(zone.control_socket)   # a foreground `zonehost run` holds the link: go through it
        if proxy is not None:
            return cls(zone.name, proxy, None, {})
        deadline = time.monotonic() + timeout
        try:
            transport = backend_for(zone).connect(timeout)
            client = IdmClient(transport, events=events, name=CLIENT_NAME,
                               timeout=max(deadline - time.monotonic(), 1.0))
        except IdmError as e:
            raise BackendError(f"IDM to zone {zone.name!r}") from e
        return cls(zone.name, client, client, cast(ZoneInfo, client.info))

    # --- the zone ---------------------------------------------------------------------------------------
    def info(self, timeout: float | None = 30.0) -> ZoneInfo:
        return cast(ZoneInfo, self._map("zone.info", {}, timeout))

    def metrics(self, timeout: float | None = 30.0) -> ZoneMetrics:
        return cast(ZoneMetrics, self._map("zone.metrics", {}, timeout))

    def shutdown(self, reason: str, *, reboot: bool = False, timeout: float | None = 30.0) -> None:
        """The zone stops its containers and powers off (or reboots); the ``zone.shutdown`` event follows."""
        self._map("zone.reboot" if reboot else "zone.shutdown", {"reason": reason}, timeout)

    # --- containers ---------------------------------------------------------------------------------------
    def containers(self, timeout: float | None = 30.0) -> list[ContainerSummary]:
        reply = self._map("container.list", {}, timeout)
        containers = reply.get("containers")
        return cast(list[ContainerSummary], containers if isinstance(containers, list) else [])

    def create(self, definition: ContainerDefinition, *, start: bool = False, oci: dict[str, Any] | None = None,
               volumes: list[Volume] | None = None, attach: bool = False,
               timeout: float | None = 120.0) -> ContainerSummary:
        """Create a container (``start``: and start it). A pod's container adds containerd's OCI config (``oci``:
        merged under the zone's policy, docs/pods-contract.md), its ``volumes``, and ``attach`` (its output is
        kept from the first byte for ``attach``)."""
        payload: dict[str, object] = {"container": dict(definition), "start": start}
        if oci is not None:
            payload["oci"] = oci
        if volumes:
            payload["volumes"] = [dict(v) for v in volumes]
        if attach:
            payload["attach"] = True
        return cast(ContainerSummary, self._map("container.create", payload, timeout))

    def start(self, container: str, timeout: float | None = 30.0) -> ContainerSummary:
        return cast(ContainerSummary, self._map("container.start", {"id": container}, timeout))

    def signal(self, container: str, signal: int | str = "SIGTERM", *, all_processes: bool = False,
               timeout: float | None = 30.0) -> int:
        """Send ``signal`` (a number or a name) to the container (``all_processes``: each of its processes);
        returns the signal number the zone used."""
        reply = self._map("container.signal", {"id": container, "signal": signal, "all": all_processes}, timeout)
        number = reply.get("signal")
        if not isinstance(number, int):
            raise BackendError(f"container.signal: unexpected reply {reply!r}")
        return number

    def wait(self, container: str, timeout: float | None = None) -> ContainerExit:
        """Block until the container has stopped (or failed)."""
        return cast(ContainerExit, self._map("container.wait", {"id": container}, timeout))

    def delete(self, container: str, *, force: bool = False, timeout: float | None = 30.0) -> None:
        self._map("container.delete", {"id": container, "force": force}, timeout)

    def logs(self, container: str, *, tail: int | None = None, timeout: float | None = 30.0) -> ContainerLogs:
        """The output the zone retains for the container (a bounded ring)."""
        payload: dict[str, object] = {"id": container}
        if tail is not None:
            payload["tail"] = tail
        reply = self._map("container.logs", payload, timeout)
        data = reply.get("data")
        reply["data"] = bytes(data) if isinstance(data, bytes | bytearray) else b""
        return cast(ContainerLogs, reply)

    def follow_logs(self, container: str, timeout: float | None = 30.0) -> LogStream:
        """The retained output, then new output as it comes, until the container stops."""
        stream, _info = self._streaming().open_stream("container.logs", {"id": container, "follow": True},
                                                      timeout=timeout)
        return LogStream(stream)

    def exec(self, command: list[str] | None = None, *, container: str | None = None,
             env: dict[str, str] | None = None, cwd: str | None = None,
             user: dict[str, int | list[int]] | None = None, tty: bool | None = None, rows: int | None = None,
             cols: int | None = None, process: dict[str, Any] | None = None, zone: bool = False) -> ExecSession:
        """Run ``command`` in the container (default: the zone's main one) with its settings, or containerd's
        OCI ``process`` (args, env, cwd, user with additionalGids, terminal, consoleSize); ``user`` may carry
        ``additional_gids``. stdin, output, resize, signal and the exit code go through the returned session
        (``session.stream.reader``/``writer`` for threads; idm.attach wires a terminal).
        ``zone``: a zone-level exec instead, in PID 1's namespaces with the system extensions' tools."""
        if command is None:
            if process is None or not process.get("args"):
                raise BackendError("exec: give a command, or a process with args")
            command = list(process["args"])
        if tty is None:
            tty = bool(process.get("terminal")) if process is not None else False
        return self._streaming().exec(command, container=None if zone else container, env=env, cwd=cwd,
                                      user=user, tty=tty, rows=rows, cols=cols, process=process, zone=zone)

    # --- a pod's containers (docs/pods-contract.md) -----------------------------------------------------------
    def attach_disk(self, name: str, *, sha256: str, size: int, fstype: str = "erofs", serial: str | None = None,
                    device: str | None = None, owner_shift: int = 0, wait: float = 10.0,
                    timeout: float | None = 120.0) -> AttachedDisk:
        """Tell the zone about a disk the backend hot-plugged: found by ``serial`` (QEMU) or ``device`` (Xen),
        waited for up to ``wait`` s, verified against ``sha256`` before its first container uses it."""
        payload: dict[str, object] = {"name": name, "sha256": sha256, "size": size, "fstype": fstype,
                                      "role": "root", "timeout": wait}
        if serial is not None:
            payload["serial"] = serial
        if device is not None:
            payload["device"] = device
        if owner_shift:
            payload["owner_shift"] = owner_shift
        return cast(AttachedDisk, self._map("disk.attach", payload, timeout))

    def detach_disk(self, name: str, timeout: float | None = 30.0) -> None:
        """Unmount it in the zone (refused while a container uses it); then the backend may unplug it."""
        self._map("disk.detach", {"name": name}, timeout)

    def attach(self, container: str, *, window: int = DEFAULT_WINDOW, timeout: float | None = 30.0) -> ContainerAttach:
        """The container's own stdio, from its first byte if it was created with ``attach``."""
        stream, info = self._streaming().open_stream("container.attach", {"id": container}, window=window,
                                                     timeout=timeout)
        typed = cast(AttachInfo, {"id": container, "stream": stream.id, "window": stream.window,
                                  "terminal": bool(info.get("terminal")), "stdin": bool(info.get("stdin"))})
        return ContainerAttach(stream, typed, StreamReader(stream, "stdout"),
                               None if typed["terminal"] else StreamReader(stream, "stderr"),
                               StreamWriter(stream, "stdin") if typed["stdin"] else None)

    def resize(self, container: str, rows: int, cols: int, timeout: float | None = 30.0) -> None:
        """The window size of the container's terminal."""
        self._map("container.resize", {"id": container, "rows": rows, "cols": cols}, timeout)

    def close_stdin(self, container: str, timeout: float | None = 30.0) -> None:
        """EOF on the container's stdin once what was written before has reached it."""
        self._map("container.close_stdin", {"id": container}, timeout)

    def pause(self, container: str, timeout: float | None = 30.0) -> ContainerSummary:
        return cast(ContainerSummary, self._map("container.pause", {"id": container}, timeout))

    def resume(self, container: str, timeout: float | None = 30.0) -> ContainerSummary:
        return cast(ContainerSummary, self._map("container.resume", {"id": container}, timeout))

    def update(self, container: str, resources: dict[str, Any], timeout: float | None = 30.0) -> ContainerSummary:
        """New OCI ``linux.resources`` (memory, cpu, pids...) for a live container."""
        return cast(ContainerSummary, self._map("container.update", {"id": container, "resources": resources},
                                                timeout))

    def stats(self, container: str, timeout: float | None = 30.0) -> ContainerStats:
        return cast(ContainerStats, self._map("container.stats", {"id": container}, timeout))

    def read_file(self, container: str, path: str, *, max_bytes: int = 64 * 1024,
                  timeout: float | None = 30.0) -> bytes:
        """A file of one of the container's volumes (its termination log), also after it exited."""
        data = self._map("container.read_file", {"id": container, "path": path, "max": max_bytes}, timeout)
        value = data.get("data")
        return bytes(value) if isinstance(value, bytes | bytearray) else b""

    # --- events ---------------------------------------------------------------------------------------------
    def next_event(self, timeout: float | None = None) -> ZoneEvent | None:
        """The next zone event (acknowledged as it is taken); None on timeout or once the link is closed."""
        event = self._streaming().next_event(timeout)
        if event is None:
            return None
        return ZoneEvent(event.seq, event.type, event.payload if isinstance(event.payload, dict) else {})

    def wait_event(self, type_: str, timeout: float, **match: object) -> ZoneEvent:
        """The next event of ``type_`` whose payload has the given items (others are taken and skipped)."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            event = self.next_event(remaining)
            if event is None:
                break
            if event.type == type_ and all(event.payload.get(k) == v for k, v in match.items()):
                return event
        raise IdmTimeout(f"no {type_} event from zone {self.name!r} within {timeout} s")

    @property
    def closed(self) -> bool:
        return self._client is not None and self._client.closed.is_set()

    # --- sharing and closing ----------------------------------------------------------------------------------
    @contextmanager
    def share(self, zone: ZoneDir) -> Iterator[None]:
        """Serve plain requests of other CLI calls on the zone's ``ctl.sock`` while this link is held."""
        from host.callproxy import CallProxy

        proxy = CallProxy(self._streaming(), zone.control_socket)
        try:
            yield
        finally:
            proxy.close()

    def close(self) -> None:
        self._caller.close()

    def __enter__(self) -> ZoneLink:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- internals --------------------------------------------------------------------------------------------
    def _map(self, type_: str, payload: dict[str, object], timeout: float | None) -> dict[str, Any]:
        reply = self._caller.call(type_, payload, timeout=timeout)
        if not isinstance(reply, dict):
            raise BackendError(f"{type_}: zone {self.name!r} sent an unexpected reply {reply!r}")
        return reply

    def _streaming(self) -> IdmClient:
        if self._client is None:
            raise BackendError(f"the IDM link of zone {self.name!r} is held by a foreground `zonehost run`; "
                               "streams and events need the link itself (run the zone with -d)")
        return self._client
