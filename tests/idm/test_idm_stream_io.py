"""A stream's channels as byte sources and sinks for threads (idm.client.StreamReader/StreamWriter), as a
containerd shim bridges them to its FIFOs, over PID 1's real exec service with local processes."""

from __future__ import annotations

import threading

import pytest

from idm.client import StreamReader, StreamWriter


def test_readers_and_a_writer_on_three_threads(loop, connect, exec_service) -> None:
    exec_service(loop)
    session = connect().exec(["sh", "-c", "cat; echo the-end >&2"])
    stdin = StreamWriter(session.stream, "stdin")
    stdout, stderr = StreamReader(session.stream, "stdout"), StreamReader(session.stream, "stderr")
    got = {"stdout": bytearray(), "stderr": bytearray()}

    def drain(name: str, reader: StreamReader, size: int) -> None:
        while chunk := reader.read(size):
            assert len(chunk) <= size
            got[name] += chunk

    readers = [threading.Thread(target=drain, args=("stdout", stdout, 4093)),
               threading.Thread(target=drain, args=("stderr", stderr, 3))]
    for thread in readers:
        thread.start()
    data = bytes(range(251)) * 20000   # ~5 MB: several windows of credit each way
    writer = threading.Thread(target=lambda: (stdin.write(data), stdin.close()))
    writer.start()
    writer.join(60)
    for thread in readers:
        thread.join(60)
    assert bytes(got["stdout"]) == data and bytes(got["stderr"]) == b"the-end\n"
    assert session.wait(10) == 0
    assert stdout.read() == b"" and stderr.read() == b""   # the end stays the end


def test_a_closed_reader_still_lets_the_process_finish(loop, connect, exec_service) -> None:
    exec_service(loop)
    session = connect().exec(["sh", "-c", "head -c 4000000 /dev/zero; echo ok >&2"])
    StreamReader(session.stream, "stdout").close()   # nobody wants stdout: it is taken and dropped
    stderr = StreamReader(session.stream, "stderr")
    assert stderr.read() == b"ok\n"
    assert session.wait(30) == 0


def test_writing_to_an_ended_process_is_a_broken_pipe(loop, connect, exec_service) -> None:
    exec_service(loop)
    session = connect().exec(["true"])
    assert session.wait(10) == 0
    with pytest.raises(BrokenPipeError):
        StreamWriter(session.stream, "stdin").write(b"nobody reads this")
