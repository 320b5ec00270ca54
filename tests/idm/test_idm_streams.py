"""Streams and exec over IDM: stdin/stdout round trips with real processes, exit codes, tty resize,
and credit-based flow control (the sender stops at zero credit; memory stays bounded with a slow reader)."""

from __future__ import annotations

import os
import signal
import threading
import time
import tracemalloc
from typing import Any

import pytest

from idm.errors import INVALID_ARGUMENT, RemoteError
from idm.server import Request
from idm.streams import DEFAULT_WINDOW


def test_exec_stdin_stdout_round_trip_and_exit_code(loop, connect, exec_service) -> None:
    exec_service(loop)
    client = connect()
    proc = client.exec(["sh", "-c", "tr a-z A-Z; echo done >&2; exit 3"])
    assert proc.pid > 0
    out, err, code = proc.communicate(b"hello zone\n" * 1000)
    assert out == b"HELLO ZONE\n" * 1000
    assert err == b"done\n"
    assert code == 3


def test_exec_interactive_writes_and_reads(loop, connect, exec_service) -> None:
    exec_service(loop)
    client = connect()
    proc = client.exec(["cat"])
    for i in range(5):
        line = f"line {i}\n".encode()
        proc.write(line)
        assert next(proc.stdout) == line  # each line comes back before the next is sent
    proc.close_stdin()
    assert list(proc.stdout) == []
    assert proc.wait(10) == 0


def test_exec_signal_death_is_128_plus_signo(loop, connect, exec_service) -> None:
    exec_service(loop)
    client = connect()
    proc = client.exec(["sleep", "100"])
    proc.signal(signal.SIGKILL)
    assert list(proc.output()) == []
    assert proc.wait(10) == 137


def test_exec_tty_with_resize(loop, connect, exec_service) -> None:
    exec_service(loop)
    client = connect()
    proc = client.exec(["sh", "-c", "stty size; read x; stty size"], tty=True, rows=24, cols=80)
    seen = b""
    for chunk in proc.stdout:
        seen += chunk
        if b"24 80" in seen:
            break
    proc.resize(40, 100)
    proc.write(b"go\n")
    for chunk in proc.stdout:
        seen += chunk
    assert b"40 100" in seen
    assert proc.wait(10) == 0


def test_exec_bad_arguments(loop, connect, exec_service) -> None:
    exec_service(loop)
    client = connect()
    with pytest.raises(RemoteError) as exc:
        client.exec([])
    assert exc.value.code == INVALID_ARGUMENT
    with pytest.raises(RemoteError) as exc:
        client.call("exec.resize", {"stream": 999, "rows": 10, "cols": 10})
    assert exc.value.code == "not-found"
    with pytest.raises(RemoteError):
        client.exec(["/no/such/binary"])
    assert client.call("ping")["pong"]


def test_echo_stream_with_the_plain_stream_api(loop, connect) -> None:
    def echo(req: Request) -> None:
        stream = req.open_stream()

        def on_data(channel: str, data: bytes) -> None:
            assert stream.send("stdout", data.upper()) == len(data)  # the host reads, so credit suffices
            stream.consumed(channel, len(data))

        stream.on_data = on_data
        stream.on_eof = lambda _ch: stream.finish({"exit_code": 0, "note": "bye"})
        req.reply({"window": stream.window})

    loop.server.register("echo", echo)
    client = connect()
    stream, info = client.open_stream("echo", {})
    assert info["window"] == DEFAULT_WINDOW
    stream.write("stdin", b"abc")
    assert stream.read() == ("stdout", b"ABC")
    stream.close_channel("stdin")
    assert stream.wait(10) == {"exit_code": 0, "note": "bye"}


def flood_handler(loop, total: int, log: dict[str, Any]):
    """A producer that always has data: it sends whatever the credit allows, on every credit grant."""

    def flood(req: Request) -> None:
        stream = req.open_stream()
        log["stream"] = stream
        log["sent"] = 0
        block = b"z" * 65536

        def pump(_channel: str = "stdout") -> None:
            while log["sent"] < total:
                credit = stream.credit("stdout")
                want = min(len(block), total - log["sent"])
                accepted = stream.send("stdout", block[:want])
                assert accepted == min(want, credit)  # never more than the credit
                log["sent"] += accepted
                if accepted < want:
                    return  # out of credit: wait for the host to grant more
            stream.finish({"exit_code": 0})

        stream.on_credit = pump
        req.reply({"window": stream.window})
        pump()

    return flood


def test_sender_stops_at_zero_credit_until_the_reader_consumes(loop, connect) -> None:
    log: dict[str, Any] = {}
    loop.server.register("flood", flood_handler(loop, 10 * DEFAULT_WINDOW, log))
    client = connect()
    stream, _ = client.open_stream("flood", {})
    deadline = time.monotonic() + 10
    while loop.on_loop(lambda: log["stream"].credit("stdout")) > 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.2)  # not a timing assertion: give a misbehaving sender room to overshoot
    assert loop.on_loop(lambda: log["sent"]) == DEFAULT_WINDOW
    assert loop.on_loop(lambda: sum(c.pending_output for c in loop.server.connections)) <= DEFAULT_WINDOW + 4096
    received = sum(len(chunk) for chunk in stream.iter("stdout"))
    assert received == 10 * DEFAULT_WINDOW
    assert stream.wait(10) == {"exit_code": 0}


def test_memory_bounded_while_a_process_writes_much_more_to_a_slow_reader(loop, connect, exec_service) -> None:
    exec_service(loop)
    client = connect()
    total = 32 << 20
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        proc = client.exec(["head", "-c", str(total), "/dev/zero"])
        received = 0
        for n, chunk in enumerate(proc.stdout):
            received += len(chunk)
            if n % 64 == 0:
                time.sleep(0.002)  # a slow host
        code = proc.wait(30)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert code == 0 and received == total
    print(f"traced peak {peak} bytes while moving {total}")
    assert peak < 4 << 20, f"peak {peak} bytes while moving {total}"


def test_host_disconnect_mid_stream_kills_the_exec_and_the_next_host_is_served(loop, connect, exec_service) -> None:
    """A host that vanishes mid-stream cancels its exec: the zone kills the process, frees the stream and
    its pipes, and answers the next session."""
    service = exec_service(loop)
    first = connect()
    proc = first.exec(["sh", "-c", "head -c 10000000 /dev/zero; exit 4"])
    pid = proc.pid
    next(proc.stdout)
    first.close()  # the host vanishes mid-stream (no goodbye message)
    deadline = time.monotonic() + 20
    while loop.on_loop(lambda: any(p.pid == pid for p in service.pumps.values())):
        assert time.monotonic() < deadline, "exec never finished after the host left"
        time.sleep(0.02)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped
    second = connect()
    assert second.call("ping")["pong"]


def test_concurrent_execs(loop, connect, exec_service) -> None:
    exec_service(loop)
    client = connect()
    results: dict[int, tuple] = {}

    def run(n: int) -> None:
        results[n] = client.exec(["sh", "-c", f"cat; exit {n}"]).communicate(bytes([65 + n]) * 50000)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert {n: (len(r[0]), r[0][:1], r[2]) for n, r in results.items()} == {
        n: (50000, bytes([65 + n]), n) for n in range(6)
    }
