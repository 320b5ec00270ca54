"""A zone IDM server running its own loop in a thread, with a client connected over a socketpair."""

from __future__ import annotations

import os
import selectors
import termios
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from exec_service import ExecProcess, ExecService

from idm.client import IdmClient
from idm.server import IdmServer, run_until
from idm.transport import socket_pair


class LoopThread:
    """Runs ``server`` on a thread the way PID 1 runs it on its loop; ``on_loop`` runs code there."""

    def __init__(self, server: IdmServer) -> None:
        self.server = server
        self._stop = threading.Event()
        self.thread = threading.Thread(target=run_until, args=(server, self._stop.is_set), daemon=True)

    def start(self) -> LoopThread:
        self.thread.start()
        return self

    def on_loop(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = fn()
            except BaseException as e:
                box["error"] = e
            done.set()

        self.server.call_soon_threadsafe(run)
        assert done.wait(timeout), "loop did not run the call"
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)
        self.server.close()


@pytest.fixture(scope="session")
def loop_thread() -> type[LoopThread]:
    """The LoopThread class, for fixtures with a wider scope than ``loop``."""
    return LoopThread


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    server = IdmServer(info=lambda: {"zone": "test-zone", "boot": {"mounts": 0.01, "idm": 0.02}})
    lt = LoopThread(server)
    yield lt
    lt.stop()


@pytest.fixture
def connect(loop: LoopThread) -> Iterator[Callable[..., IdmClient]]:
    """connect(**client_kwargs): a new socketpair session served by the loop, with a client on it."""
    clients: list[IdmClient] = []

    def make(**kwargs: Any) -> IdmClient:
        zone_end, host_end = socket_pair()
        if loop.thread.is_alive():
            loop.on_loop(lambda: loop.server.add_transport(zone_end, name="test", persistent=False))
        else:
            loop.server.add_transport(zone_end, name="test", persistent=False)
            loop.start()
        client = IdmClient(host_end, **kwargs)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


def install_exec(loop: LoopThread) -> ExecService:
    """ExecService with a test spawn: posix_spawn with pipes or a pty; exits reaped through a pidfd."""
    server = loop.server
    service: ExecService

    def reap(pid: int, pidfd: int) -> None:
        server.unwatch(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        service.process_exited(pid, status)

    def spawn(payload: dict[str, Any]) -> ExecProcess:
        cmd = payload["command"]
        env = dict(os.environ) | (payload.get("env") or {})
        if payload.get("tty"):
            master, slave = os.openpty()
            if payload.get("rows"):
                termios.tcsetwinsize(slave, (payload["rows"], payload["cols"]))
            actions = [(os.POSIX_SPAWN_DUP2, slave, n) for n in (0, 1, 2)]
            pid = os.posix_spawnp(cmd[0], cmd, env, file_actions=actions, setsid=True)
            os.close(slave)
            proc = ExecProcess(pid, tty=master)
        else:
            (r0, w0), (r1, w1), (r2, w2) = os.pipe(), os.pipe(), os.pipe()
            actions = [(os.POSIX_SPAWN_DUP2, r0, 0), (os.POSIX_SPAWN_DUP2, w1, 1), (os.POSIX_SPAWN_DUP2, w2, 2)]
            pid = os.posix_spawnp(cmd[0], cmd, env, file_actions=actions)
            for fd in (r0, w1, w2):
                os.close(fd)
            proc = ExecProcess(pid, stdin=w0, stdout=r1, stderr=r2)
        pidfd = os.pidfd_open(pid)
        server.watch(pidfd, selectors.EVENT_READ, lambda _mask: reap(pid, pidfd))
        return proc

    service = ExecService(server, spawn)
    return service



@pytest.fixture
def exec_service() -> Callable[[LoopThread], ExecService]:
    """exec_service(loop): register exec handlers that spawn real local processes."""
    return install_exec
