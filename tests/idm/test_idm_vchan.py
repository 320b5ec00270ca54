"""The vchan transport's Python side over a stand-in for libxenvchan (no Xen on this machine):
zone serves, host connects, the whole protocol runs, the host leaves and a new host is served after
the ring is re-armed. Plus the real library's failure path: a typed error, no crash."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

from idm.client import IdmClient
from idm.errors import ConnectionClosed, IdmError, IdmTimeout
from idm.vchan import CLOSED, OPEN, WAITING, VchanTransport, connect_vchan_client, load_library


class _Chan:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.to_server = bytearray()
        self.to_client = bytearray()
        self.cli_live = WAITING
        self.srv_live = OPEN
        self.efd = {"server": os.eventfd(0, os.EFD_NONBLOCK), "client": os.eventfd(0, os.EFD_NONBLOCK)}


class FakeVchanLib:
    """libxenvchan's calls, over in-memory rings and one eventfd per end (fd_for_select)."""

    def __init__(self, ffi: Any, capacity: int = 2048) -> None:
        self.ffi = ffi
        self.capacity = capacity
        self.lock = threading.Lock()
        self.published: dict[str, _Chan] = {}
        self.ends: dict[int, tuple[_Chan, str]] = {}
        self._keep: list[Any] = []
        self.server_inits = 0

    def _new_end(self, chan: _Chan, side: str) -> Any:
        mem = self.ffi.new("char[64]")
        self._keep.append(mem)
        ctrl = self.ffi.cast("struct libxenvchan *", mem)
        self.ends[int(self.ffi.cast("uintptr_t", ctrl))] = (chan, side)
        return ctrl

    def _end(self, ctrl: Any) -> tuple[_Chan, str]:
        return self.ends[int(self.ffi.cast("uintptr_t", ctrl))]

    def _kick(self, chan: _Chan, side: str) -> None:
        peer = "client" if side == "server" else "server"
        os.eventfd_write(chan.efd[peer], 1)

    def libxenvchan_server_init(self, _logger: Any, _domain: int, path: bytes, _rmin: int, _wmin: int) -> Any:
        with self.lock:
            self.server_inits += 1
            chan = _Chan(self.capacity)
            self.published[path.decode()] = chan
            return self._new_end(chan, "server")

    def libxenvchan_client_init(self, _logger: Any, _domain: int, path: bytes) -> Any:
        with self.lock:
            chan = self.published.get(path.decode().replace("/local/domain/7/", ""))
            if chan is None or chan.srv_live != OPEN:
                return self.ffi.NULL
            chan.cli_live = OPEN
            ctrl = self._new_end(chan, "client")
            self._kick(chan, "client")
            return ctrl

    def libxenvchan_close(self, ctrl: Any) -> None:
        with self.lock:
            chan, side = self._end(ctrl)
            if side == "server":
                chan.srv_live = CLOSED
                self.published = {k: v for k, v in self.published.items() if v is not chan}
            else:
                chan.cli_live = CLOSED
            self._kick(chan, side)

    def _boxes(self, chan: _Chan, side: str) -> tuple[bytearray, bytearray]:
        return (chan.to_server, chan.to_client) if side == "server" else (chan.to_client, chan.to_server)

    def libxenvchan_read(self, ctrl: Any, buf: Any, size: int) -> int:
        with self.lock:
            chan, side = self._end(ctrl)
            inbox, _ = self._boxes(chan, side)
            data = bytes(inbox[:size])
            del inbox[: len(data)]
            self.ffi.memmove(buf, data, len(data))
            if data:
                self._kick(chan, side)
            return len(data)

    def libxenvchan_write(self, ctrl: Any, data: Any, size: int) -> int:
        with self.lock:
            chan, side = self._end(ctrl)
            _, outbox = self._boxes(chan, side)
            n = min(size, chan.capacity - len(outbox))
            outbox += self.ffi.buffer(data, n)[:]
            if n:
                self._kick(chan, side)
            return n

    def libxenvchan_wait(self, ctrl: Any) -> int:
        chan, side = self._end(ctrl)
        os.eventfd_read(chan.efd[side])
        return 0

    def libxenvchan_fd_for_select(self, ctrl: Any) -> int:
        chan, side = self._end(ctrl)
        return chan.efd[side]

    def libxenvchan_is_open(self, ctrl: Any) -> int:
        chan, side = self._end(ctrl)
        return chan.cli_live if side == "server" else chan.srv_live

    def libxenvchan_data_ready(self, ctrl: Any) -> int:
        with self.lock:
            chan, side = self._end(ctrl)
            return len(self._boxes(chan, side)[0])

    def libxenvchan_buffer_space(self, ctrl: Any) -> int:
        with self.lock:
            chan, side = self._end(ctrl)
            return chan.capacity - len(self._boxes(chan, side)[1])


def test_protocol_over_vchan_and_a_new_host_after_the_first_leaves(loop, exec_service) -> None:
    ffi, _real = load_library()
    lib = FakeVchanLib(ffi)
    exec_service(loop)
    zone = VchanTransport.serve(0, ffi=ffi, lib=lib)
    assert ffi.cast("struct libxenvchan_head *", zone.ctrl).blocking == 0
    loop.server.add_transport(zone, name="vchan", persistent=True)
    loop.start()

    first = IdmClient(VchanTransport.connect(7, ffi=ffi, lib=lib))
    blob = os.urandom(100_000)
    out, _err, code = first.exec(["cat"]).communicate(blob)
    assert out == blob and code == 0
    first.close()  # the host side goes away: the zone re-arms the ring (fresh server_init)

    deadline = time.monotonic() + 10
    while lib.server_inits < 2:
        assert time.monotonic() < deadline, "zone did not re-arm its vchan"
        time.sleep(0.02)
    loop.on_loop(lambda: loop.server.emit("container.exit", {"id": "web", "exit_code": 7}))
    with IdmClient(VchanTransport.connect(7, ffi=ffi, lib=lib)) as second:
        assert second.call("ping")["pong"]
        assert second.wait_event("container.exit", timeout=5).payload["exit_code"] == 7


def test_real_library_without_xen_fails_with_typed_errors() -> None:
    with pytest.raises(IdmError, match="cannot serve"):
        VchanTransport.serve()
    with pytest.raises(ConnectionClosed):
        VchanTransport.connect(3)
    with pytest.raises(IdmTimeout):
        connect_vchan_client(3, timeout=0.2)  # the host keeps trying until its deadline
