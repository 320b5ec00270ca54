"""Test helpers: a fork/exec fake of styrolite.api.Runtime and a pumped IDM client over a socketpair.

The fake runs each container's args as a plain child process (no isolation) so the agent, the reaper,
the pipes and the IDM streams are exercised for real, in-process, without root.
"""

from __future__ import annotations

import fcntl
import json
import os
import termios
import time
from types import SimpleNamespace

from idm import messages as m
from idm.server import IdmServer
from idm.transport import socket_pair
from styrolite.container.stdio import Stdio
from styrolite.exitstatus import exit_code_of
from zoneinit.console import ConsoleLog
from zoneinit.containers.bundle import build_config
from zoneinit.containers.manager import ContainerManager
from zoneinit.idm.handlers import ZoneHandlers
from zoneinit.supervisor.loop import Supervisor


def _spawn(args, env, stdio: Stdio | None, terminal: bool, gate: int | None):
    master = None
    if terminal:
        master, slave = os.openpty()
    pid = os.fork()
    if pid == 0:  # child
        try:
            if terminal:
                os.setsid()
                fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
                for target in (0, 1, 2):
                    os.dup2(slave, target)
            elif stdio is not None:
                stdio.install()
            if gate is not None:
                os.read(gate, 1)
            os.execvpe(args[0], args, dict(e.split("=", 1) for e in env))
        finally:
            os._exit(127)
    if terminal:
        os.close(slave)
    return pid, master


class FakeRuntime:
    def __init__(self):
        self.pids: dict[str, int] = {}
        self.gates: dict[str, int] = {}
        self.owners: dict[int, str] = {}
        self.codes: dict[str, int] = {}
        self.calls: list[tuple] = []
        self.record_error: Exception | None = None   # what child_exited raises, if set
        self.delete_error: Exception | None = None   # what delete raises, if set

    def create(self, cid, bundle, stdio=None, terminal=False):
        with open(os.path.join(bundle, "config.json")) as f:
            process = json.load(f)["process"]
        gate_r, gate_w = os.pipe()
        pid, master = _spawn(process["args"], process["env"], stdio, terminal, gate_r)
        os.close(gate_r)
        self.pids[cid], self.gates[cid], self.owners[pid] = pid, gate_w, cid
        self.calls.append(("create", cid))
        return SimpleNamespace(state=SimpleNamespace(pid=pid), console_fd=master)

    def start(self, cid):
        self.calls.append(("start", cid))
        os.write(self.gates[cid], b"go")
        os.close(self.gates.pop(cid))

    def signal(self, cid, signum, all_processes=False):
        self.calls.append(("signal", cid, signum, all_processes))
        os.kill(self.pids[cid], signum)

    def exec(self, cid, process, stdio=None, terminal=False):
        self.calls.append(("exec", cid, process.args, process.terminal))
        pid, master = _spawn(process.args, process.env, stdio, terminal, None)
        self.owners[pid] = f"{cid}/exec"
        return SimpleNamespace(pid=pid, console_fd=master)

    def child_exited(self, pid, status):
        owner = self.owners.pop(pid, None)
        if owner and not owner.endswith("/exec"):
            self.codes[owner] = exit_code_of(status)
        if self.record_error is not None:  # like styrolite's: the code is known, its state file not written
            raise self.record_error
        return owner

    def exit_code(self, cid):
        return self.codes.get(cid)

    def stats(self, cid):
        return {"memory": {"usage": 4096}, "pids": {"current": 1}}

    def delete(self, cid, force=False):
        self.calls.append(("delete", cid, force))
        if self.delete_error is not None:
            raise self.delete_error


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
        self.runtime = FakeRuntime()
        self.tmp = tmp_path
        self.bundles: dict[str, dict] = {}   # container id -> the config.json written for it
        self.shutdowns: list[tuple[str, str]] = []
        self.cleanup_error: Exception | None = None   # what removing a bundle raises, if set
        self.containers = ContainerManager(self.sup, prepare_bundle=self._bundle, remove_bundle=self._remove_bundle,
                                           runtime_factory=lambda: self.runtime, emit=self.server.emit, log=self.log)
        ZoneHandlers(self.server, self.sup, self.containers, info=lambda: {"zone": "test", "ready": True},
                     request_shutdown=lambda action, reason: self.shutdowns.append((action, reason))).register()
        self.decoder = m.MessageDecoder()
        self.inbox: list[m.Message] = []
        self.next_id = 0

    def _bundle(self, plan):
        bundle = self.tmp / "bundles" / plan.id
        (bundle / "rootfs").mkdir(parents=True)
        self.bundles[plan.id] = build_config(plan)
        (bundle / "config.json").write_text(json.dumps(self.bundles[plan.id]))
        return str(bundle)

    def _remove_bundle(self, cid):
        if self.cleanup_error is not None:
            raise self.cleanup_error

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
