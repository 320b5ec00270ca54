"""The call proxy that lets other CLI calls use the IDM link a foreground `run` holds (no boot), and the
zone link that goes through it."""

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


def test_a_link_opened_while_a_foreground_run_holds_it_goes_through_the_proxy(tmp_path):
    from host.link import ZoneLink
    from host.state import zone_dir
    from host.zonedef import ZoneDef

    zone = zone_dir("held", tmp_path / "zones")
    zone.create(ZoneDef(name="held", kernel_image="/k", initrd="/i"))
    fake = FakeClient()
    proxy = CallProxy(fake, zone.control_socket)
    try:
        with ZoneLink.open(zone, timeout=1) as link:
            assert link.logs("main")["data"] == b""   # a typed reply, whatever the zone left out
            with pytest.raises(BackendError, match="foreground"):
                link.exec(["true"])
            with pytest.raises(BackendError, match="foreground"):
                link.next_event(0)
    finally:
        proxy.close()
    assert fake.calls == [("container.logs", {"id": "main"})]
