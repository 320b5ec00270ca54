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
from typing import Any, Protocol, TypedDict, cast

from host.errors import BackendError
from host.state import ZoneDir
from idm.client import ClientStream, ExecSession, IdmClient
from idm.errors import IdmError, IdmTimeout

CLIENT_NAME = "zonehost"


class BootPhase(TypedDict, total=False):
    name: str
    start: float
    duration: float
    error: str


class BootTimeline(TypedDict, total=False):
    clock: str
    init_started: float
    phases: list[BootPhase]


class ContainerSummary(TypedDict, total=False):
    id: str
    status: str                 # creating, created, running, stopped, failed
    pid: int
    main: bool
    exit_code: int | None
    error: str | None
    image: str | None
    args: list[str]
    terminal: bool
    created: float
    started: float | None
    finished: float | None
    output_bytes: int


class ZoneInfo(TypedDict, total=False):
    """``zone.info`` (and the hello and ``zone.ready`` payloads, which add ``main``)."""

    zone: str
    init_version: str
    kernel: dict[str, str]
    hostname: str
    ready: bool
    boot: BootTimeline
    errors: list[dict[str, str]]
    containers: list[ContainerSummary]
    init_rss: int | None
    pid1: bool
    main: str | None
    extensions: list[dict[str, Any]]    # the system extensions mounted (name, path, modules, tools)
    components: list[dict[str, Any]]    # what the zone was composed from: kind, ref, digest (zone config)


class ContainerDefinition(TypedDict, total=False):
    """A container to create: the shape of an entry of the zone config's ``containers``."""

    name: str
    image: str
    args: list[str]
    env: list[str]
    cwd: str
    user: dict[str, int | list[int]]
    limits: dict[str, int | float]
    terminal: bool
    stdin: bool
    main: bool
    hostname: str
    readonly_root: bool
    annotations: dict[str, str]


class ContainerExit(TypedDict):
    id: str
    exit_code: int | None
    status: str
    error: str | None


class ContainerLogs(TypedDict):
    id: str
    data: bytes
    dropped: int
    status: str
    exit_code: int | None


class ZoneMetrics(TypedDict, total=False):
    uptime: float | None
    init_rss: int | None
    memory: dict[str, int]
    cpu: dict[str, object]
    load: dict[str, float | int]
    containers: dict[str, dict[str, object]]


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

    def create(self, definition: ContainerDefinition, *, start: bool = False,
               timeout: float | None = 120.0) -> ContainerSummary:
        return cast(ContainerSummary, self._map("container.create", {"container": dict(definition),
                                                                     "start": start}, timeout))

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

    def exec(self, command: list[str], *, container: str | None = None, env: dict[str, str] | None = None,
             cwd: str | None = None, user: dict[str, int] | None = None, tty: bool = False,
             rows: int | None = None, cols: int | None = None, zone: bool = False) -> ExecSession:
        """Run ``command`` in the container (default: the zone's main one) with its settings; stdin, output,
        resize, signal and the exit code go through the returned session (idm.attach wires a terminal).
        ``zone``: a zone-level exec instead, in PID 1's namespaces with the system extensions' tools."""
        return self._streaming().exec(command, container=None if zone else container, env=env, cwd=cwd,
                                      user=user, tty=tty, rows=rows, cols=cols, zone=zone)

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
