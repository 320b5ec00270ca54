"""Share one zone's IDM link between CLI calls (behind ``host.link``: ``ZoneLink.share`` and ``ZoneLink.open``).

QEMU's chardev socket takes one client at a time, and a foreground ``zonehost run`` holds it while it streams
the container's output. So that ``zonehost ps|kill|stop|logs`` still work meanwhile, the process holding the
link serves plain request/response calls on ``<zone>/ctl.sock``: one msgpack request
``{"type", "payload", "timeout"}`` per connection, one msgpack reply ``{"ok": result}`` or ``{"error": text}``.
Streams (exec, log follow) are not proxied: they need the link itself.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path
from typing import Any, Protocol

import msgpack

from host.errors import BackendError
from styrolite.errors import describe

MAX_REQUEST = 1 << 20


class Caller(Protocol):
    def call(self, type_: str, payload: Any = None, timeout: float | None = 30.0) -> Any: ...


class CallProxy:
    """Serve ``client.call`` to other processes on a unix socket until ``close()``."""

    def __init__(self, client: Caller, path: Path) -> None:
        self.client = client
        self.path = path
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.bind(str(path))
        os.chmod(path, 0o600)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, name="idm-call-proxy", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                request = _receive(conn)
                result = self.client.call(str(request["type"]), request.get("payload"),
                                          timeout=float(request.get("timeout") or 30))
                reply: dict[str, Any] = {"ok": result}
            except Exception as e:   # the caller gets the reason on one line
                reply = {"error": describe(e)}
            with contextlib.suppress(OSError):
                conn.sendall(msgpack.packb(reply, use_bin_type=True))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.path.unlink(missing_ok=True)


def _receive(conn: socket.socket) -> Any:
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=MAX_REQUEST)
    while True:
        data = conn.recv(65536)
        if not data:
            raise BackendError("call proxy: connection closed before a full message")
        unpacker.feed(data)
        for message in unpacker:
            return message


class ProxyClient:
    """The caller's side: the subset of the IDM client that plain CLI verbs use (``call``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def call(self, type_: str, payload: Any = None, timeout: float | None = 30.0) -> Any:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout((timeout or 30.0) + 5)
            try:
                sock.connect(str(self.path))
                sock.sendall(msgpack.packb({"type": type_, "payload": payload, "timeout": timeout},
                                           use_bin_type=True))
                sock.shutdown(socket.SHUT_WR)
                reply = _receive(sock)
            except OSError as e:
                raise BackendError(f"call {type_} through {self.path}") from e
        if not isinstance(reply, dict):
            raise BackendError(f"{type_}: unexpected reply {reply!r}")
        if "error" in reply:
            raise BackendError(f"{type_}: {reply['error']}")
        return reply.get("ok")

    def close(self) -> None:
        pass


def proxy_for(path: Path) -> ProxyClient | None:
    """A ProxyClient if a live proxy answers on ``path``."""
    if not path.exists():
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as probe:
        probe.settimeout(2)
        try:
            probe.connect(str(path))
        except OSError:
            return None
    return ProxyClient(path)
