"""A small blocking ttrpc client: many threads may call at once over one connection.

Used by the tests and by the event forwarder (containerd's `Events.Forward` on its ttrpc socket). Stream ids
are odd and increase from 1; a reader thread matches responses to calls. A call's `timeout` is sent to the
server (timeout_nano) and enforced here; a late answer is dropped. When the connection goes, every pending
call fails with Unavailable.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from shim.protos import ttrpc_pb2
from shim.ttrpc.framing import MAX_MESSAGE_LENGTH, FrameDecoder, FrameTooLarge, MessageType, encode_frame
from shim.ttrpc.status import Code, RpcError

M = TypeVar("M", bound=Message)


def socket_path(address: str) -> str:
    """containerd writes shim addresses as `unix:///path`; a bare path is accepted too."""
    path = address.removeprefix("unix://")
    if not path:
        raise ValueError(f"ttrpc: empty socket address {address!r}")
    return path


class _Pending:
    __slots__ = ("done", "error", "response")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.response: ttrpc_pb2.Response | None = None
        self.error: RpcError | None = None


class Client:
    def __init__(self, sock: socket.socket, limit: int = MAX_MESSAGE_LENGTH) -> None:
        self.sock = sock
        self.limit = limit
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._next_id = 1
        self._closed: RpcError | None = None
        self._reader = threading.Thread(target=self._read_loop, name="ttrpc-client", daemon=True)
        self._reader.start()

    @classmethod
    def connect(cls, address: str, timeout: float = 10.0) -> Client:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(timeout)
        try:
            sock.connect(socket_path(address))
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        return cls(sock)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def call(self, service: str, method: str, request: Message, response_type: type[M], *,
             timeout: float | None = None, metadata: dict[str, str] | None = None) -> M:
        """Call service/method; return the decoded response or raise RpcError with the server's status."""
        envelope = ttrpc_pb2.Request(service=service, method=method, payload=request.SerializeToString())
        if timeout is not None:
            envelope.timeout_nano = max(1, int(timeout * 1e9))
        for key, value in (metadata or {}).items():
            envelope.metadata.add(key=key, value=value)
        data = envelope.SerializeToString()
        if len(data) > self.limit:
            raise RpcError(f"request of {len(data)} bytes exceeds maximum message size of {self.limit}",
                           Code.RESOURCE_EXHAUSTED)
        pending = _Pending()
        with self._lock:
            if self._closed is not None:
                raise self._closed
            stream_id = self._next_id
            self._next_id += 2
            self._pending[stream_id] = pending
        try:
            self.send_raw(encode_frame(stream_id, MessageType.REQUEST, data, limit=self.limit))
        except OSError as e:
            with self._lock:
                self._pending.pop(stream_id, None)
            raise RpcError(f"ttrpc: sending {service}/{method}: {e}", Code.UNAVAILABLE) from e
        if not pending.done.wait(timeout):
            with self._lock:
                self._pending.pop(stream_id, None)
            raise RpcError(f"{service}/{method}: no answer within {timeout} s", Code.DEADLINE_EXCEEDED)
        if pending.error is not None:
            raise pending.error
        assert pending.response is not None
        status = pending.response.status
        if status.code != Code.OK:
            raise RpcError(status.message, Code.from_wire(status.code))
        reply = response_type()
        try:
            reply.ParseFromString(pending.response.payload)
        except DecodeError as e:
            raise RpcError(f"{service}/{method}: undecodable response: {e}", Code.INTERNAL) from e
        return reply

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (tests use it to send hostile frames)."""
        with self._write_lock:
            self.sock.sendall(data)

    def close(self) -> None:
        self._fail_all(RpcError("ttrpc: client closed", Code.UNAVAILABLE))
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _read_loop(self) -> None:
        decoder = FrameDecoder(self.limit)
        reason = "ttrpc: connection closed by the server"
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                for item in decoder.feed(data):
                    if isinstance(item, FrameTooLarge):
                        self._resolve(item.stream_id, error=RpcError(item.message, Code.RESOURCE_EXHAUSTED))
                        continue
                    if item.type != MessageType.RESPONSE:
                        continue
                    response = ttrpc_pb2.Response()
                    try:
                        response.ParseFromString(item.data)
                    except DecodeError as e:
                        self._resolve(item.stream_id, error=RpcError(f"undecodable response: {e}", Code.INTERNAL))
                        continue
                    self._resolve(item.stream_id, response=response)
        except OSError as e:
            reason = f"ttrpc: connection lost: {e}"
        self._fail_all(RpcError(reason, Code.UNAVAILABLE))

    def _resolve(self, stream_id: int, response: ttrpc_pb2.Response | None = None,
                 error: RpcError | None = None) -> None:
        with self._lock:
            pending = self._pending.pop(stream_id, None)
        if pending is None:
            return  # a late answer to a call that timed out
        pending.response, pending.error = response, error
        pending.done.set()

    def _fail_all(self, error: RpcError) -> None:
        with self._lock:
            if self._closed is None:
                self._closed = error
            pending, self._pending = self._pending, {}
        for item in pending.values():
            item.error = error
            item.done.set()
