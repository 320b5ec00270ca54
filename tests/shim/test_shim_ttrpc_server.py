"""The ttrpc server and client: calls, status codes, concurrency, limits and hostile input."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shim.protos import shim_pb2, ttrpc_pb2
from shim.ttrpc import Code, FrameDecoder, MessageType, NotFound, RpcError, encode_frame
from shim.ttrpc.client import Client, socket_path
from shim.ttrpc.server import CallContext, Method, Server, listen_unix, status_of

SERVICE = "test.v1.Echo"


class Handlers:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.cancelled: list[bool] = []
        self.contexts: list[CallContext] = []
        self.entered = 0

    def echo(self, request: shim_pb2.StateRequest, ctx: CallContext) -> shim_pb2.StateResponse:
        self.contexts.append(ctx)
        return shim_pb2.StateResponse(id=request.id, exec_id=request.exec_id, pid=len(request.id))

    def fail(self, request: shim_pb2.StateRequest, ctx: CallContext) -> shim_pb2.StateResponse:
        raise NotFound(f"no such thing {request.id!r}")

    def crash(self, request: shim_pb2.StateRequest, ctx: CallContext) -> shim_pb2.StateResponse:
        raise ZeroDivisionError("boom")

    def block(self, request: shim_pb2.StateRequest, ctx: CallContext) -> shim_pb2.StateResponse:
        self.entered += 1
        while not self.release.wait(0.02):
            if ctx.cancelled.is_set():
                self.cancelled.append(True)
                raise RpcError("cancelled", Code.CANCELLED)
        return shim_pb2.StateResponse(id="released")

    def huge(self, request: shim_pb2.StateRequest, ctx: CallContext) -> shim_pb2.StateResponse:
        return shim_pb2.StateResponse(id="x" * (5 << 20))


@pytest.fixture
def handlers() -> Handlers:
    return Handlers()


@pytest.fixture
def server(handlers: Handlers) -> Iterator[Server]:
    srv = Server(max_calls=8, send_timeout=2.0)
    srv.register(SERVICE, {name: Method(shim_pb2.StateRequest, getattr(handlers, name.lower()))
                           for name in ("Echo", "Fail", "Crash", "Block", "Huge")})
    yield srv
    handlers.release.set()
    srv.close()


@pytest.fixture
def pair(server: Server) -> Iterator[tuple[Client, socket.socket]]:
    a, b = socket.socketpair()
    server.serve_connection(a)
    client = Client(b)
    yield client, b
    client.close()


def call(client: Client, method: str, id: str = "abc", timeout: float | None = 5.0) -> shim_pb2.StateResponse:
    return client.call(SERVICE, method, shim_pb2.StateRequest(id=id), shim_pb2.StateResponse, timeout=timeout)


def raw_exchange(sock: socket.socket, data: bytes, timeout: float = 5.0) -> list:
    """Send raw bytes, return the frames that come back until `timeout` or EOF (for hostile-input tests)."""
    sock.sendall(data)
    sock.settimeout(timeout)
    decoder = FrameDecoder()
    frames: list = []
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            frames += decoder.feed(chunk)
            if frames:
                break
    except TimeoutError:
        pass
    return frames


def status(frame) -> tuple[int, str]:
    response = ttrpc_pb2.Response()
    response.ParseFromString(frame.data)
    return response.status.code, response.status.message


def test_unary_call(pair: tuple[Client, socket.socket]) -> None:
    client, _ = pair
    assert call(client, "Echo", "hello").pid == 5


def test_metadata_and_deadline_reach_the_handler(pair: tuple[Client, socket.socket], handlers: Handlers) -> None:
    client, _ = pair
    client.call(SERVICE, "Echo", shim_pb2.StateRequest(id="x"), shim_pb2.StateResponse, timeout=30,
                metadata={"containerd-namespace-ttrpc": "k8s.io"})
    ctx = handlers.contexts[-1]
    assert ctx.metadata == {"containerd-namespace-ttrpc": ["k8s.io"]}
    remaining = ctx.remaining()
    assert remaining is not None and 0 < remaining <= 30


@pytest.mark.parametrize(("method", "code", "text"), [
    ("Fail", Code.NOT_FOUND, "no such thing 'abc'"),
    ("Crash", Code.INTERNAL, "ZeroDivisionError: boom"),
    ("Huge", Code.RESOURCE_EXHAUSTED, "exceeds maximum message size"),
    ("Nope", Code.UNIMPLEMENTED, f"method {SERVICE}/Nope"),
])
def test_errors_become_status_codes(pair: tuple[Client, socket.socket], method: str, code: Code,
                                    text: str) -> None:
    client, _ = pair
    with pytest.raises(RpcError) as info:
        call(client, method)
    assert info.value.code == code
    assert text in info.value.message
    assert call(client, "Echo").id == "abc"  # the connection is still fine


def test_unknown_service(pair: tuple[Client, socket.socket]) -> None:
    client, _ = pair
    with pytest.raises(RpcError) as info:
        client.call("no.Such", "Echo", shim_pb2.StateRequest(), shim_pb2.StateResponse, timeout=5)
    assert info.value.code == Code.UNIMPLEMENTED and "service no.Such" in info.value.message


def test_status_of_maps_errno() -> None:
    assert status_of(FileNotFoundError(errno.ENOENT, "gone"))[0] == Code.NOT_FOUND
    assert status_of(FileExistsError(errno.EEXIST, "there"))[0] == Code.ALREADY_EXISTS
    assert status_of(PermissionError(errno.EACCES, "no"))[0] == Code.PERMISSION_DENIED
    assert status_of(TimeoutError())[0] == Code.DEADLINE_EXCEEDED
    assert status_of(ValueError("x")) == (Code.INTERNAL, "ValueError: x")


def test_calls_run_concurrently(pair: tuple[Client, socket.socket], handlers: Handlers) -> None:
    client, _ = pair
    results: list[str] = []
    blocked = threading.Thread(target=lambda: results.append(call(client, "Block", timeout=10).id))
    blocked.start()
    for i in range(20):  # a blocked call does not hold up the others
        assert call(client, "Echo", str(i)).id == str(i)
    handlers.release.set()
    blocked.join(5)
    assert results == ["released"]


def test_client_timeout_drops_late_answer(pair: tuple[Client, socket.socket], handlers: Handlers) -> None:
    client, _ = pair
    with pytest.raises(RpcError) as info:
        call(client, "Block", timeout=0.2)
    assert info.value.code == Code.DEADLINE_EXCEEDED
    handlers.release.set()
    time.sleep(0.1)
    assert call(client, "Echo").id == "abc"


def test_too_many_calls_in_flight(pair: tuple[Client, socket.socket], handlers: Handlers) -> None:
    client, _ = pair
    threads = [threading.Thread(target=lambda: call(client, "Block", timeout=10)) for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while handlers.entered < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(RpcError) as info:
        call(client, "Echo", timeout=5)
    assert info.value.code == Code.RESOURCE_EXHAUSTED
    handlers.release.set()
    for t in threads:
        t.join(5)


def test_peer_closing_cancels_calls_in_flight(server: Server, handlers: Handlers) -> None:
    a, b = socket.socketpair()
    server.serve_connection(a)
    client = Client(b)

    def blocked() -> None:
        with contextlib.suppress(RpcError):
            call(client, "Block", timeout=10)

    threading.Thread(target=blocked, daemon=True).start()
    time.sleep(0.2)
    client.close()
    deadline = time.monotonic() + 5
    while not handlers.cancelled and time.monotonic() < deadline:
        time.sleep(0.02)
    assert handlers.cancelled == [True]
    while server.connection_count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.connection_count == 0


def test_server_close_fails_pending_calls(server: Server) -> None:
    a, b = socket.socketpair()
    server.serve_connection(a)
    client = Client(b)
    errors: list[RpcError] = []

    def blocked() -> None:
        try:
            call(client, "Block", timeout=10)
        except RpcError as e:
            errors.append(e)

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.2)
    server.close()
    t.join(5)
    assert errors and errors[0].code in (Code.UNAVAILABLE, Code.CANCELLED)
    client.close()


def test_unix_socket_listener(server: Server, tmp_path) -> None:
    path = str(tmp_path / "d" / "s.sock")
    listener = listen_unix(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    server.serve_in_thread(listener)
    with Client.connect("unix://" + path) as client:
        assert call(client, "Echo", "via-unix").id == "via-unix"
    assert socket_path("unix:///a/b") == "/a/b" and socket_path("/a/b") == "/a/b"
    with pytest.raises(ValueError):
        socket_path("unix://")


# hostile input ---------------------------------------------------------------------------------------

def request_bytes(service: str = SERVICE, method: str = "Echo", payload: bytes = b"") -> bytes:
    return ttrpc_pb2.Request(service=service, method=method, payload=payload).SerializeToString()


@pytest.fixture
def raw(server: Server) -> Iterator[socket.socket]:
    a, b = socket.socketpair()
    server.serve_connection(a)
    yield b
    b.close()


def test_raw_even_stream_id(raw: socket.socket) -> None:
    [frame] = raw_exchange(raw, encode_frame(2, MessageType.REQUEST, request_bytes()))
    assert frame.stream_id == 2 and frame.type == MessageType.RESPONSE
    assert status(frame) == (Code.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams")


def test_raw_undecodable_request(raw: socket.socket) -> None:
    [frame] = raw_exchange(raw, encode_frame(1, MessageType.REQUEST, b"\xff\xff\xff"))
    code, message = status(frame)
    assert code == Code.INVALID_ARGUMENT and message.startswith("unmarshal request error")


def test_raw_undecodable_payload(raw: socket.socket) -> None:
    [frame] = raw_exchange(raw, encode_frame(1, MessageType.REQUEST, request_bytes(payload=b"\x0a\xff")))
    code, message = status(frame)
    assert code == Code.INVALID_ARGUMENT and "error unmarshalling Echo payload" in message


def test_raw_oversized_frame_then_good_request(raw: socket.socket) -> None:
    header = struct.pack(">IIBB", (4 << 20) + 1, 7, MessageType.REQUEST, 0)
    [frame] = raw_exchange(raw, header)
    assert frame.stream_id == 7 and status(frame)[0] == Code.RESOURCE_EXHAUSTED
    raw.sendall(b"\0" * ((4 << 20) + 1))  # the announced body is skipped
    [frame] = raw_exchange(raw, encode_frame(9, MessageType.REQUEST, request_bytes(
        payload=shim_pb2.StateRequest(id="after").SerializeToString())))
    response = ttrpc_pb2.Response()
    response.ParseFromString(frame.data)
    assert frame.stream_id == 9 and response.status.code == 0
    assert shim_pb2.StateResponse.FromString(response.payload).id == "after"


def test_raw_streaming_request_is_unimplemented(raw: socket.socket) -> None:
    [frame] = raw_exchange(raw, encode_frame(1, MessageType.REQUEST, request_bytes(), flags=0x02))
    assert status(frame)[0] == Code.UNIMPLEMENTED


def test_raw_duplicate_stream_id(raw: socket.socket, handlers: Handlers) -> None:
    block = encode_frame(1, MessageType.REQUEST, request_bytes(method="Block"))
    raw.sendall(block)
    time.sleep(0.1)
    [frame] = raw_exchange(raw, block)
    assert status(frame) == (Code.INVALID_ARGUMENT, "stream 1 already has a call in flight")
    handlers.release.set()


def test_raw_other_frame_types_are_ignored(raw: socket.socket) -> None:
    junk = encode_frame(1, MessageType.RESPONSE, b"x") + encode_frame(3, MessageType.DATA, b"y") + \
        encode_frame(5, 0x7f, b"z")
    frames = raw_exchange(raw, junk + encode_frame(7, MessageType.REQUEST, request_bytes()))
    assert [f.stream_id for f in frames] == [7]


def test_raw_half_frame_then_close_does_not_hang(server: Server) -> None:
    a, b = socket.socketpair()
    server.serve_connection(a)
    b.sendall(encode_frame(1, MessageType.REQUEST, request_bytes())[:7])
    b.close()
    deadline = time.monotonic() + 5
    while server.connection_count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.connection_count == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600))
def test_fuzz_garbage_never_hangs_the_server(server: Server, garbage: bytes) -> None:
    """Whatever the bytes, the server answers a good request on a fresh connection right after."""
    a, b = socket.socketpair()
    server.serve_connection(a)
    b.settimeout(2)
    with contextlib.suppress(OSError):
        b.sendall(garbage)
    b.close()
    c, d = socket.socketpair()
    server.serve_connection(c)
    client = Client(d)
    assert call(client, "Echo", "alive", timeout=5).id == "alive"
    client.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 4), st.integers(0, 255),
                          st.binary(max_size=80)), max_size=6))
def test_fuzz_hostile_frames_answered_or_ignored(server: Server,
                                                 frames: list[tuple[int, int, int, bytes]]) -> None:
    """Well-framed hostile messages: each gets an answer on its own stream or is ignored; the connection
    then still serves a good call."""
    a, b = socket.socketpair()
    server.serve_connection(a)
    client = Client(b)
    try:
        # hostile stream ids stay clear of the client's own (1, 3, ...)
        wire = b"".join(encode_frame(sid | 0x10000, t, data, flags=f) for sid, t, f, data in frames)
        client.send_raw(wire)
        assert call(client, "Echo", "alive", timeout=5).id == "alive"
    finally:
        client.close()


def test_graceful_close_lets_calls_in_flight_answer(server: Server, handlers: Handlers) -> None:
    a, b = socket.socketpair()
    server.serve_connection(a)
    client = Client(b)
    results: list[str] = []
    caller = threading.Thread(target=lambda: results.append(call(client, "Block", timeout=10).id))
    caller.start()
    deadline = time.monotonic() + 5
    while handlers.entered < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    threading.Timer(0.2, handlers.release.set).start()
    server.close(grace=5)
    caller.join(5)
    assert results == ["released"]
    client.close()
