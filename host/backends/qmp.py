"""A minimal QMP client: enough to ask QEMU to power the guest off or to quit.

QMP is line-delimited JSON over the unix socket QEMU listens on (``-qmp unix:...,server=on,wait=off``).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from host.errors import BackendError


def qmp_command(socket_path: Path, command: str, arguments: dict[str, Any] | None = None,
                timeout: float = 5.0) -> dict[str, Any]:
    """Connect, negotiate capabilities, run one command and return its response (events skipped)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            stream = sock.makefile("rwb")
            _read_reply(stream, want_greeting=True)
            _send(stream, {"execute": "qmp_capabilities"})
            _read_reply(stream)
            message: dict[str, Any] = {"execute": command}
            if arguments:
                message["arguments"] = arguments
            _send(stream, message)
            return _read_reply(stream)
    except (OSError, ValueError) as e:
        raise BackendError(f"QMP {command} via {socket_path}") from e


def _send(stream: Any, message: dict[str, Any]) -> None:
    stream.write(json.dumps(message).encode() + b"\n")
    stream.flush()


def _read_reply(stream: Any, want_greeting: bool = False) -> dict[str, Any]:
    while True:
        line = stream.readline()
        if not line:
            raise BackendError("QMP connection closed")
        reply = json.loads(line)
        if want_greeting and "QMP" in reply:
            return reply
        if "error" in reply:
            raise BackendError(f"QMP error: {reply['error'].get('desc', reply['error'])}")
        if "return" in reply:
            return reply
        # asynchronous events ({"event": ...}) are skipped
