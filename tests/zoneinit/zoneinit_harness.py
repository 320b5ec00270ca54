"""Test helpers: PID 1's container side with a fork/exec fake runtime (tests/zone_fakes.py) and a pumped IDM
client over a socketpair: the agent, the reaper, the pipes and the IDM streams are exercised for real,
in-process, without root.
"""

from __future__ import annotations

import time

from zone_fakes import FakeRuntime, ZoneSide

from idm import messages as m
from idm.server import IdmServer
from idm.transport import socket_pair
from zoneinit.console import ConsoleLog
from zoneinit.supervisor.loop import Supervisor

__all__ = ["FakeRuntime", "Harness", "RemoteError"]


class RemoteError(Exception):
    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code


class Harness:
    """The zone side (supervisor + IDM server + agent) and a host end, pumped by the test's thread."""

    def __init__(self, tmp_path):
        self.log = ConsoleLog(fd=-1)
        self.sup = Supervisor(self.log)
        self.server = IdmServer(info=lambda: {"zone": "test"})
        self.log.event_sink = self.server.emit   # errors reach the host as zone.error, as in PID 1
        self.sup.add_reader(self.server.fileno(), lambda _fd: self.server.service())
        self.sup.timed_services.append((self.server.timeout, self.server.service))
        zone_end, self.host = socket_pair()
        self.server.add_transport(zone_end, name="host", persistent=False)
        self.tmp = tmp_path
        self.side = ZoneSide(tmp_path, self.sup, self.server, self.log, self.server.emit)
        self.runtime = self.side.runtime
        self.containers = self.side.containers
        self.bundles = self.side.bundles          # container id -> the config.json written for it
        self.shutdowns = self.side.shutdowns
        self.decoder = m.MessageDecoder()
        self.inbox: list[m.Message] = []
        self.next_id = 0

    @property
    def cleanup_error(self) -> Exception | None:
        return self.side.cleanup_error

    @cleanup_error.setter
    def cleanup_error(self, error: Exception | None) -> None:
        self.side.cleanup_error = error

    def send(self, msg: m.Message) -> None:
        data = memoryview(m.encode(msg))
        while data:
            n = self.host.write(data)
            data = data[n:]
            if not n:
                self.pump_once()

    def pump_once(self) -> None:
        self.sup.run_once(0.01)
        self.sup.reap()
        while True:
            data = self.host.read(65536)
            if not data:
                break
            for item in self.decoder.feed(data):
                assert isinstance(item, m.Message), item
                self.inbox.append(item)

    def pump(self, until, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while True:
            result = until()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met; inbox: {self.inbox[-5:]}")
            self.pump_once()

    def take(self, predicate):
        for i, msg in enumerate(self.inbox):
            if predicate(msg):
                return self.inbox.pop(i)
        return None

    def request(self, type_, payload=None) -> int:
        self.next_id += 1
        self.send(m.request(self.next_id, type_, payload))
        return self.next_id

    def reply_to(self, msg_id, timeout=20.0):
        msg = self.pump(lambda: self.take(lambda x: x.id == msg_id and x.kind in (m.RESPONSE, m.ERROR)), timeout)
        if msg.kind == m.ERROR:
            raise RemoteError(msg.payload["code"], msg.payload["message"])
        return msg.payload

    def call(self, type_, payload=None, timeout=20.0):
        return self.reply_to(self.request(type_, payload), timeout)

    def event(self, type_, timeout=20.0):
        return self.pump(lambda: self.take(lambda x: x.kind == m.EVENT and x.type == type_), timeout)

    def stream_until_close(self, sid, grant=True, timeout=20.0):
        """Collect a stream's data per channel until its final close; grants credit as it reads."""
        out: dict[str, bytearray] = {}
        while True:
            msg = self.pump(lambda: self.take(lambda x: x.id == sid and x.kind in (m.DATA, m.CLOSE)), timeout)
            if msg.kind == m.DATA:
                out.setdefault(msg.channel, bytearray()).extend(msg.payload)
                if grant:
                    self.send(m.Message(m.CREDIT, sid, payload=len(msg.payload), channel=msg.channel))
            elif not msg.channel:
                return {k: bytes(v) for k, v in out.items()}, msg.payload

    def close(self):
        self.server.close()
