"""Helpers for tests/security: security settings change the calling process for good, so each is
applied in a forked child.

``forked(fn)`` runs ``fn`` in a child, sends its JSON-able return value (or its error, flattened with
``describe``) back through a pipe, and reports how the child ended (exit code or signal).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from styrolite.errors import describe


@dataclass
class ChildResult:
    value: Any = None
    error: str | None = None
    error_type: str | None = None
    exit_code: int | None = None
    signal: int | None = None

    def ok(self) -> Any:
        """The child's return value; fails the test with the child's error otherwise."""
        assert self.signal is None, f"child killed by {signal.Signals(self.signal).name}"
        assert self.error is None, f"child raised {self.error_type}: {self.error}"
        return self.value


def status_fields(pid: int | str = "self") -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {key: value.strip() for key, _, value in (line.partition(":") for line in f)}


def run_forked(fn: Callable[[], Any]) -> ChildResult:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.close(read_end)
            try:
                payload = {"value": fn()}
            except BaseException as e:
                payload = {"error": describe(e), "error_type": type(e).__name__}
                code = 1
            data = json.dumps(payload).encode()
            while data:
                data = data[os.write(write_end, data):]
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    with os.fdopen(read_end, "rb") as reader:
        while chunk := reader.read(65536):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    result = ChildResult(**json.loads(b"".join(chunks))) if chunks else ChildResult()
    if os.WIFSIGNALED(status):
        result.signal = os.WTERMSIG(status)
    else:
        result.exit_code = os.WEXITSTATUS(status)
    return result
