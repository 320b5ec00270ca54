"""The transport shape of a Xen vchan, without Xen: a ring per direction and one eventfd per end that
is always writable and readable only when notified (like an event channel). Both ends must move data
through tiny rings in both directions, and the zone must not spin while idle."""

from __future__ import annotations

import contextlib
import os
import threading
import time

from idm.client import IdmClient
from idm.errors import ConnectionClosed


class _Shared:
    def __init__(self, capacity: int) -> None:
        self.lock = threading.Lock()
        self.capacity = capacity
        self.closed = False


class EventChannelEnd:
    def __init__(self, shared: _Shared, inbox: bytearray, outbox: bytearray) -> None:
        self.shared = shared
        self.inbox = inbox
        self.outbox = outbox
        self.efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.peer: EventChannelEnd | None = None
        self.notifications = 0

    def fileno(self) -> int:
        return self.efd

    def _kick_peer(self) -> None:
        if self.peer is not None and self.peer.efd >= 0:
            os.eventfd_write(self.peer.efd, 1)

    def read(self, max_bytes: int) -> bytes | None:
        with self.shared.lock:
            if self.inbox:
                data = bytes(self.inbox[:max_bytes])
                del self.inbox[:max_bytes]
                self._kick_peer()  # space freed
                return data
            return b"" if self.shared.closed else None

    def write(self, data) -> int:
        with self.shared.lock:
            if self.shared.closed:
                raise ConnectionClosed("ring closed")
            n = min(len(data), self.shared.capacity - len(self.outbox))
            if n > 0:
                self.outbox += bytes(data[:n])
                self._kick_peer()  # data arrived
            return max(n, 0)

    def clear_notification(self) -> None:
        self.notifications += 1
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.efd)

    def close(self) -> None:
        with self.shared.lock:
            self.shared.closed = True
            self._kick_peer()


def event_channel_pair(capacity: int) -> tuple[EventChannelEnd, EventChannelEnd]:
    shared = _Shared(capacity)
    to_zone, to_host = bytearray(), bytearray()
    zone = EventChannelEnd(shared, inbox=to_zone, outbox=to_host)
    host = EventChannelEnd(shared, inbox=to_host, outbox=to_zone)
    zone.peer, host.peer = host, zone
    return zone, host


def test_tiny_rings_both_directions_and_no_spin(loop, exec_service) -> None:
    exec_service(loop)
    zone_end, host_end = event_channel_pair(capacity=1024)
    loop.server.add_transport(zone_end, name="vchan", persistent=False)
    loop.start()
    with IdmClient(host_end) as client:
        blob = os.urandom(300_000)
        out, _err, code = client.exec(["cat"]).communicate(blob)
        assert out == blob and code == 0
        assert client.call("ping", b"x" * 5000)["echo"] == b"x" * 5000

        before = zone_end.notifications
        time.sleep(0.3)  # idle: a zone that waited for POLLOUT on an event channel would spin here
        assert zone_end.notifications - before <= 3  # a late "space freed" or two; a spinning loop makes thousands
        assert client.call("ping")["pong"]
    for _ in range(500):
        if not loop.on_loop(lambda: loop.server.connections):
            break
        time.sleep(0.01)
    assert loop.on_loop(lambda: loop.server.connections) == []
