"""Xen vchan transport over Debian's ``libxenvchan.so.4.17`` (cffi ABI mode, no compiler needed).

The zone is the vchan *server*: it grants the ring pages to dom0 and publishes ``ring-ref`` and
``event-channel`` under its own xenstore home, at ``data/zone-idm`` (absolute:
``/local/domain/<zone domid>/data/zone-idm``; ``data/`` is the guest-writable part of a domain's home).
The host (dom0) is the client. See docs/idm.md, "Transport", for how the event channel is driven.

Why the C library rather than a Python re-implementation over /dev/xen/gntalloc, evtchn and xenbus:
libxenvchan is the reference peer (``vchan-socket-proxy`` and every other Xen tool use it), it is
already on dom0 (libxenmisc4.17) and small to ship in a zone; the Python side stays ~150 lines.

libxenvchan's own blocking mode is never used: the control structure comes from malloc() with the
``blocking`` bit uninitialised, so it is cleared here, and reads/writes are bounded by
``data_ready``/``buffer_space`` (which also ask the peer to notify us when they change).
"""

from __future__ import annotations

import select
import time
from typing import Any

from idm.errors import ConnectionClosed, IdmError, IdmTimeout

LIBRARY = "libxenvchan.so.4.17"
ZONE_PATH = "data/zone-idm"  # relative to the zone's xenstore home
DEFAULT_RING = 64 * 1024  # bytes per direction (rounded up to a power of two by the library; max 1 MiB)


CLOSED, OPEN, WAITING = 0, 1, 2  # libxenvchan_is_open
_loaded: tuple[Any, Any] | None = None


def load_library() -> tuple[Any, Any]:
    """(ffi, lib) for libxenvchan; IdmError if the library is not installed."""
    global _loaded
    if _loaded is None:
        from idm._vchan_ffi import ffi  # out-of-line: no pycparser at run time (vchan_ffi_build.py)

        try:
            lib = ffi.dlopen(LIBRARY)
        except OSError as e:
            raise IdmError(f"vchan: cannot load {LIBRARY} (install libxenmisc4.17): {e}") from e
        _loaded = (ffi, lib)
    return _loaded


class VchanTransport:
    """One end of a vchan as an IDM transport (event-channel kind: see transport.py)."""

    def __init__(self, ffi: Any, lib: Any, ctrl: Any, *, server: tuple[int, str, int, int] | None = None) -> None:
        self.ffi = ffi
        self.lib = lib
        self.ctrl = ctrl
        self._server = server  # (peer domid, path, read_min, write_min) to re-arm for the next client
        self._buf = ffi.new("char[]", 256 * 1024)
        self._prepare()

    # --- construction ----------------------------------------------------------------------------
    @classmethod
    def serve(cls, peer_domid: int = 0, path: str = ZONE_PATH, read_min: int = DEFAULT_RING,
              write_min: int = DEFAULT_RING, *, ffi: Any = None, lib: Any = None) -> VchanTransport:
        """The zone end: grant a ring to ``peer_domid`` (dom0) and publish it at ``path``."""
        if ffi is None or lib is None:
            ffi, lib = load_library()
        ctrl = _server_init(ffi, lib, peer_domid, path, read_min, write_min)
        return cls(ffi, lib, ctrl, server=(peer_domid, path, read_min, write_min))

    @classmethod
    def connect(cls, domid: int, path: str | None = None, *, ffi: Any = None, lib: Any = None) -> VchanTransport:
        """The host end: map the ring zone ``domid`` published (``/local/domain/<domid>/data/zone-idm``)."""
        if ffi is None or lib is None:
            ffi, lib = load_library()
        path = path or f"/local/domain/{domid}/{ZONE_PATH}"
        ctrl = lib.libxenvchan_client_init(ffi.NULL, domid, path.encode())
        if ctrl == ffi.NULL:
            raise ConnectionClosed(f"vchan: no server at {path} of domain {domid} (errno {ffi.errno})")
        return cls(ffi, lib, ctrl)

    def _prepare(self) -> None:
        head = self.ffi.cast("struct libxenvchan_head *", self.ctrl)
        head.blocking = 0  # malloc'ed by the library and never initialised: we want non-blocking calls

    # --- Transport -------------------------------------------------------------------------------
    def fileno(self) -> int:
        if self.ctrl is None:
            return -1
        return self.lib.libxenvchan_fd_for_select(self.ctrl)

    def read(self, max_bytes: int) -> bytes | None:
        if self.ctrl is None:
            return b""
        ready = self.lib.libxenvchan_data_ready(self.ctrl)
        if ready <= 0:
            return b"" if self.lib.libxenvchan_is_open(self.ctrl) == CLOSED else None
        size = min(max_bytes, ready, len(self._buf))
        n = self.lib.libxenvchan_read(self.ctrl, self._buf, size)
        if n < 0:
            return b""
        return self.ffi.buffer(self._buf, n)[:] if n else None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.ctrl is None:
            raise ConnectionClosed("vchan closed")
        state = self.lib.libxenvchan_is_open(self.ctrl)
        if state == CLOSED:
            raise ConnectionClosed("vchan peer closed")
        if state == WAITING:
            return 0  # no client yet: keep it buffered
        space = self.lib.libxenvchan_buffer_space(self.ctrl)
        size = min(len(data), space)
        if size <= 0:
            return 0
        n = self.lib.libxenvchan_write(self.ctrl, self.ffi.from_buffer("char[]", data), size)
        if n < 0:
            raise ConnectionClosed("vchan write failed")
        return n

    def close(self) -> None:
        if self.ctrl is not None:
            self.lib.libxenvchan_close(self.ctrl)
            self.ctrl = None

    # --- event-channel hooks -----------------------------------------------------------------------
    def clear_notification(self) -> None:
        """Consume a pending event (libxenvchan_wait only when the fd says it will not block)."""
        fd = self.fileno()
        if fd >= 0 and select.select([fd], [], [], 0)[0]:
            self.lib.libxenvchan_wait(self.ctrl)

    def peer_present(self) -> bool:
        """Zone end: a client is connected. A closed ring is re-armed (fresh grants) for the next client."""
        if self.ctrl is None:
            return False
        self.clear_notification()
        state = self.lib.libxenvchan_is_open(self.ctrl)
        if state == OPEN:
            return True
        if state == CLOSED and self._server is not None:
            self.lib.libxenvchan_close(self.ctrl)
            self.ctrl = None
            peer, path, read_min, write_min = self._server
            self.ctrl = _server_init(self.ffi, self.lib, peer, path, read_min, write_min)
            self._prepare()
        return False


def _server_init(ffi: Any, lib: Any, peer: int, path: str, read_min: int, write_min: int) -> Any:
    ctrl = lib.libxenvchan_server_init(ffi.NULL, peer, path.encode(), read_min, write_min)
    if ctrl == ffi.NULL:
        raise IdmError(f"vchan: cannot serve {path} to domain {peer} (errno {ffi.errno}); "
                       "needs /dev/xen/gntalloc, /dev/xen/evtchn and xenstore")
    return ctrl


def connect_vchan_client(domid: int, *, path: str | None = None, timeout: float = 30.0) -> VchanTransport:
    """Host side: wait (up to ``timeout``) until zone ``domid`` serves its vchan, then connect to it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return VchanTransport.connect(domid, path)
        except ConnectionClosed as e:
            if time.monotonic() >= deadline:
                raise IdmTimeout(f"zone domain {domid} did not serve its vchan within {timeout} s: {e}") from e
            time.sleep(0.1)
