"""Event publishing: order, retries, never blocking the caller; the ttrpc forwarder's envelope; metrics."""

from __future__ import annotations

import threading
from datetime import datetime

import pytest
from google.protobuf import any_pb2, empty_pb2

from shim.events import PublishBinary, Publisher, TtrpcForwarder, to_any, topic_of
from shim.metrics import metrics_any, to_v1
from shim.protos import cgroups_v1_pb2, cgroups_v2_pb2, events_pb2, events_service_pb2
from shim.ttrpc.server import CallContext, Server, listen_unix
from shim.zone_backend import ContainerStats


class FlakyTransport:
    def __init__(self, failures: int = 0, gate: threading.Event | None = None) -> None:
        self.failures = failures
        self.gate = gate
        self.sent: list[tuple[str, str, any_pb2.Any]] = []

    def send(self, namespace: str, topic: str, event: any_pb2.Any, when: datetime) -> None:
        if self.gate is not None:
            self.gate.wait(10)
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError("containerd is restarting")
        self.sent.append((namespace, topic, event))

    def close(self) -> None:
        pass


def test_any_and_topics_follow_containerds_typeurl() -> None:
    packed = to_any(events_pb2.TaskExit(container_id="c", exit_status=3))
    assert packed.type_url == "containerd.events.TaskExit"
    assert events_pb2.TaskExit.FromString(packed.value).exit_status == 3
    assert topic_of(events_pb2.TaskExecStarted()) == "/tasks/exec-started"
    with pytest.raises(ValueError, match="no topic"):
        topic_of(events_pb2.TaskIO())


def test_publish_never_blocks_and_keeps_order() -> None:
    gate = threading.Event()
    transport = FlakyTransport(gate=gate)
    publisher = Publisher(transport, "ns")
    for i in range(50):  # the transport is stuck: publish still returns at once
        publisher.publish(events_pb2.TaskStart(container_id=str(i)))
    assert transport.sent == []
    gate.set()
    assert publisher.flush(10)
    assert [events_pb2.TaskStart.FromString(e.value).container_id for _, _, e in transport.sent] == \
        [str(i) for i in range(50)]
    publisher.close()


def test_failed_delivery_is_retried_in_order_then_dropped() -> None:
    sleeps: list[float] = []
    transport = FlakyTransport(failures=2)
    publisher = Publisher(transport, "ns", retries=3, sleep=sleeps.append)
    publisher.publish(events_pb2.TaskExit(container_id="first"))
    publisher.publish(events_pb2.TaskDelete(container_id="second"))
    assert publisher.flush(10)
    assert [topic for _, topic, _ in transport.sent] == ["/tasks/exit", "/tasks/delete"]
    assert sleeps == [1.0, 2.0] and publisher.sent == 2
    transport.failures = 10
    publisher.publish(events_pb2.TaskOOM(container_id="lost"))
    assert publisher.flush(10)
    assert publisher.dropped == 1
    publisher.close()
    publisher.publish(events_pb2.TaskOOM(container_id="late"))
    assert publisher.dropped == 2


def test_ttrpc_forwarder_envelope(tmp_path) -> None:
    received: list[tuple[events_service_pb2.ForwardRequest, CallContext]] = []

    class Events:
        def Forward(self, request: events_service_pb2.ForwardRequest, ctx: CallContext) -> empty_pb2.Empty:
            received.append((request, ctx))
            return empty_pb2.Empty()

    server = Server()
    server.register_service(events_service_pb2.DESCRIPTOR.services_by_name["Events"], Events())
    path = str(tmp_path / "containerd.sock.ttrpc")
    server.serve_in_thread(listen_unix(path))
    publisher = Publisher(TtrpcForwarder("unix://" + path), "k8s.io")
    try:
        publisher.publish(events_pb2.TaskExit(container_id="c1", id="c1", exit_status=137))
        assert publisher.flush(10)
        server.close()  # containerd restarts: the forwarder reconnects
        server = Server()
        server.register_service(events_service_pb2.DESCRIPTOR.services_by_name["Events"], Events())
        (tmp_path / "containerd.sock.ttrpc").unlink()
        server.serve_in_thread(listen_unix(path))
        publisher.publish(events_pb2.TaskDelete(container_id="c1"))
        assert publisher.flush(20)
    finally:
        publisher.close()
        server.close()
    assert [r.envelope.topic for r, _ in received] == ["/tasks/exit", "/tasks/delete"]
    envelope = received[0][0].envelope
    assert (envelope.namespace, envelope.event.type_url) == ("k8s.io", "containerd.events.TaskExit")
    assert envelope.timestamp.seconds > 0
    assert received[0][1].metadata["containerd-namespace-ttrpc"] == ["k8s.io"]


def test_publish_binary_command_line() -> None:
    binary = PublishBinary("/usr/bin/containerd", "/run/containerd/containerd.sock")
    assert binary.command("k8s.io", "/tasks/exit") == ["/usr/bin/containerd", "--address",
                                                       "/run/containerd/containerd.sock", "publish", "--topic",
                                                       "/tasks/exit", "--namespace", "k8s.io"]


def test_publish_binary_failure_is_an_error(tmp_path) -> None:
    script = tmp_path / "fake-containerd"
    script.write_text("#!/bin/sh\ncat >/dev/null; echo 'connection refused' >&2; exit 1\n")
    script.chmod(0o755)
    with pytest.raises(RuntimeError, match="exit 1: connection refused"):
        PublishBinary(str(script), "/nowhere").send("ns", "/tasks/oom", to_any(events_pb2.TaskOOM()), datetime.now())


def test_metrics_v2_and_v1() -> None:
    stats = ContainerStats(cpu_usage_usec=1500, cpu_user_usec=1000, cpu_system_usec=500, memory_usage=4096,
                           memory_limit=8192, memory_anon=1024, memory_inactive_file=512, memory_pgfault=7,
                           pids_current=3, pids_limit=100, io_read_bytes=10, io_write_bytes=20)
    packed = metrics_any(stats)
    assert packed.type_url == "io.containerd.cgroups.v2.Metrics"
    v2 = cgroups_v2_pb2.Metrics.FromString(packed.value)
    assert (v2.cpu.usage_usec, v2.memory.usage, v2.memory.inactive_file, v2.pids.current) == (1500, 4096, 512, 3)
    assert v2.io.usage[0].wbytes == 20
    stats.cgroup_version = 1
    packed = metrics_any(stats)
    assert packed.type_url == "io.containerd.cgroups.v1.Metrics"
    v1 = cgroups_v1_pb2.Metrics.FromString(packed.value)
    assert v1.cpu.usage.total == 1_500_000  # nanoseconds in v1
    assert (v1.memory.usage.usage, v1.memory.total_inactive_file, v1.memory.rss) == (4096, 512, 1024)
    assert to_v1(ContainerStats()).memory.usage.usage == 0  # unknown values are zero, never negative
