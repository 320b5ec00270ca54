"""What the shim's tests share besides fixtures: a recording event sink, the Task service under test, bundles'
annotations, containerd's side of an output FIFO and a `binary://` logging binary. (Imported by name: a
`from conftest import ...` is ambiguous once another test directory has a conftest too.)"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from shim_backend_double import LocalBackend

from shim.events import topic_of
from shim.protos import shim_pb2
from shim.task_service import TaskService
from shim.ttrpc.client import Client

TASK = "containerd.task.v2.Task"

# a `binary://` logging binary for the tests (containerd's contract: ready by closing fd 5, stdout on fd 3,
# stderr on fd 4, CONTAINER_ID/CONTAINER_NAMESPACE in its environment)
LOGGER = """#!/bin/sh
# a logging binary: ready, then copy stdout (fd 3) and stderr (fd 4) into the directory given as "dir"
[ "$1" = dir ] || exit 2
exec 5>&-
cat <&3 > "$2/$CONTAINER_NAMESPACE-$CONTAINER_ID.out" &
cat <&4 > "$2/$CONTAINER_NAMESPACE-$CONTAINER_ID.err"
wait
"""


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._cond = threading.Condition()

    def publish(self, event: Any) -> None:
        with self._cond:
            self.events.append((topic_of(event), event))
            self._cond.notify_all()

    def topics(self) -> list[str]:
        with self._cond:
            return [topic for topic, _ in self.events]

    def wait_for(self, topic: str, count: int = 1, timeout: float = 10.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [event for t, event in self.events if t == topic]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {count} x {topic} within {timeout}s; got {self.topics()}")
                self._cond.wait(left)


class ShimUnderTest:
    def __init__(self, backend: LocalBackend, sink: RecordingSink, service: TaskService, client: Client,
                 shutdown: threading.Event) -> None:
        self.backend, self.sink, self.service, self.client, self.shutdown = backend, sink, service, client, shutdown

    def call(self, method: str, request: Any, timeout: float = 15.0) -> Any:
        descriptor = shim_pb2.DESCRIPTOR.services_by_name["Task"].methods_by_name[method]
        from google.protobuf import message_factory

        response_type = message_factory.GetMessageClass(descriptor.output_type)
        return self.client.call(TASK, method, request, response_type, timeout=timeout)


def sandbox_annotations(sandbox_id: str) -> dict[str, str]:
    return {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": sandbox_id}


def container_annotations(sandbox_id: str) -> dict[str, str]:
    return {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": sandbox_id}


class FifoReader:
    """containerd's side of an output FIFO: opened before the shim, read on a thread."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = str(path)
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        os.set_blocking(self.fd, True)
        self.data = bytearray()
        self.eof = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                break
            if not chunk:
                # no writer (yet, or any more): EOF counts once a writer has been seen
                if self.data:
                    break
                time.sleep(0.02)
                continue
            self.data += chunk
        self.eof.set()

    def wait_for(self, text: bytes, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while text not in self.data and time.monotonic() < deadline:
            time.sleep(0.02)
        assert text in self.data, f"{text!r} not in {bytes(self.data)!r}"
        return bytes(self.data)
