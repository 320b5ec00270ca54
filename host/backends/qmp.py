"""QMP, QEMU's JSON control socket (``-qmp unix:...,server=on,wait=off``): line-delimited JSON.

``QmpSession`` keeps one connection for several commands and the asynchronous events they cause: hot-unplug
needs that, because ``device_del`` only *asks* the guest to let go and QEMU reports the end with a
``DEVICE_DELETED`` event on the connection that is open then (QEMU's QMP socket takes one client at a time).
Events that arrive while a command waits for its return are kept, so an early event is never lost.
``qmp_command`` is one command on a connection of its own ("quit", "system_powerdown").
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from host.errors import BackendError


def qmp_command(socket_path: Path, command: str, arguments: dict[str, Any] | None = None,
                timeout: float = 5.0) -> dict[str, Any]:
    """Connect, negotiate capabilities, run one command and return its response (``{"return": ...}``)."""
    with QmpSession(socket_path, timeout) as qmp:
        return {"return": qmp.execute(command, arguments)}


class QmpError(BackendError):
    """QEMU answered a command with an error; ``qmp_class`` is QMP's error class (e.g. DeviceNotFound)."""

    def __init__(self, message: str, qmp_class: str = "") -> None:
        super().__init__(message)
        self.qmp_class = qmp_class


class QmpSession:
    """``with QmpSession(path) as qmp: qmp.execute(...); qmp.wait_event(...)``."""

    def __init__(self, socket_path: Path, timeout: float = 10.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._sock: socket.socket | None = None
        self._buffer = b""

    def __enter__(self) -> QmpSession:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(self.timeout)
            sock.connect(str(self.socket_path))
        except OSError as e:
            sock.close()
            raise BackendError(f"QMP {self.socket_path}: cannot connect (is QEMU running?)") from e
        self._sock = sock
        try:
            greeting = self._message(time.monotonic() + self.timeout)
            if greeting is None or "QMP" not in greeting:
                raise BackendError(f"QMP {self.socket_path}: no greeting, got {greeting!r}")
            self.execute("qmp_capabilities")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _message(self, deadline: float) -> dict[str, Any] | None:
        """The next message, or None when ``deadline`` passes first."""
        assert self._sock is not None
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as e:
                raise BackendError(f"QMP {self.socket_path}: connection failed") from e
            if not chunk:
                raise BackendError(f"QMP {self.socket_path}: QEMU closed the connection")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError as e:
            raise BackendError(f"QMP {self.socket_path}: not JSON: {line[:200]!r}") from e
        if not isinstance(message, dict):
            raise BackendError(f"QMP {self.socket_path}: not an object: {line[:200]!r}")
        return message

    def execute(self, command: str, arguments: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        """Run one command; its ``return`` value, or QmpError with QEMU's description."""
        if self._sock is None:
            raise BackendError(f"QMP {self.socket_path}: not connected")
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as e:
            raise BackendError(f"QMP {command} via {self.socket_path}: send failed") from e
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            message = self._message(deadline)
            if message is None:
                raise BackendError(f"QMP {command} via {self.socket_path}: no answer in time")
            if "event" in message:
                self.events.append(message)
            elif "error" in message:
                error = message["error"]
                raise QmpError(f"QMP {command}: {error.get('desc', error)}", str(error.get("class", "")))
            elif "return" in message:
                return message["return"]

    def wait_event(self, name: str, match: Callable[[dict[str, Any]], bool] = lambda data: True,
                   timeout: float = 30.0) -> dict[str, Any]:
        """The first event ``name`` whose ``data`` satisfies ``match`` (already received ones count)."""
        deadline = time.monotonic() + timeout
        while True:
            for index, event in enumerate(self.events):
                if event.get("event") == name and match(event.get("data") or {}):
                    return self.events.pop(index)
            if time.monotonic() > deadline:
                raise BackendError(f"QMP {self.socket_path}: no {name} event within {timeout:.0f} s")
            message = self._message(deadline)
            if message is not None and "event" in message:
                self.events.append(message)
