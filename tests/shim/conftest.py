"""Fixtures for the shim's tests: a Task service served over a real ttrpc connection, bundles, FIFOs."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from shim_backend_double import LocalBackend
from shimtest import RecordingSink, ShimUnderTest

from shim.protos import shim_pb2
from shim.task_service import TaskService
from shim.ttrpc.client import Client
from shim.ttrpc.server import Server


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
