"""Task events to containerd: published in order, on their own thread, never blocking a Task call.

containerd 1.6 accepts a shim's events two ways, and both are implemented:

* `TtrpcForwarder` — `containerd.services.events.ttrpc.v1.Events/Forward` on containerd's ttrpc socket (the
  `TTRPC_ADDRESS` containerd sets in the shim's environment). This is what containerd 1.6's own shim
  library does, one call per event; it is the default.
* `PublishBinary` — `<publish-binary> --address <containerd grpc address> publish --topic T --namespace N`
  with the event as a protobuf `Any` on stdin (the `-publish-binary` containerd names on the shim's
  command line, i.e. containerd itself). Used when containerd gave no `TTRPC_ADDRESS`.

An `Any`'s type_url is the message's full protobuf name without a prefix (`containerd.events.TaskExit`),
as containerd's typeurl package writes and expects it. A failed delivery is retried (1 s, 2 s, ... up to
`retries` times) before the next event is sent, so the order containerd sees is the order of the calls.
"""

from __future__ import annotations

import collections
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.message import Message

from shim.protos import events_pb2

log = logging.getLogger("shim.events")

TOPICS: dict[type[Message], str] = {
    events_pb2.TaskCreate: "/tasks/create",
    events_pb2.TaskStart: "/tasks/start",
    events_pb2.TaskOOM: "/tasks/oom",
    events_pb2.TaskExit: "/tasks/exit",
    events_pb2.TaskDelete: "/tasks/delete",
    events_pb2.TaskExecAdded: "/tasks/exec-added",
    events_pb2.TaskExecStarted: "/tasks/exec-started",
    events_pb2.TaskPaused: "/tasks/paused",
    events_pb2.TaskResumed: "/tasks/resumed",
    events_pb2.TaskCheckpointed: "/tasks/checkpointed",
}


def topic_of(event: Message) -> str:
    try:
        return TOPICS[type(event)]
    except KeyError:
        raise ValueError(f"no topic for event type {type(event).__name__}") from None


def to_any(message: Message) -> any_pb2.Any:
    """Pack as containerd's typeurl does: type_url = the full message name, no URL prefix."""
    return any_pb2.Any(type_url=message.DESCRIPTOR.full_name, value=message.SerializeToString())


def timestamp(when: datetime | None = None) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime((when or datetime.now(UTC)).astimezone(UTC))
    return ts


class EventSink(Protocol):
    """What the Task service publishes to."""

    def publish(self, event: Message) -> None:
        ...


class Transport(Protocol):
    def send(self, namespace: str, topic: str, event: any_pb2.Any, when: datetime) -> None:
        """Deliver one event or raise."""
        ...

    def close(self) -> None:
        ...


class TtrpcForwarder:
    """Events.Forward on containerd's ttrpc socket; reconnects when the connection was lost."""

    SERVICE = "containerd.services.events.ttrpc.v1.Events"

    def __init__(self, address: str, timeout: float = 5.0) -> None:
        self.address = address
        self.timeout = timeout
        self._client = None

    def send(self, namespace: str, topic: str, event: any_pb2.Any, when: datetime) -> None:
        from google.protobuf import empty_pb2

        from shim.protos import events_service_pb2
        from shim.ttrpc.client import Client

        request = events_service_pb2.ForwardRequest(envelope=events_service_pb2.Envelope(
            timestamp=timestamp(when), namespace=namespace, topic=topic, event=event))
        if self._client is None or self._client.closed:
            self._client = Client.connect(self.address, timeout=self.timeout)
        self._client.call(self.SERVICE, "Forward", request, empty_pb2.Empty, timeout=self.timeout,
                          metadata={"containerd-namespace-ttrpc": namespace})

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class PublishBinary:
    """`containerd --address A publish --topic T --namespace N` with the Any on stdin."""

    def __init__(self, binary: str, address: str, timeout: float = 10.0) -> None:
        self.binary = binary
        self.address = address
        self.timeout = timeout

    def command(self, namespace: str, topic: str) -> list[str]:
        return [self.binary, "--address", self.address, "publish", "--topic", topic, "--namespace", namespace]

    def send(self, namespace: str, topic: str, event: any_pb2.Any, when: datetime) -> None:
        result = subprocess.run(self.command(namespace, topic), input=event.SerializeToString(),
                                capture_output=True, timeout=self.timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{self.binary} publish {topic}: exit {result.returncode}: "
                               f"{result.stderr.decode(errors='replace').strip()}")

    def close(self) -> None:
        pass


class Publisher:
    """Queues events and sends them one by one, in order, from a thread of its own."""

    def __init__(self, transport: Transport, namespace: str, retries: int = 5,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.transport = transport
        self.namespace = namespace
        self.retries = retries
        self._sleep = sleep
        self._queue: collections.deque[tuple[str, any_pb2.Any, datetime]] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False
        self.sent = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._thread.start()

    def publish(self, event: Message) -> None:
        item = (topic_of(event), to_any(event), datetime.now(UTC))
        with self._cond:
            if self._closing:
                log.error("event %s published after close: dropped", item[0])
                self.dropped += 1
                return
            self._queue.append(item)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                item = self._queue.popleft()
                self._busy = True
            try:
                self._deliver(*item)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _deliver(self, topic: str, event: any_pb2.Any, when: datetime) -> None:
        for attempt in range(self.retries + 1):
            try:
                self.transport.send(self.namespace, topic, event, when)
                self.sent += 1
                return
            except Exception as e:
                if attempt == self.retries:
                    log.error("event %s (%s) dropped after %d attempts: %s", topic, event.type_url, attempt + 1, e)
                    self.dropped += 1
                    return
                log.warning("event %s: delivery failed (%s); retrying", topic, e)
                self._sleep(float(attempt + 1))

    def flush(self, timeout: float) -> bool:
        """Wait until every queued event was delivered (or dropped)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (up to `timeout` s), then stop."""
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self.transport.close()
