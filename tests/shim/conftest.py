"""Fixtures for the shim's tests: a Task service served over a real ttrpc connection, bundles, FIFOs."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from shim_backend_double import LocalBackend

from shim.events import topic_of
from shim.protos import shim_pb2
from shim.task_service import TaskService
from shim.ttrpc.client import Client
from shim.ttrpc.server import Server

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


@pytest.fixture
def shim() -> Iterator[ShimUnderTest]:
    backend = LocalBackend()
    sink = RecordingSink()
    shutdown = threading.Event()
    service = TaskService(backend, sink, "testns", on_shutdown=shutdown.set, exit_output_timeout=3.0,
                          stop_timeout=2.0)
    server = Server()
    server.register_service(shim_pb2.DESCRIPTOR.services_by_name["Task"], service)
    a, b = socket.socketpair()
    server.serve_connection(a)
    client = Client(b)
    yield ShimUnderTest(backend, sink, service, client, shutdown)
    client.close()
    server.close()
    backend._kill_everything()


@pytest.fixture
def make_bundle(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, args: list[str] | None = None, annotations: dict[str, str] | None = None,
             terminal: bool = False) -> Path:
        bundle = tmp_path / name
        bundle.mkdir()
        spec = {"ociVersion": "1.0.2", "process": {"args": args or ["true"], "env": ["A=1"], "cwd": "/",
                                                    "terminal": terminal},
                "root": {"path": "rootfs"}, "annotations": annotations or {}}
        (bundle / "config.json").write_text(json.dumps(spec))
        return bundle

    return make


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
