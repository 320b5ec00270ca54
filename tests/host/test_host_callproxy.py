"""The call proxy that lets other CLI calls use the IDM link a foreground `run` holds (no boot)."""

from __future__ import annotations

import pytest

from host.callproxy import CallProxy, proxy_for
from host.errors import BackendError


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def call(self, type_, payload=None, timeout=None):
        self.calls.append((type_, payload))
        if type_ == "boom":
            raise ValueError("zone said no")
        return {"echo": payload, "bytes": b"\x00raw"}


def test_calls_go_through_and_errors_come_back_as_one_line(tmp_path):
    fake = FakeClient()
    proxy = CallProxy(fake, tmp_path / "ctl.sock")
    try:
        client = proxy_for(tmp_path / "ctl.sock")
        assert client is not None
        assert client.call("container.list", {"a": 1}) == {"echo": {"a": 1}, "bytes": b"\x00raw"}
        with pytest.raises(BackendError, match="boom: zone said no"):
            client.call("boom")
        with pytest.raises(BackendError, match="foreground"):
            client.exec(["true"])
        assert fake.calls == [("container.list", {"a": 1}), ("boom", None)]
    finally:
        proxy.close()
    assert not (tmp_path / "ctl.sock").exists()
    assert proxy_for(tmp_path / "ctl.sock") is None


def test_a_stale_socket_file_is_not_a_proxy(tmp_path):
    import socket

    path = tmp_path / "ctl.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()   # the file stays, nobody listens
    assert proxy_for(path) is None
