"""The zone's IDM server: non-blocking, single-threaded, driven by PID 1's event loop.

PID 1 watches one descriptor: ``fileno()`` is the server's own epoll set (connections, listeners and a
wake-up pipe), readable whenever any of them needs attention. The loop calls ``service()`` when it is
readable or when ``timeout()`` seconds have passed; ``service()`` never blocks. Write interest lives inside
the epoll set.

Sessions: every new connection (an accepted unix-socket client, a device whose peer came back) is a new
session and gets a ``zone.hello`` event; a client's ``hello`` request starts a fresh session on the same
transport. Streams of an ended session are aborted; the zone keeps running. Events go to connections that
subscribed (``hello`` with ``events: true``); while none is connected they wait in a bounded backlog, and
durable ones (``container.exit``...) are kept until a client acknowledges them (``events.ack``).
"""

from __future__ import annotations

import _socket  # the C module under socket, whose IntEnums would cost a long-lived server (PID 1) ~0.37 MB
import contextlib
import heapq
import itertools
import os
import select
import selectors
import time
from collections import deque
from collections.abc import Callable

from idm import messages as m
from idm.connection import Connection
from idm.errors import (
    BAD_MESSAGE,
    HANDLER_FAILED,
    INVALID_ARGUMENT,
    UNKNOWN_TYPE,
    UNSUPPORTED_VERSION,
    ConnectionClosed,
    IdmError,
    ProtocolError,
    SchemaError,
)
from idm.framing import DEFAULT_MAX_FRAME
from idm.streams import DEFAULT_WINDOW, MAX_WINDOW, Stream, negotiate_window
from idm.transport import SocketTransport, Transport

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB
if TYPE_CHECKING:
    from typing import Any

DURABLE_EVENTS = frozenset({"container.exit", "container.oom", "zone.ready"})
OUTPUT_HIGH_WATER = 4 << 20  # stop reading a peer's requests while this much output waits for it
PROBE_INTERVAL = 0.25  # seconds between checks for a device peer coming back
MAX_LOCAL_CLIENTS = 16
MAX_UNACKED = 65536
MAX_STREAMS = 1024  # open streams per connection

Handler = Callable[["Request"], "Any"]



def _format_exc() -> str:
    """The exception being handled, formatted. traceback (with linecache and tokenize) is imported on the first
    one: a long-lived server (the zone's PID 1) does not carry it while nothing fails."""
    import traceback

    return traceback.format_exc()

class Request:
    """One request being handled. Reply now (return a value, or call ``reply``/``fail``) or later."""

    __slots__ = ("conn", "id", "payload", "replied", "server", "type")

    def __init__(self, server: IdmServer, conn: Connection, msg: m.Message) -> None:
        self.server = server
        self.conn = conn
        self.id = msg.id
        self.type = msg.type
        self.payload = msg.payload
        self.replied = False

    @property
    def connected(self) -> bool:
        """False once the session that sent the request is gone (a reply would be dropped)."""
        return not self.conn.closed

    def arg(self, key: str, default: Any = None) -> Any:
        """``payload[key]`` when the payload is a map, else ``default``."""
        return self.payload.get(key, default) if isinstance(self.payload, dict) else default

    def reply(self, payload: Any = None) -> None:
        if self.replied:
            return
        self.replied = True
        self.conn.send(m.response(self.id, payload if payload is not None else {}))

    def fail(self, code: str, message: str) -> None:
        if self.replied:
            return
        self.replied = True
        self.conn.send(m.error(self.id, code, message))

    def open_stream(self, window: int | None = None) -> Stream:
        """A stream with this request's id; its window is what the request asked for, capped by the zone."""
        sid = self.id
        if sid in self.conn.streams:
            raise IdmError(f"stream {sid} is already open")
        if len(self.conn.streams) >= MAX_STREAMS:
            raise IdmError(f"too many open streams on this connection (limit {MAX_STREAMS})", INVALID_ARGUMENT)
        stream = Stream(self.conn, sid, negotiate_window(window or self.arg("window"), self.server.max_window))
        self.conn.streams[sid] = stream
        return stream


class Timer:
    __slots__ = ("cancelled", "deadline", "fn")

    def __init__(self, deadline: float, fn: Callable[[], None]) -> None:
        self.deadline = deadline
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class IdmServer:
    """The zone end of IDM. Not thread-safe: everything runs on PID 1's loop (except call_soon_threadsafe)."""

    def __init__(
        self,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_window: int = MAX_WINDOW,
        event_backlog: int = 1024,
        info: Callable[[], dict[str, Any]] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.max_frame = max_frame
        self.max_window = max_window
        self.event_backlog = event_backlog
        self.info = info or dict
        self.log = log or (lambda _msg: None)
        self.durable_types = set(DURABLE_EVENTS)
        self.stats = {"sessions": 0, "protocol_errors": 0, "events_dropped": 0, "requests": 0, "probes": 0}
        self._sel = selectors.EpollSelector()
        self._handlers: dict[str, Handler] = {
            "hello": self._hello,
            "ping": self._ping,
            "events.ack": self._events_ack,
        }
        self._conns: list[Connection] = []
        self._listeners: list[_socket.socket] = []
        self._timers: list[tuple[float, int, Timer]] = []
        self._timer_seq = itertools.count()
        self._seq = 0
        self._pending: deque[m.Message] = deque()  # non-durable events waiting for a subscriber
        self._unacked: dict[int, m.Message] = {}  # durable events until acknowledged
        self._dirty: set[Connection] = set()
        self._in_service = False
        self._calls: deque[Callable[[], None]] = deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)

    # --- the loop interface --------------------------------------------------------------------
    def fileno(self) -> int:
        return self._sel.fileno()

    def timeout(self) -> float | None:
        """Seconds until the server needs ``service()`` even if its fd stays quiet (None: no timer)."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return None
        return max(0.0, self._timers[0][0] - time.monotonic())

    def service(self) -> None:
        """Handle everything that is ready now; never blocks."""
        self._in_service = True
        try:
            for key, mask in self._sel.select(0):
                key.data(mask)
            self._run_calls()
            self._run_timers()
        finally:
            self._in_service = False
            self._flush_dirty()

    # --- endpoints -------------------------------------------------------------------------------
    def listen_unix(self, path: str, mode: int = 0o600) -> None:
        """Accept local clients (``/bin/zone``) on a unix socket."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC | _socket.SOCK_NONBLOCK)
        sock.bind(path)
        os.chmod(path, mode)
        sock.listen(8)
        self.add_listener(sock)

    def add_listener(self, sock: _socket.socket) -> None:
        sock.setblocking(False)
        self._listeners.append(sock)
        self._sel.register(sock, selectors.EVENT_READ, lambda _mask: self._accept(sock))

    def add_transport(self, transport: Transport, *, name: str = "host", persistent: bool = True) -> Connection:
        """Serve a transport. ``persistent``: a device that outlives its peer; wait for the peer to come back."""
        conn = Connection(transport, name=name, persistent=persistent, max_frame=self.max_frame,
                          on_output=self._output_pending, log=self.log)
        self._conns.append(conn)
        self.stats["sessions"] += 1
        self._sel.register(transport.fileno(), selectors.EVENT_READ, lambda mask: self._on_conn(conn, mask))
        # id 0: the greeting is per connection, outside the acknowledged event sequence.
        conn.send(m.event(0, "zone.hello", self._hello_payload()))
        return conn

    @property
    def connections(self) -> list[Connection]:
        return list(self._conns)

    # --- the application interface ---------------------------------------------------------------
    def register(self, type_: str, handler: Handler) -> None:
        """Handle requests of ``type_``. The handler may return the reply payload, or reply later."""
        self._handlers[type_] = handler

    def emit(self, type_: str, payload: Any = None, *, durable: bool | None = None) -> int:
        """Send an event to subscribed clients, or keep it until one connects. Returns its sequence number."""
        self._seq += 1
        msg = m.event(self._seq, type_, payload)
        if durable is None:
            durable = type_ in self.durable_types
        if durable:
            self._unacked[msg.id] = msg
            if len(self._unacked) > MAX_UNACKED:
                del self._unacked[next(iter(self._unacked))]
                self.stats["events_dropped"] += 1
        subscribers = [c for c in self._conns if c.subscribed and not c.closed]
        for conn in subscribers:
            if not durable and conn.pending_output > OUTPUT_HIGH_WATER:
                self.stats["events_dropped"] += 1  # a peer that stopped reading: don't pile up chatter for it
                continue
            conn.send(msg)
        if not subscribers and not durable:
            self._pending.append(msg)
            while len(self._pending) > self.event_backlog:
                self._pending.popleft()
                self.stats["events_dropped"] += 1
        return msg.id

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + delay, fn)
        heapq.heappush(self._timers, (timer.deadline, next(self._timer_seq), timer))
        return timer

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop (the one thread-safe entry point; for tests and helper threads)."""
        self._calls.append(fn)
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    def close(self) -> None:
        for conn in list(self._conns):
            self._drop(conn, reconnect=False)
        for sock in self._listeners:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(sock)
            sock.close()
        self._listeners.clear()
        self._sel.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # --- built-in requests -------------------------------------------------------------------------
    def _hello_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "protocol": m.VERSION,
            "versions": list(m.SUPPORTED_VERSIONS),
            "max_frame": self.max_frame,
            "window": min(DEFAULT_WINDOW, self.max_window),
            "max_window": self.max_window,
        }
        try:
            payload.update(self.info())
        except Exception as e:
            self.log(f"idm: zone info provider failed: {type(e).__name__}: {e}")
        return payload

    def _hello(self, req: Request) -> None:
        versions = req.arg("versions", [m.VERSION])
        if not isinstance(versions, list) or m.VERSION not in versions:
            req.fail(UNSUPPORTED_VERSION,
                     f"client speaks protocol versions {versions!r}; this zone speaks {list(m.SUPPORTED_VERSIONS)}")
            return
        conn = req.conn
        streams, conn.streams = conn.streams, {}
        for stream in streams.values():  # a fresh session on this transport: the old one's streams are gone
            stream.abort()
        self.stats["sessions"] += 1
        req.reply(self._hello_payload())
        conn.subscribed = req.arg("events", False) is True
        if conn.subscribed:
            backlog = sorted([*self._unacked.values(), *self._pending], key=lambda msg: msg.id)
            self._pending.clear()
            for msg in backlog:
                conn.send(msg)

    def unacked_events(self) -> list[m.Message]:
        """Durable events sent (or waiting) that no client has acknowledged yet, oldest first."""
        return list(self._unacked.values())

    def _ping(self, req: Request) -> dict[str, Any]:
        return {"pong": True, "echo": req.payload}

    def _events_ack(self, req: Request) -> dict[str, Any]:
        upto = req.arg("upto")
        if type(upto) is not int:
            raise IdmError("events.ack needs an integer 'upto'", INVALID_ARGUMENT)
        acked = [seq for seq in self._unacked if seq <= upto]
        for seq in acked:
            del self._unacked[seq]
        return {"acked": len(acked)}

    # --- internals ---------------------------------------------------------------------------------
    def _dispatch(self, conn: Connection, item: m.Message | ProtocolError) -> None:
        if isinstance(item, ProtocolError):
            self.stats["protocol_errors"] += 1
            msg_id = item.msg_id if isinstance(item, SchemaError) and item.kind == m.REQUEST else 0
            conn.send(m.error(msg_id, item.code, item.message))
            return
        kind = item.kind
        if kind == m.REQUEST:
            self._handle_request(conn, item)
        elif kind in (m.DATA, m.CREDIT, m.CLOSE):
            stream = conn.streams.get(item.id)
            if stream is not None:
                stream._deliver(item)
        elif kind == m.ERROR:
            self.log(f"idm: {conn.name} reported {item.payload.get('code')}: {item.payload.get('message')}")
        else:
            conn.send(m.error(0, BAD_MESSAGE, f"unexpected {kind} message"))

    def _handle_request(self, conn: Connection, msg: m.Message) -> None:
        self.stats["requests"] += 1
        req = Request(self, conn, msg)
        handler = self._handlers.get(msg.type)
        if handler is None:
            req.fail(UNKNOWN_TYPE, f"unknown message type {msg.type!r}")
            return
        try:
            result = handler(req)
        except IdmError as e:  # the handler's own answer: its wire code and message
            req.fail(e.code, e.message)
        except Exception as e:  # a bug in a handler: reported, never fatal to the server
            self.log(f"idm: handler for {msg.type!r} crashed:\n{_format_exc()}")
            req.fail(HANDLER_FAILED, f"{type(e).__name__}: {e}")
        else:
            if result is not None:
                req.reply(result)

    def _on_conn(self, conn: Connection, mask: int, *, woken: bool = True) -> None:
        if conn.closed:
            return
        if conn.notify is not None and woken:
            # An event-channel transport (vchan): its one fd signals both "data arrived" and "space freed",
            # and the notification must be consumed or the fd stays readable.
            try:
                conn.notify()
            except OSError as e:
                self.log(f"idm: {conn.name}: {e}")
                self._drop(conn)
                return
            mask |= selectors.EVENT_WRITE
        if mask & selectors.EVENT_WRITE:
            self._flush(conn)
            if conn.closed:
                return
        if not mask & selectors.EVENT_READ or conn.pending_output >= OUTPUT_HIGH_WATER:
            return
        # A socket is level-triggered (read once, get called again); a notified transport is not: drain it.
        budget = 16 if conn.notify is not None else 1
        for _ in range(budget):
            try:
                items = conn.receive()
            except OSError as e:
                self.log(f"idm: read from {conn.name}: {e}")
                items = None
            if items is None:
                self._drop(conn)
                return
            for item in items:
                self._dispatch(conn, item)
                if conn.closed:
                    return
            if not conn.last_read:
                break
        else:
            if conn.notify is not None:
                self.call_later(0, lambda: self._on_conn(conn, selectors.EVENT_READ, woken=False))
        self._output_pending(conn)

    def _output_pending(self, conn: Connection) -> None:
        if self._in_service:
            self._dirty.add(conn)
        else:
            self._flush(conn)

    def _flush_dirty(self) -> None:
        while self._dirty:
            self._flush(self._dirty.pop())

    def _flush(self, conn: Connection) -> None:
        if conn.closed:
            return
        try:
            conn.flush()
        except (ConnectionClosed, OSError) as e:
            self.log(f"idm: write to {conn.name}: {e}")
            self._drop(conn)
            return
        pending = conn.pending_output
        events = selectors.EVENT_WRITE if pending else 0
        if pending < OUTPUT_HIGH_WATER:  # a peer that does not read its replies gets no new requests served
            events |= selectors.EVENT_READ
        if conn.notify is not None:
            events = selectors.EVENT_READ  # space freed is signalled on the same readable fd
        if events != conn.interest:
            conn.interest = events
            self._sel.modify(conn.transport.fileno(), events, lambda mask: self._on_conn(conn, mask))

    def _drop(self, conn: Connection, *, reconnect: bool = True) -> None:
        if conn in self._conns:
            self._conns.remove(conn)
        self._dirty.discard(conn)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.transport.fileno())
        conn.end()
        if conn.persistent and reconnect:
            self.log(f"idm: {conn.name} peer went away; waiting for it to come back")
            self.call_later(PROBE_INTERVAL, lambda: self._probe(conn.transport, conn.name))
        else:
            conn.transport.close()

    def _probe(self, transport: Transport, name: str) -> None:
        """A device whose peer left reports HUP (and reads EOF) until the peer is back; check without spinning."""
        self.stats["probes"] += 1
        peer_present = getattr(transport, "peer_present", None)
        if peer_present is not None:
            try:
                present = peer_present()
            except OSError as e:
                self.log(f"idm: {name}: {e}")
                present = False
        else:
            poller = select.poll()
            poller.register(transport.fileno(), select.POLLIN | select.POLLOUT)
            revents = sum(ev for _fd, ev in poller.poll(0))
            present = not revents & (select.POLLHUP | select.POLLERR | select.POLLNVAL)
        if not present:
            self.call_later(PROBE_INTERVAL, lambda: self._probe(transport, name))
            return
        self.log(f"idm: {name} peer is back; new session")
        self.add_transport(transport, name=name, persistent=True)

    def _accept(self, listener: _socket.socket) -> None:
        try:
            fd, _addr = listener._accept()   # what socket.socket.accept wraps (accept4 with SOCK_CLOEXEC)
            sock = _socket.socket(fileno=fd)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.log(f"idm: accept: {e}")
            return
        local = sum(1 for c in self._conns if not c.persistent)
        if local >= MAX_LOCAL_CLIENTS:
            sock.close()
            return
        self.add_transport(SocketTransport(sock), name=f"local-{self.stats['sessions'] + 1}", persistent=False)

    def _on_wake(self, _mask: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    def _run_calls(self) -> None:
        while self._calls:
            fn = self._calls.popleft()
            self._guarded(fn)

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _deadline, _n, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self._guarded(timer.fn)

    def _guarded(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            self.log(f"idm: callback failed:\n{_format_exc()}")
