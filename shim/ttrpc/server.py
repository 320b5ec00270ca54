"""A threaded ttrpc server on a unix socket: one reader thread per connection, one thread per call.

Each connection's reader decodes frames and starts a handler thread per request (a `Wait` may block for
the life of a container, so calls never queue behind each other); responses go out under a per-connection
write lock. What a peer can get wrong, and what it gets back on the same stream id:

| input | answer |
| --- | --- |
| frame longer than 4 MiB | ResourceExhausted (its data is skipped, the connection stays up) |
| request on an even (server-side) stream id | InvalidArgument |
| request whose stream id is still in flight | InvalidArgument |
| request body that is not a ttrpc Request | InvalidArgument |
| streaming request (flag `remote open`) | Unimplemented |
| unknown service or method | Unimplemented |
| payload that does not decode as the method's request | InvalidArgument |
| more than `max_calls` calls in flight on the connection | ResourceExhausted |
| a handler raising RpcError / OSError / anything else | its code / errno's code / Internal |
| response frames and unknown frame types | ignored (ttrpc does the same, for forward compatibility) |

A connection that stops reading its responses for `send_timeout` seconds is closed. When the peer closes,
calls in flight see `CallContext.cancelled` set; their answers are dropped.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError, Message

from shim.protos import ttrpc_pb2
from shim.ttrpc.framing import (
    FLAG_REMOTE_OPEN,
    MAX_MESSAGE_LENGTH,
    Frame,
    FrameDecoder,
    FrameTooLarge,
    MessageType,
    encode_frame,
)
from shim.ttrpc.status import Code, RpcError

log = logging.getLogger("shim.ttrpc")

Handler = Callable[[Any, "CallContext"], Message]


@dataclass(frozen=True)
class Method:
    request_type: type[Message]
    handler: Handler


@dataclass
class CallContext:
    """What a handler knows about its call besides the request message."""

    service: str
    method: str
    metadata: dict[str, list[str]] = field(default_factory=dict)
    deadline: float | None = None  # time.monotonic() value, from the request's timeout_nano
    cancelled: threading.Event = field(default_factory=threading.Event)  # the connection went away

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())


_ERRNO_CODES = {
    errno.ENOENT: Code.NOT_FOUND, errno.ESRCH: Code.NOT_FOUND, errno.EEXIST: Code.ALREADY_EXISTS,
    errno.EPERM: Code.PERMISSION_DENIED, errno.EACCES: Code.PERMISSION_DENIED, errno.EINVAL: Code.INVALID_ARGUMENT,
}


def status_of(exc: BaseException) -> tuple[Code, str]:
    """The status a handler's exception is answered with."""
    if isinstance(exc, RpcError):
        return exc.code, exc.message
    if isinstance(exc, TimeoutError):
        return Code.DEADLINE_EXCEEDED, str(exc) or "timed out"
    if isinstance(exc, OSError) and exc.errno in _ERRNO_CODES:
        return _ERRNO_CODES[exc.errno], str(exc)
    return Code.INTERNAL, f"{type(exc).__name__}: {exc}"


def _message_class(descriptor: Any) -> type[Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


class Server:
    def __init__(self, *, max_calls: int = 256, send_timeout: float = 30.0,
                 limit: int = MAX_MESSAGE_LENGTH) -> None:
        self.max_calls = max_calls
        self.send_timeout = send_timeout
        self.limit = limit
        self._services: dict[str, dict[str, Method]] = {}
        self._listeners: list[socket.socket] = []
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()

    # registration ------------------------------------------------------------------------------------
    def register(self, service: str, methods: dict[str, Method]) -> None:
        if service in self._services:
            raise ValueError(f"ttrpc: service {service} registered twice")
        self._services[service] = dict(methods)

    def register_service(self, descriptor: Any, implementation: object) -> None:
        """Register every method of a protobuf ServiceDescriptor; `implementation.<Method>(request, ctx)`
        answers it (a method the implementation lacks answers Unimplemented)."""
        methods = {}
        for method in descriptor.methods:
            handler = getattr(implementation, method.name, None)
            if handler is not None:
                methods[method.name] = Method(_message_class(method.input_type), handler)
        self.register(descriptor.full_name, methods)

    def resolve(self, service: str, method: str) -> Method:
        methods = self._services.get(service)
        if methods is None:
            raise RpcError(f"service {service}", Code.UNIMPLEMENTED)
        found = methods.get(method)
        if found is None:
            raise RpcError(f"method {service}/{method}", Code.UNIMPLEMENTED)
        return found

    # serving -----------------------------------------------------------------------------------------
    def serve(self, listener: socket.socket) -> None:
        """Accept connections until close(); each one is served on its own thread."""
        with self._lock:
            if self._closed.is_set():
                raise RuntimeError("ttrpc: server is closed")
            self._listeners.append(listener)
        while not self._closed.is_set():
            try:
                conn, _ = listener.accept()
            except OSError as e:
                if self._closed.is_set() or e.errno in (errno.EBADF, errno.EINVAL):
                    return
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("ttrpc: accept: %s; retrying", e)
                    time.sleep(0.1)
                    continue
                raise
            self.serve_connection(conn)

    def serve_in_thread(self, listener: socket.socket) -> threading.Thread:
        thread = threading.Thread(target=self.serve, args=(listener,), name="ttrpc-accept", daemon=True)
        thread.start()
        return thread

    def serve_connection(self, sock: socket.socket) -> threading.Thread:
        """Serve one connected socket (accepted, or one end of a socketpair in tests)."""
        connection = _Connection(self, sock)
        with self._lock:
            if self._closed.is_set():
                sock.close()
                raise RuntimeError("ttrpc: server is closed")
            self._connections.add(connection)
        thread = threading.Thread(target=connection.run, name="ttrpc-conn", daemon=True)
        thread.start()
        return thread

    def close(self, grace: float = 0.0) -> None:
        """Stop accepting; give calls in flight up to `grace` seconds to answer; then close every connection
        (calls still in flight see `cancelled`)."""
        self._closed.set()
        with self._lock:
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with self._lock:
                busy = any(connection.calls_in_flight for connection in self._connections)
            if not busy:
                break
            time.sleep(0.01)
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.abort()

    def _forget(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.discard(connection)

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._connections)


class _Connection:
    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._in_flight: dict[int, CallContext] = {}
        self._reading_done = False
        self._closed = False
        with contextlib.suppress(OSError):
            seconds = int(server.send_timeout)
            micros = int((server.send_timeout - seconds) * 1e6)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, micros))

    @property
    def calls_in_flight(self) -> int:
        with self._state_lock:
            return len(self._in_flight)

    def run(self) -> None:
        decoder = FrameDecoder(self.server.limit)
        try:
            while True:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    break
                if not data:
                    if not decoder.at_boundary:
                        log.warning("ttrpc: peer closed the connection in the middle of a frame")
                    break
                for item in decoder.feed(data):
                    if isinstance(item, FrameTooLarge):
                        self.send_status(item.stream_id, Code.RESOURCE_EXHAUSTED, item.message)
                    else:
                        self._on_frame(item)
        finally:
            self._finish_reading()

    def _on_frame(self, frame: Frame) -> None:
        if frame.type != MessageType.REQUEST:
            return  # responses and data frames from a client, unknown types: ignored for compatibility
        stream_id = frame.stream_id
        request = ttrpc_pb2.Request()
        try:
            request.ParseFromString(frame.data)
        except DecodeError as e:
            self.send_status(stream_id, Code.INVALID_ARGUMENT, f"unmarshal request error: {e}")
            return
        if stream_id % 2 != 1:
            self.send_status(stream_id, Code.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams")
            return
        if frame.flags & FLAG_REMOTE_OPEN:
            self.send_status(stream_id, Code.UNIMPLEMENTED, "streaming requests are not supported by this server")
            return
        metadata: dict[str, list[str]] = {}
        for pair in request.metadata:
            metadata.setdefault(pair.key.lower(), []).append(pair.value)
        deadline = time.monotonic() + request.timeout_nano / 1e9 if request.timeout_nano > 0 else None
        context = CallContext(request.service, request.method, metadata, deadline)
        refusal: tuple[Code, str] | None = None
        with self._state_lock:
            if stream_id in self._in_flight:
                refusal = Code.INVALID_ARGUMENT, f"stream {stream_id} already has a call in flight"
            elif len(self._in_flight) >= self.server.max_calls:
                refusal = (Code.RESOURCE_EXHAUSTED,
                           f"too many calls in flight on this connection (limit {self.server.max_calls})")
            else:
                self._in_flight[stream_id] = context
        if refusal is not None:
            self.send_status(stream_id, *refusal)
            return
        thread = threading.Thread(target=self._call, args=(stream_id, request, context),
                                  name=f"ttrpc-{request.method or 'call'}", daemon=True)
        thread.start()

    def _call(self, stream_id: int, request: ttrpc_pb2.Request, context: CallContext) -> None:
        try:
            try:
                method = self.server.resolve(request.service, request.method)
                message = method.request_type()
                try:
                    message.ParseFromString(request.payload)
                except DecodeError as e:
                    raise RpcError(f"ttrpc: error unmarshalling {request.method} payload: {e}",
                                   Code.INVALID_ARGUMENT) from e
                reply = method.handler(message, context)
                payload = reply.SerializeToString()
            except Exception as e:  # every failure becomes a status; the server itself never dies of it
                code, text = status_of(e)
                if code == Code.INTERNAL:
                    log.exception("ttrpc: %s/%s failed", request.service, request.method)
                self.send_status(stream_id, code, text)
                return
            if len(payload) > self.server.limit - 64:
                self.send_status(stream_id, Code.RESOURCE_EXHAUSTED,
                                 f"response of {len(payload)} bytes exceeds maximum message size")
                return
            self.send_response(stream_id, ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=0), payload=payload))
        finally:
            with self._state_lock:
                self._in_flight.pop(stream_id, None)
                close_now = self._reading_done and not self._in_flight
            if close_now:
                self._close_socket()

    # writing -----------------------------------------------------------------------------------------
    def send_status(self, stream_id: int, code: Code, message: str) -> None:
        self.send_response(stream_id, ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=int(code), message=message)))

    def send_response(self, stream_id: int, response: ttrpc_pb2.Response) -> None:
        frame = encode_frame(stream_id, MessageType.RESPONSE, response.SerializeToString(), limit=self.server.limit)
        with self._write_lock:
            if self._closed:
                return
            try:
                self.sock.sendall(frame)
            except OSError as e:
                log.warning("ttrpc: dropping connection: sending a response failed: %s", e)
                self.abort()

    # teardown ----------------------------------------------------------------------------------------
    def _finish_reading(self) -> None:
        with self._state_lock:
            self._reading_done = True
            contexts = list(self._in_flight.values())
            close_now = not self._in_flight
        for context in contexts:
            context.cancelled.set()
        if close_now:
            self._close_socket()

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with self._state_lock:
            contexts = list(self._in_flight.values())
        for context in contexts:
            context.cancelled.set()

    def _close_socket(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
        self.server._forget(self)


def listen_unix(path: str, mode: int = 0o600) -> socket.socket:
    """A listening unix socket at `path` (its directory created 0700), readable by its owner only."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock
