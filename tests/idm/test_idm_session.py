"""Zone server and host client over a socketpair: requests, errors, resync, events, reconnects."""

from __future__ import annotations

import os
import threading

import msgpack
import pytest

from idm import messages as m
from idm.client import IdmClient, _Pending
from idm.errors import (
    BAD_FRAME,
    FRAME_TOO_LARGE,
    HANDLER_FAILED,
    INVALID_ARGUMENT,
    NOT_FOUND,
    UNKNOWN_TYPE,
    UNSUPPORTED_VERSION,
    ConnectionClosed,
    IdmError,
    RemoteError,
)
from idm.framing import HEADER, MAGIC
from idm.server import Request
from idm.transport import connect_unix


def inject(client: IdmClient, raw: bytes) -> None:
    """Write raw bytes on the client's channel (garbage, hand-made frames)."""
    with client._wlock:
        view = memoryview(raw)
        while view:
            view = view[client.transport.write(view) :]


def wait_protocol_error(client: IdmClient, code: str) -> RemoteError:
    for _ in range(200):
        for err in list(client.protocol_errors):
            if err.code == code:
                return err
        client.call("ping")  # a round trip: everything sent before it has been answered
    raise AssertionError(f"no {code} error")


def test_hello_ping_and_zone_hello_event(connect) -> None:
    client = connect()
    assert client.info["protocol"] == 1 and client.info["zone"] == "test-zone"
    assert client.info["boot"] == {"mounts": 0.01, "idm": 0.02}
    assert client.call("ping", {"n": 1}) == {"pong": True, "echo": {"n": 1}}
    hello = client.wait_event("zone.hello", timeout=5)
    assert hello.payload["max_frame"] == 1 << 20


def test_unknown_type_is_an_error_reply_and_the_session_stays(connect) -> None:
    client = connect()
    with pytest.raises(RemoteError) as exc:
        client.call("no.such.thing")
    assert exc.value.code == UNKNOWN_TYPE and "no.such.thing" in str(exc.value)
    assert client.call("ping")["pong"] is True


def test_handler_errors_map_to_codes(loop, connect) -> None:
    def missing(req: Request) -> None:
        raise IdmError(f"no container {req.arg('id')!r}", NOT_FOUND)

    def crash(req: Request) -> None:
        raise RuntimeError("boom")

    loop.server.register("container.start", missing)
    loop.server.register("crash", crash)
    client = connect()
    with pytest.raises(RemoteError) as exc:
        client.call("container.start", {"id": "web"})
    assert exc.value.code == NOT_FOUND and "web" in exc.value.remote_message
    with pytest.raises(RemoteError) as exc:
        client.call("crash")
    assert exc.value.code == HANDLER_FAILED and "RuntimeError: boom" in str(exc.value)
    with pytest.raises(RemoteError) as exc:
        client.call("events.ack", {"upto": "x"})
    assert exc.value.code == INVALID_ARGUMENT
    assert client.call("ping")["pong"]


def test_wrong_version_gets_an_error_naming_the_request(connect) -> None:
    client = connect()
    body = msgpack.packb({"v": 9, "t": "req", "id": 4242, "type": "ping"})
    waiter = client._pending.setdefault(4242, _Pending("hand-made"))
    inject(client, HEADER.pack(MAGIC, len(body)) + body)
    assert waiter.done.wait(5)
    assert isinstance(waiter.error, RemoteError) and waiter.error.code == UNSUPPORTED_VERSION
    assert "9" in waiter.error.remote_message
    assert client.call("ping")["pong"]


def test_garbage_resyncs_and_next_request_is_answered(loop, connect) -> None:
    client = connect()
    inject(client, os.urandom(3000).replace(MAGIC, b"xxxx"))
    assert client.call("ping")["pong"] is True
    assert wait_protocol_error(client, BAD_FRAME)
    assert loop.on_loop(lambda: loop.server.stats["protocol_errors"]) >= 1


def test_oversize_frame_rejected_connection_stays(connect) -> None:
    client = connect()
    inject(client, HEADER.pack(MAGIC, 50 << 20) + b"\x80" + b"y" * 100_000)
    assert wait_protocol_error(client, FRAME_TOO_LARGE)
    assert client.call("ping")["pong"] is True


def test_ids_match_with_async_replies_out_of_order(loop, connect) -> None:
    def slow(req: Request) -> None:
        delay = req.arg("delay")
        loop.server.call_later(delay, lambda: req.reply({"n": req.arg("n")}))

    loop.server.register("slow", slow)
    client = connect()
    results: dict[int, dict] = {}

    def worker(n: int) -> None:
        results[n] = client.call("slow", {"n": n, "delay": (10 - n) * 0.01})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {n: {"n": n} for n in range(10)}


def test_events_buffer_while_disconnected_and_durable_ones_wait_for_ack(loop, tmp_path) -> None:
    path = str(tmp_path / "idm.sock")
    loop.server.listen_unix(path)
    loop.start()
    for i in range(3):
        loop.on_loop(lambda i=i: loop.server.emit("zone.log", {"line": f"log {i}"}))
    loop.on_loop(lambda: loop.server.emit("container.exit", {"id": "web", "exit_code": 7}))

    # A client that says hello but never acknowledges, then dies: the durable exit event must survive.
    raw = connect_unix(path)
    hello = m.encode(m.request(1, "hello", {"versions": [1], "events": True}))
    raw.sock.setblocking(True)
    raw.sock.sendall(hello)
    decoder = m.MessageDecoder()
    seen: list[m.Message] = []
    while not any(x.type == "container.exit" for x in seen):
        seen += [x for x in decoder.feed(raw.sock.recv(65536)) if isinstance(x, m.Message)]
    assert [x.payload["line"] for x in seen if x.type == "zone.log"] == ["log 0", "log 1", "log 2"]
    raw.close()

    with IdmClient.connect_unix(path) as client:
        exit_event = client.wait_event("container.exit", timeout=5, id="web")
        assert exit_event.payload["exit_code"] == 7
        client.call("ping")  # the ack was sent before this request
    assert loop.on_loop(lambda: len(loop.server.unacked_events())) == 0

    # Nobody connected: the non-durable backlog is bounded, the overflow counted.
    def flood() -> None:
        for i in range(loop.server.event_backlog + 50):
            loop.server.emit("zone.log", {"line": i})

    loop.on_loop(flood)
    assert loop.on_loop(lambda: len(loop.server._pending)) == loop.server.event_backlog
    assert loop.on_loop(lambda: loop.server.stats["events_dropped"]) == 50


def test_new_client_after_disconnect_gets_exit_event(loop, tmp_path) -> None:
    path = str(tmp_path / "idm.sock")
    loop.server.listen_unix(path)
    loop.start()
    first = IdmClient.connect_unix(path)
    first.close()
    loop.on_loop(lambda: loop.server.emit("container.exit", {"id": "db", "exit_code": 137}))
    with IdmClient.connect_unix(path) as second:
        assert second.wait_event("container.exit", timeout=5).payload == {"id": "db", "exit_code": 137}
        assert second.call("ping")["pong"]


def test_client_sees_connection_loss(loop, connect) -> None:
    client = connect()
    loop.on_loop(lambda: [loop.server._drop(c, reconnect=False) for c in loop.server.connections])
    assert client.closed.wait(5)
    with pytest.raises(ConnectionClosed):
        client.call("ping", timeout=2)


def test_unix_listener_serves_several_clients(loop, tmp_path) -> None:
    path = str(tmp_path / "idm.sock")
    loop.server.listen_unix(path)
    loop.start()
    clients = [IdmClient.connect_unix(path, events=False) for _ in range(3)]
    try:
        assert all(c.call("ping", n)["echo"] == n for n, c in enumerate(clients))
    finally:
        for c in clients:
            c.close()


def test_replies_and_events_that_cannot_be_sent_do_not_hurt_the_zone(loop, connect) -> None:
    from pathlib import PurePosixPath

    loop.server.register("big", lambda req: {"blob": b"x" * (2 << 20)})
    loop.server.register("odd", lambda req: {"path": PurePosixPath("/run/zone"), "tags": {"b", "a"}})
    client = connect()
    with pytest.raises(RemoteError) as exc:
        client.call("big")
    assert exc.value.code == FRAME_TOO_LARGE
    assert client.call("odd") == {"path": "/run/zone", "tags": ["a", "b"]}
    loop.on_loop(lambda: loop.server.emit("zone.log", {"message": "y" * (2 << 20)}))  # dropped, logged
    loop.on_loop(lambda: loop.server.emit("zone.log", {"message": "small"}))
    assert client.wait_event("zone.log", timeout=5).payload == {"message": "small"}


def test_failed_hello_leaves_nothing_running(loop) -> None:
    from idm.transport import socket_pair

    loop.server.register("hello", lambda req: req.fail(UNSUPPORTED_VERSION, "this zone speaks version 9 only"))
    zone_end, host_end = socket_pair()
    loop.server.add_transport(zone_end, name="test", persistent=False)
    loop.start()
    with pytest.raises(RemoteError) as exc:
        IdmClient(host_end)
    assert exc.value.code == UNSUPPORTED_VERSION
    assert host_end.sock.fileno() == -1  # closed, and the reader thread has stopped
