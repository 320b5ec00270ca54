"""``/bin/zone`` (zoneinit.zonectl) against a real server on a unix socket."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from idm.server import Request
from zoneinit import zonectl

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def zone_socket(loop, exec_service, tmp_path) -> str:
    path = str(tmp_path / "idm.sock")
    exec_service(loop)
    loop.server.register("zone.info", lambda req: {"zone": "test-zone", "kernel": os.uname().release})
    loop.server.register("container.list", lambda req: {"containers": [
        {"id": "web", "status": "running", "pid": 42, "args": ["httpd", "-f"]}]})

    def logs(req: Request) -> dict | None:
        if not req.arg("follow"):
            return {"id": req.arg("id"), "data": b"snapshot of " + req.arg("id").encode() + b"\n"}
        stream = req.open_stream()
        req.reply({"window": stream.window})
        stream.send("stdout", f"log of {req.arg('id')}\n".encode())
        stream.send("stderr", b"warning\n")
        stream.finish({})

    loop.server.register("container.logs", logs)
    loop.server.listen_unix(path)
    loop.start()
    return path


def zone_cli(path: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "zoneinit.zonectl", "--socket", path, *args],
                          input=stdin, capture_output=True, env=env, timeout=60, check=False)


def test_ping_info_ps_logs(zone_socket, capsys) -> None:
    assert zonectl.main(["--socket", zone_socket, "ping"]) == 0
    assert zonectl.main(["--socket", zone_socket, "info"]) == 0
    assert zonectl.main(["--socket", zone_socket, "ps"]) == 0
    assert zonectl.main(["--socket", zone_socket, "logs", "web"]) == 0
    assert zonectl.main(["--socket", zone_socket, "logs", "-f", "web"]) == 0
    out = capsys.readouterr()
    assert "pong from test-zone" in out.out
    assert "zone: test-zone" in out.out
    assert "web" in out.out and "running" in out.out and "httpd -f" in out.out
    assert "snapshot of web" in out.out
    assert "log of web" in out.out and "warning" in out.err


def test_exec_pipes_stdin_and_exit_code(zone_socket) -> None:
    result = zone_cli(zone_socket, "exec", "--", "sh", "-c", "tr a-z A-Z; echo oops >&2; exit 5", stdin=b"abc\n")
    assert result.returncode == 5, result.stderr
    assert result.stdout == b"ABC\n"
    assert result.stderr == b"oops\n"


def test_errors_are_one_line(tmp_path, capsys) -> None:
    assert zonectl.main(["--socket", str(tmp_path / "missing.sock"), "ping"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("zone: connect to") and "Traceback" not in err
