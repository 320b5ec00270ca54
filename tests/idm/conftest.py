"""A zone IDM server running on PID 1's own loop (zoneinit.supervisor) in a thread, with a client connected
over a socketpair; ``exec`` is PID 1's real exec service, its processes local instead of in a container."""

from __future__ import annotations

import os
import termios
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from zone_fakes import LoopThread

from idm.client import IdmClient
from idm.server import IdmServer
from idm.transport import socket_pair
from zoneinit.idm.errors import translated
from zoneinit.idm.execs import ExecProcess, ExecRequest, ExecService


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
    """PID 1's exec service with a local spawn (posix_spawn with pipes or a pty); exits reaped through a pidfd."""
    sup = loop.supervisor

    def watch_exit(pid: int, exited: Callable[[int], None]) -> None:
        pidfd = os.pidfd_open(pid)

        def reap(_fd: int) -> None:
            sup.remove_reader(pidfd)
            os.close(pidfd)
            exited(os.waitpid(pid, 0)[1])

        sup.add_reader(pidfd, reap)

    def spawn(request: ExecRequest) -> ExecProcess:
        cmd = request.command
        env = dict(os.environ) | dict(e.split("=", 1) for e in request.env)
        if request.tty:
            master, slave = os.openpty()
            if request.size:  # the size a runtime gives the pty it makes (OCI process.consoleSize)
                termios.tcsetwinsize(slave, request.size)
            actions = [(os.POSIX_SPAWN_DUP2, slave, n) for n in (0, 1, 2)]
            try:
                pid = os.posix_spawnp(cmd[0], cmd, env, file_actions=actions, setsid=True)
            finally:
                os.close(slave)
            return ExecProcess(pid, {master: "stdout"}, os.dup(master))
        (r0, w0), (r1, w1), (r2, w2) = os.pipe(), os.pipe(), os.pipe()
        actions = [(os.POSIX_SPAWN_DUP2, r0, 0), (os.POSIX_SPAWN_DUP2, w1, 1), (os.POSIX_SPAWN_DUP2, w2, 2)]
        try:
            pid = os.posix_spawnp(cmd[0], cmd, env, file_actions=actions)
        except BaseException:
            for fd in (w0, r1, r2):
                os.close(fd)
            raise
        finally:
            for fd in (r0, w1, w2):
                os.close(fd)
        return ExecProcess(pid, {r1: "stdout", r2: "stderr"}, w0)

    service = ExecService(sup, spawn, watch_exit)
    for name, handler in service.handlers().items():
        loop.server.register(name, translated(name, handler, sup.log.info))
    return service


@pytest.fixture
def exec_service() -> Callable[[LoopThread], ExecService]:
    """exec_service(loop): register exec handlers that spawn real local processes."""
    return install_exec
