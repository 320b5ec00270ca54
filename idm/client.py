"""The blocking IDM client core (host CLI, ``/bin/zone``): one reader thread, calls from any thread.

``call`` sends a request and waits for its response (``RemoteError`` carries the zone's error code),
``events()`` yields zone events (each acknowledged once taken, so durable ones are not resent), and
``exec`` returns an ``ExecSession`` whose stdin/stdout/stderr are credit-controlled channels: the client
grants the zone more bytes only as the caller consumes them, so neither end buffers without bound.
Imports stay light (stdlib + msgpack) so ``/bin/zone`` inside the zone can use it too.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import select
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from idm import messages as m
from idm.errors import ConnectionClosed, IdmError, IdmTimeout, ProtocolError, RemoteError
from idm.framing import DEFAULT_MAX_FRAME
from idm.streams import DATA_CHUNK, DEFAULT_WINDOW
from idm.transport import FdTransport, Transport, connect_unix

DEFAULT_TIMEOUT = 30.0
READ_SIZE = 256 * 1024


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    type: str
    payload: Any


class _Pending:
    __slots__ = ("done", "error", "result", "type")

    def __init__(self, type_: str) -> None:
        self.type = type_
        self.done = threading.Event()
        self.result: Any = None
        self.error: IdmError | None = None


class ClientStream:
    """The host end of a stream: read incoming channels in arrival order, write outgoing ones within credit."""

    def __init__(self, client: IdmClient, sid: int, window: int) -> None:
        self.client = client
        self.id = sid
        self.window = window
        self._cond = threading.Condition()
        self._chunks: deque[tuple[str, bytes]] = deque()
        self._eof: set[str] = set()
        self._send_credit: dict[str, int] = {}
        self._unreported: dict[str, int] = {}
        self.done = False
        self.result: Any = None
        self.error: IdmError | None = None

    # --- incoming ------------------------------------------------------------------------------
    def read(self, channel: str | None = None, timeout: float | None = None) -> tuple[str, bytes] | None:
        """The next chunk (of ``channel``, or of any channel); None at end of that data."""
        with self._cond:
            while (item := self._take(channel)) is None:
                if self.done or (channel is not None and channel in self._eof):
                    return None
                if not self._cond.wait(timeout):
                    raise IdmTimeout(f"no data on stream {self.id} within {timeout} s")
        ch, data = item
        self._consumed(ch, len(data))
        return ch, data

    def _take(self, channel: str | None) -> tuple[str, bytes] | None:
        for i, item in enumerate(self._chunks):
            if channel is None or item[0] == channel:
                del self._chunks[i]
                return item
        return None

    def iter(self, channel: str | None = None) -> Iterator[bytes]:
        while (item := self.read(channel)) is not None:
            yield item[1]

    def _consumed(self, channel: str, n: int) -> None:
        with self._cond:
            total = self._unreported.get(channel, 0) + n
            grant = total >= self.window // 2 and not self.done
            self._unreported[channel] = 0 if grant else total
        if grant:
            with contextlib.suppress(IdmError):
                self.client._send(m.Message(m.CREDIT, self.id, payload=total, channel=channel))

    # --- outgoing ------------------------------------------------------------------------------
    def write(self, channel: str, data: bytes, timeout: float | None = None) -> None:
        """Send all of ``data``, waiting for credit as needed (the zone grants it as it consumes)."""
        view = memoryview(data)
        while view:
            with self._cond:
                while self._send_credit.get(channel, self.window) <= 0 and not self.done:
                    if not self._cond.wait(timeout):
                        raise IdmTimeout(f"no credit on {channel!r} of stream {self.id} within {timeout} s")
                if self.done:
                    raise self.error or IdmError(f"stream {self.id} has ended")
                n = min(len(view), self._send_credit.get(channel, self.window), DATA_CHUNK)
                self._send_credit[channel] = self._send_credit.get(channel, self.window) - n
            self.client._send(m.Message(m.DATA, self.id, payload=bytes(view[:n]), channel=channel))
            view = view[n:]

    def credit(self, channel: str) -> int:
        with self._cond:
            return self._send_credit.get(channel, self.window)

    def close_channel(self, channel: str) -> None:
        if not self.done:
            self.client._send(m.Message(m.CLOSE, self.id, channel=channel))

    def cancel(self) -> None:
        """Abort the stream (the zone sees on_abort)."""
        if not self.done:
            with contextlib.suppress(IdmError):
                self.client._send(m.Message(m.CLOSE, self.id))
            self._finish(None, IdmError(f"stream {self.id} cancelled"))

    def wait(self, timeout: float | None = None) -> Any:
        """The stream's result (its final close payload). Read the output meanwhile, or the zone stalls."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.done, timeout):
                raise IdmTimeout(f"stream {self.id} did not end within {timeout} s")
            if self.error is not None:
                raise self.error
            return self.result

    # --- called by the reader thread -------------------------------------------------------------
    def _deliver(self, msg: m.Message) -> None:
        with self._cond:
            if msg.kind == m.DATA:
                self._chunks.append((msg.channel, msg.payload))
            elif msg.kind == m.CREDIT:
                self._send_credit[msg.channel] = self._send_credit.get(msg.channel, self.window) + msg.payload
            elif msg.kind == m.CLOSE:
                if msg.channel:
                    self._eof.add(msg.channel)
                else:
                    self.done = True
                    self.result = msg.payload
                    self.client._forget_stream(self.id)
            self._cond.notify_all()

    def _finish(self, result: Any, error: IdmError | None) -> None:
        with self._cond:
            if not self.done:
                self.done = True
                self.result = result
                self.error = error
            self._cond.notify_all()
        self.client._forget_stream(self.id)


class StreamReader:
    """One incoming channel of a stream as a byte source, usable from any thread: ``read(n)`` blocks until
    bytes arrive and returns at most ``n`` of them, ``b""`` once the channel (or the stream) has ended.
    ``close()`` says the bytes are not wanted: they are still taken (and credited) so the zone never stalls."""

    def __init__(self, stream: ClientStream, channel: str) -> None:
        self.stream = stream
        self.channel = channel
        self._lock = threading.Lock()
        self._leftover = b""
        self._closed = False

    def read(self, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        with self._lock:
            if not self._leftover:
                item = self.stream.read(self.channel, timeout)
                if item is None:
                    return b""
                self._leftover = item[1]
            data, self._leftover = self._leftover[:max_bytes], self._leftover[max_bytes:]
            return data

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def drain() -> None:
            with contextlib.suppress(IdmError):
                while self.read(1 << 20):
                    pass

        threading.Thread(target=drain, name=f"idm-drain-{self.stream.id}-{self.channel}", daemon=True).start()


class StreamWriter:
    """One outgoing channel of a stream as a byte sink, usable from any thread: ``write`` sends all of it,
    waiting for the zone's credit; BrokenPipeError once the stream has ended. ``close()`` is EOF."""

    def __init__(self, stream: ClientStream, channel: str) -> None:
        self.stream = stream
        self.channel = channel
        self._lock = threading.Lock()

    def write(self, data: bytes, timeout: float | None = None) -> None:
        with self._lock:
            try:
                self.stream.write(self.channel, data, timeout)
            except IdmTimeout:
                raise
            except IdmError as e:
                raise BrokenPipeError(f"stream {self.stream.id}: {e}") from e

    def close(self) -> None:
        with self._lock, contextlib.suppress(IdmError):
            self.stream.close_channel(self.channel)


class ExecSession:
    """A process started by ``exec``: stdin writes, stdout/stderr iterators, exit code, tty resize."""

    def __init__(self, stream: ClientStream, info: dict[str, Any]) -> None:
        self.stream = stream
        self.info = info
        self.pid = info.get("pid")

    @property
    def id(self) -> int:
        return self.stream.id

    def write(self, data: bytes, timeout: float | None = None) -> None:
        self.stream.write("stdin", data, timeout)

    def close_stdin(self) -> None:
        self.stream.close_channel("stdin")

    def output(self) -> Iterator[tuple[str, bytes]]:
        """(channel, bytes) in the order the zone sent them: the way to read both without deadlock."""
        while (item := self.stream.read()) is not None:
            yield item

    @property
    def stdout(self) -> Iterator[bytes]:
        return self.stream.iter("stdout")

    @property
    def stderr(self) -> Iterator[bytes]:
        return self.stream.iter("stderr")

    def resize(self, rows: int, cols: int) -> None:
        self.stream.client.call("exec.resize", {"stream": self.id, "rows": rows, "cols": cols})

    def signal(self, signo: int) -> None:
        self.stream.client.call("exec.signal", {"stream": self.id, "signal": signo})

    def wait(self, timeout: float | None = None) -> int:
        result = self.stream.wait(timeout)
        if not isinstance(result, dict) or type(result.get("exit_code")) is not int:
            raise IdmError(f"exec {self.id} ended without an exit code: {result!r}")
        return result["exit_code"]

    def communicate(self, stdin: bytes = b"", timeout: float | None = None) -> tuple[bytes, bytes, int]:
        """Send ``stdin``, close it, collect all output and the exit code (like subprocess)."""
        out: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        writer = threading.Thread(target=self._feed, args=(stdin,), daemon=True)
        writer.start()
        for channel, data in self.output():
            out.setdefault(channel, bytearray()).extend(data)
        writer.join(timeout)
        return bytes(out["stdout"]), bytes(out["stderr"]), self.wait(timeout)

    def _feed(self, data: bytes) -> None:
        with contextlib.suppress(IdmError):
            if data:
                self.write(data)
            self.close_stdin()


class IdmClient:
    """A connection to a zone. Thread-safe; one reader thread dispatches everything that arrives."""

    def __init__(
        self,
        transport: Transport,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        events: bool = True,
        hello: bool = True,
        name: str = "zone-host",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.transport = transport
        self.max_frame = max_frame
        self._decoder = m.MessageDecoder(max_frame)
        self._wlock = threading.Lock()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._streams: dict[int, ClientStream] = {}
        self._events: queue.Queue[Event | None] = queue.Queue()
        self._acked = 0
        self.protocol_errors: deque[IdmError] = deque(maxlen=100)
        self.closed = threading.Event()
        self.close_reason: IdmError | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._notify = getattr(transport, "clear_notification", None)  # event-channel transports
        self._space = threading.Condition()
        self._wakeups = 0
        self._reader = threading.Thread(target=self._read_loop, name="idm-reader", daemon=True)
        self._reader.start()
        self.info: dict[str, Any] = {}
        if hello:
            try:
                self.info = self.call("hello", {"versions": list(m.SUPPORTED_VERSIONS), "events": events,
                                                "client": name}, timeout)
            except BaseException:
                self.close()  # no half-open client: stop the reader, release the transport
                raise

    @classmethod
    def connect_unix(cls, path: str, *, connect_timeout: float = 10.0, **kwargs: Any) -> IdmClient:
        return cls(connect_unix(path, connect_timeout), **kwargs)

    @classmethod
    def from_fds(cls, read_fd: int, write_fd: int | None = None, *, owns: bool = True, **kwargs: Any) -> IdmClient:
        return cls(FdTransport(read_fd, write_fd, owns=owns), **kwargs)

    # --- requests --------------------------------------------------------------------------------
    def call(self, type_: str, payload: Any = None, timeout: float | None = DEFAULT_TIMEOUT) -> Any:
        """Send a request and wait for the response payload; RemoteError if the zone refused it."""
        return self._call(self._next_id(), type_, payload, timeout)

    def exec(
        self,
        command: list[str],
        *,
        container: str | None = None,
        env: dict[str, str] | list[str] | None = None,
        cwd: str | None = None,
        user: str | int | dict[str, Any] | None = None,
        tty: bool = False,
        rows: int | None = None,
        cols: int | None = None,
        window: int = DEFAULT_WINDOW,
        timeout: float | None = DEFAULT_TIMEOUT,
        process: dict[str, Any] | None = None,
        zone: bool = False,
    ) -> ExecSession:
        payload: dict[str, Any] = {"command": list(command), "tty": tty, "window": window}
        if zone:   # a zone-level exec: PID 1's namespaces and the extensions' tools, no container
            payload["zone"] = True
        for key, value in (("container", container), ("env", env), ("cwd", cwd), ("user", user),
                           ("rows", rows), ("cols", cols), ("process", process)):
            if value is not None:
                payload[key] = value
        stream, info = self.open_stream("exec", payload, window=window, timeout=timeout)
        return ExecSession(stream, info)

    def open_stream(self, type_: str, payload: dict[str, Any], *, window: int = DEFAULT_WINDOW,
                    timeout: float | None = DEFAULT_TIMEOUT) -> tuple[ClientStream, dict[str, Any]]:
        """Send a stream-opening request; returns the stream (id = request id) and the response payload."""
        sid = self._next_id()
        stream = ClientStream(self, sid, window)
        with self._lock:
            self._streams[sid] = stream  # before sending: data may follow the response immediately
        try:
            info = self._call(sid, type_, {**payload, "window": window}, timeout)
        except IdmError as e:
            stream._finish(None, e)
            raise
        if isinstance(info, dict) and type(info.get("window")) is int:
            stream.window = info["window"]  # what the zone granted; our stdin credit starts there
        return stream, info if isinstance(info, dict) else {}

    # --- events ----------------------------------------------------------------------------------
    def next_event(self, timeout: float | None = None) -> Event | None:
        """The next zone event; None on timeout or once the connection is closed and drained."""
        try:
            item = self._events.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is None:
            self._events.put(None)  # keep the end marker for other consumers
            return None
        self._ack(item.seq)
        return item

    def _ack(self, seq: int) -> None:
        """Acknowledge (cumulatively) once the application has taken the event: durable ones stop being resent.

        Sent from the consuming thread, never from the reader thread, so a slow write can't stall reading.
        """
        with self._lock:
            if seq <= self._acked or self.closed.is_set():
                return
            self._acked = seq
            msg_id = next(self._ids)
        with contextlib.suppress(IdmError):
            self._send(m.request(msg_id, "events.ack", {"upto": seq}))

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Iterate zone events until the connection closes (or no event arrives within ``timeout``)."""
        while (event := self.next_event(timeout)) is not None:
            yield event

    def wait_event(self, type_: str, timeout: float | None = DEFAULT_TIMEOUT, **match: Any) -> Event:
        """The next event of ``type_`` whose payload has the given items (others are skipped)."""
        while True:
            event = self.next_event(timeout)
            if event is None:
                raise IdmTimeout(f"no {type_} event within {timeout} s")
            if event.type == type_ and all(
                isinstance(event.payload, dict) and event.payload.get(k) == v for k, v in match.items()
            ):
                return event

    # --- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        if not self.closed.is_set():
            self._shutdown(ConnectionClosed("client closed"))
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")
        if threading.current_thread() is not self._reader:
            self._reader.join(5)
        self.transport.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> IdmClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- internals -------------------------------------------------------------------------------
    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def _call(self, msg_id: int, type_: str, payload: Any, timeout: float | None) -> Any:
        pending = _Pending(type_)
        with self._lock:
            if self.closed.is_set():
                raise self.close_reason or ConnectionClosed("connection closed")
            self._pending[msg_id] = pending
        try:
            self._send(m.request(msg_id, type_, payload))
            if not pending.done.wait(timeout):
                raise IdmTimeout(f"{type_}: no response within {timeout} s")
        finally:
            with self._lock:
                self._pending.pop(msg_id, None)
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _send(self, msg: m.Message) -> None:
        frame = memoryview(m.encode(msg, self.max_frame))
        with self._wlock:
            while frame:
                if self.closed.is_set():
                    raise self.close_reason or ConnectionClosed("connection closed")
                seen = self._wakeups
                n = self.transport.write(frame)
                if n > 0:
                    frame = frame[n:]
                    continue
                if self._notify is not None:  # the reader thread sees "space freed" notifications
                    with self._space:
                        self._space.wait_for(lambda seen=seen: self._wakeups != seen, 0.5)
                else:
                    poller = select.poll()
                    poller.register(self.transport.fileno(), select.POLLOUT)
                    poller.poll(500)

    def _forget_stream(self, sid: int) -> None:
        with self._lock:
            self._streams.pop(sid, None)

    def _read_loop(self) -> None:
        poller = select.poll()
        poller.register(self.transport.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        reason: IdmError = ConnectionClosed("zone closed the connection")
        try:
            while not self.closed.is_set():
                ready = dict(poller.poll())
                if self._wake_r in ready:
                    break
                if self._notify is not None:
                    self._notify()
                    with self._space:
                        self._wakeups += 1
                        self._space.notify_all()
                while (data := self.transport.read(READ_SIZE)) is not None:
                    if not data:
                        raise EOFError
                    self._dispatch_all(self._decoder.feed(data))
                    if self._notify is None:
                        break  # level-triggered: poll again
        except EOFError:
            pass
        except Exception as e:
            reason = ConnectionClosed(f"reader stopped: {type(e).__name__}: {e}")
        if not self.closed.is_set():
            self._shutdown(reason)

    def _dispatch_all(self, items: list[m.Message | ProtocolError]) -> None:
        for item in items:
            if isinstance(item, ProtocolError):
                self.protocol_errors.append(item)
                continue
            kind = item.kind
            if kind in (m.RESPONSE, m.ERROR):
                self._resolve(item)
            elif kind == m.EVENT:
                self._events.put(Event(item.id, item.type, item.payload))
            else:
                with self._lock:
                    stream = self._streams.get(item.id)
                if stream is not None:
                    stream._deliver(item)

    def _resolve(self, msg: m.Message) -> None:
        with self._lock:
            pending = self._pending.get(msg.id)
            stream = self._streams.get(msg.id)
        if msg.kind == m.ERROR:
            code, text = msg.payload["code"], msg.payload["message"]
            error = RemoteError(code, text, pending.type if pending else "")
            if pending is None and stream is None:
                self.protocol_errors.append(error)  # an error not tied to anything we asked (id 0)
                return
            if stream is not None and (pending is None or pending.done.is_set()):
                stream._finish(None, error)
            if pending is not None:
                pending.error = error
                pending.done.set()
        elif pending is not None:
            pending.result = msg.payload
            pending.done.set()

    def _shutdown(self, reason: IdmError) -> None:
        self.close_reason = reason
        self.closed.set()
        with self._lock:
            pending, self._pending = dict(self._pending), {}
            streams = list(self._streams.values())
        for p in pending.values():
            p.error = reason
            p.done.set()
        for s in streams:
            s._finish(None, reason)
        self._events.put(None)
