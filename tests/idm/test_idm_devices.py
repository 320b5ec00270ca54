"""IDM over a character device (a pty in raw mode stands in for an hvc console), a device whose peer
goes away and comes back, and a live server fed hostile bytes."""

from __future__ import annotations

import os
import select
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idm import messages as m
from idm.client import IdmClient
from idm.server import IdmServer, Request
from idm.transport import FdTransport, SocketTransport, find_virtio_port, socket_pair


def wait_for(predicate, what: str, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_pty_in_raw_mode_carries_every_byte(loop) -> None:
    master, slave = os.openpty()
    device = FdTransport.open_device(os.ttyname(slave))
    os.close(slave)
    loop.server.register("echo", lambda req: {"data": req.payload})
    loop.server.add_transport(device, name="hvc", persistent=True)
    loop.start()
    with IdmClient(FdTransport(master)) as client:
        blob = bytes(range(256)) * 64  # \r, \n, ^C, ^D, ^S/^Q, DEL: a cooked tty would mangle these
        assert client.call("echo", blob)["data"] == blob
        assert client.info["protocol"] == 1


def test_persistent_device_waits_without_spinning_and_resumes(loop) -> None:
    class Device:
        """A device-like transport whose peer can leave and come back (like a virtio-serial port)."""

        def __init__(self, inner: SocketTransport) -> None:
            self.inner = inner

        def fileno(self) -> int:
            return self.inner.fileno()

        def read(self, n: int) -> bytes | None:
            return self.inner.read(n)

        def write(self, data) -> int:
            return self.inner.write(data)

        def close(self) -> None:
            self.inner.close()

    zone_end, host_end = socket_pair()
    device = Device(zone_end)
    server = loop.server
    server.add_transport(device, name="host", persistent=True)
    loop.start()
    first = IdmClient(host_end)
    assert first.call("ping")["pong"]
    first.close()
    wait_for(lambda: loop.on_loop(lambda: not server.connections and server.stats["probes"] > 1), "probing")
    # While the peer is away the device is out of the epoll set: the server's fd is quiet, a timer polls.
    assert loop.on_loop(lambda: select.select([server.fileno()], [], [], 0)[0]) == []
    assert loop.on_loop(server.timeout) is not None
    loop.on_loop(lambda: server.emit("container.exit", {"id": "web", "exit_code": 0}))

    zone_end2, host_end2 = socket_pair()

    def peer_returns() -> None:
        old, device.inner = device.inner, zone_end2
        old.close()

    loop.on_loop(peer_returns)
    with IdmClient(host_end2) as second:
        assert second.call("ping")["pong"]
        assert second.wait_event("container.exit", timeout=5).payload["id"] == "web"


def test_find_virtio_port(tmp_path) -> None:
    for entry, name in (("vport0p0", "org.qemu.guest_agent.0"), ("vport0p1", "zone.idm")):
        (tmp_path / entry).mkdir()
        (tmp_path / entry / "name").write_text(name + "\n")
    assert find_virtio_port("zone.idm", str(tmp_path)) == "/dev/vport0p1"
    with pytest.raises(FileNotFoundError):
        find_virtio_port("other", str(tmp_path))


@pytest.fixture(scope="module")
def live(loop_thread):
    """One server with one raw connection, fed by many hypothesis examples."""
    server = IdmServer()

    def streamy(req: Request) -> None:
        stream = req.open_stream()
        stream.on_data = lambda ch, data: stream.consumed(ch, len(data))
        req.reply({"window": stream.window})

    server.register("open", streamy)
    lt = loop_thread(server)
    zone_end, host_end = socket_pair()
    server.add_transport(zone_end, name="fuzz", persistent=False)
    lt.start()
    client = IdmClient(host_end)
    yield lt, client
    client.close()
    lt.stop()


frame_parts = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda n: m.MAGIC + n.to_bytes(4, "big"), st.integers(0, 2**32 - 1)),
    st.builds(lambda body: m.encode(m.Message(**body)) if body else b"",
              st.fixed_dictionaries({
                  "kind": st.sampled_from(sorted(m.KINDS)),
                  "id": st.integers(0, 50),
                  "type": st.sampled_from(["ping", "open", "nope", "hello", "events.ack", "exec"]),
                  "channel": st.sampled_from(["", "stdin", "stdout"]),
                  "payload": st.one_of(st.none(), st.integers(-5, 2**33), st.binary(max_size=16),
                                       st.dictionaries(st.sampled_from(["upto", "versions", "window"]),
                                                       st.integers(-1, 10), max_size=2)),
              })),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(st.lists(frame_parts, max_size=8))
def test_live_server_survives_hostile_bytes(live, parts: list[bytes]) -> None:
    loop, client = live
    raw = b"".join(parts)
    with client._wlock:
        view = memoryview(raw)
        while view:
            view = view[client.transport.write(view) :]
    # A frame header with a large length may be waiting for its body: push it out with filler, then resync.
    pending = loop.on_loop(lambda: loop.server.connections[0].decoder.frames.buffered)
    if pending:
        with client._wlock:
            client.transport.sock.setblocking(True)
            client.transport.sock.sendall(b"\xc1" * (m.DEFAULT_MAX_FRAME + 16))
            client.transport.sock.setblocking(False)
    assert client.call("ping", timeout=10)["pong"] is True
