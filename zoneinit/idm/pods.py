"""The requests a pod's shim needs beyond a container's lifecycle (docs/idm.md section 7, docs/pods-contract.md):

    disk.attach / disk.detach    a hot-plugged root image: found, waited for, registered, verified before use
    container.attach             the container's own stdio as a stream, from its first byte (``AttachSession``)
    container.resize             its terminal's window size
    container.close_stdin        EOF on its stdin, after what was sent before
    container.pause / resume     the cgroup freezer, through Styrolite
    container.update             new linux.resources
    container.stats              Styrolite's cgroup stats, with the working set
    container.read_file          a file of one of its volumes (a termination log), also after it exited

Like every handler, these raise what they raise; ``zoneinit.idm.errors`` gives it its wire code.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from idm.server import Handler, Request
from idm.streams import Stream
from styrolite.errors import StateError
from zoneinit.containers.manager import ContainerManager, ManagedContainer
from zoneinit.idm.args import require
from zoneinit.idm.errors import fail

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB
if TYPE_CHECKING:
    from typing import Any

if TYPE_CHECKING:
    from zoneinit.containers.pod import Pod
    from zoneinit.mounts.disks import DiskStore
    from zoneinit.supervisor.loop import Supervisor

MAX_SERIAL = 20            # virtio-blk serial bytes
MAX_WAIT = 60.0            # seconds a disk.attach may ask to wait for its device
DEFAULT_READ = 64 * 1024   # container.read_file
MAX_READ = 512 * 1024


class PodHandlers:
    def __init__(self, supervisor: Supervisor, containers: ContainerManager, *,
                 disks: Callable[[], DiskStore] | None, pod: Callable[[], Pod] | None) -> None:
        self.supervisor = supervisor
        self.containers = containers
        self.disks = disks
        self.pod = pod
        self.attaching: set[str] = set()   # disk names waiting for their device

    def handlers(self) -> dict[str, Handler]:
        return {
            "disk.attach": self.disk_attach,
            "disk.detach": self.disk_detach,
            "container.attach": self.container_attach,
            "container.resize": self.container_resize,
            "container.close_stdin": self.container_close_stdin,
            "container.pause": lambda req: self.containers.pause(require(req, "id")).summary(),
            "container.resume": lambda req: self.containers.resume(require(req, "id")).summary(),
            "container.update": self.container_update,
            "container.stats": self.container_stats,
            "container.read_file": self.container_read_file,
        }

    def _disks(self) -> DiskStore:
        if self.disks is None:
            raise StateError("this zone has no disk store")
        return self.disks()

    # --- disks --------------------------------------------------------------------------------------------
    def disk_attach(self, req: Request) -> None:
        from zoneinit.config.idrange import owner_shift_problem
        from zoneinit.config.parser import DIGEST_RE, FSTYPES, NAME_RE
        from zoneinit.config.plan import DiskPlan
        from zoneinit.mounts.hotplug import DEVICE_RE, DiskWaiter, device_by_serial, device_size

        name = require(req, "name")
        if not NAME_RE.match(name):
            raise ValueError(f"disk.attach: {name!r} is not a valid disk name")
        role = req.arg("role", "root")
        if role != "root":
            raise ValueError(f"disk.attach: role {role!r}: only root images can be attached to a running zone")
        digest = require(req, "sha256")
        if not DIGEST_RE.match(digest):
            raise ValueError("disk.attach: 'sha256' must be 'sha256:' and 64 lowercase hex digits")
        size = require(req, "size", int)
        if isinstance(size, bool) or size < 1:
            raise ValueError("disk.attach: 'size' must be the image's size in bytes")
        fstype = req.arg("fstype", "erofs")
        if fstype not in FSTYPES:
            raise ValueError(f"disk.attach: fstype {fstype!r} is not one of {', '.join(FSTYPES)}")
        shift = req.arg("owner_shift") or 0
        problem = owner_shift_problem(shift) if shift else None
        if problem:
            raise ValueError(f"disk.attach: {problem}")
        serial, device = req.arg("serial"), req.arg("device")
        if (serial is None) == (device is None):
            raise ValueError("disk.attach: give exactly one of 'serial' (virtio) or 'device' (Xen /dev/xvdX)")
        if serial is not None and (not isinstance(serial, str) or not serial.isascii() or not serial.isprintable()
                                   or not 0 < len(serial) <= MAX_SERIAL):
            raise ValueError(f"disk.attach: 'serial' must be 1-{MAX_SERIAL} printable ASCII characters")
        if device is not None and (not isinstance(device, str) or not DEVICE_RE.match(device)):
            raise ValueError(f"disk.attach: 'device' {device!r} is not a /dev/<name> path")
        wait = req.arg("timeout", 10.0)
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 < wait <= MAX_WAIT:
            raise ValueError(f"disk.attach: 'timeout' must be a number of seconds in (0, {MAX_WAIT:.0f}]")
        disks = self._disks()
        if name in disks.disks or name in self.attaching:
            raise ValueError(f"disk.attach: a disk named {name!r} is already attached")

        def locate() -> str | None:
            if serial is not None:
                return device_by_serial(serial)
            return device if os.path.exists(device) else None

        def found(path: str | None) -> None:
            self.attaching.discard(name)
            try:
                if path is None:
                    what = f"serial {serial!r}" if serial is not None else str(device)
                    raise FileNotFoundError(f"disk.attach {name}: no disk with {what} appeared within {wait:g} s")
                actual = device_size(path)
                if actual is not None and actual < size:
                    raise ValueError(f"disk.attach {name}: {path} holds {actual} bytes, fewer than the image's {size}")
                disks.add(DiskPlan(name, path, digest, size, fstype, shift, "root", serial))
            except Exception as e:
                fail(req, e, self.supervisor.log.info)
                return
            req.reply({"name": name, "device": path})
            # verified from now on, in a helper; its first container waits for the result (or has it)
            disks.verify_async(name, self.supervisor, lambda error: None)

        self.attaching.add(name)
        DiskWaiter(self.supervisor, locate, found, float(wait))

    def disk_detach(self, req: Request) -> dict[str, Any]:
        name = require(req, "name")
        disks = self._disks()
        users = self.containers.using_image(name)
        if users:
            raise ValueError(f"disk.detach: disk {name!r} is the root of container(s) {', '.join(users)}: "
                             "delete them first")
        disks.remove(name)
        return {"name": name, "detached": True}

    # --- stdio --------------------------------------------------------------------------------------------
    def container_attach(self, req: Request) -> None:
        cid = require(req, "id")
        container = self.containers.attach_output(cid)
        buffer = container.attach
        assert buffer is not None
        if buffer.on_data is not None:
            raise StateError(f"container {cid!r} already has an attached stream")
        stream = req.open_stream()
        req.reply({"id": cid, "stream": stream.id, "window": stream.window,
                   "terminal": buffer.channels == ("stdout",) and container.plan.terminal,
                   "stdin": container.stdin is not None})
        AttachSession(stream, container)

    def container_resize(self, req: Request) -> dict[str, Any]:
        from zoneinit.idm.execs import set_window_size

        cid = require(req, "id")
        rows, cols = require(req, "rows", int), require(req, "cols", int)
        if not (0 < rows < 65536 and 0 < cols < 65536):
            raise ValueError("container.resize: rows and cols must be 1..65535")
        container = self.containers.get(cid)
        if container.console_fd is None:
            raise ValueError(f"container.resize: container {cid!r} has no terminal"
                             + (" any more" if container.plan.terminal else ""))
        set_window_size(container.console_fd, rows, cols)
        return {"id": cid, "rows": rows, "cols": cols}

    def container_close_stdin(self, req: Request) -> dict[str, Any]:
        container = self.containers.get(require(req, "id"))
        if container.stdin is not None:
            container.stdin.close()
            container.stdin = None
        return {"id": container.id}

    # --- resources ------------------------------------------------------------------------------------------
    def container_update(self, req: Request) -> dict[str, Any]:
        from styrolite.spec.model import Resources
        from styrolite.spec.parse import decode_object
        from styrolite.spec.validate import validate_resources

        cid = require(req, "id")
        resources = decode_object(Resources, require(req, "resources", dict), "resources")
        validate_resources(resources, "resources")
        return self.containers.update(cid, resources).summary()

    def container_stats(self, req: Request) -> dict[str, Any]:
        cid = require(req, "id")
        return {"id": cid, **self.containers.stats(cid)}

    def container_read_file(self, req: Request) -> dict[str, Any]:
        cid = require(req, "id")
        path = require(req, "path")
        limit = req.arg("max", DEFAULT_READ)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_READ:
            raise ValueError(f"container.read_file: 'max' must be 1..{MAX_READ} bytes")
        container = self.containers.get(cid)
        if self.pod is None or not container.plan.volumes:
            raise FileNotFoundError(f"container {cid!r} has no volumes to read from")
        data = self.pod().read_file(cid, container.plan.volumes, path, limit)
        return {"id": cid, "path": path, "data": data}


class AttachSession:
    """One attached stream: the container's buffered output sent within credit, the host's stdin written to it,
    ``close {exit_code}`` once it has stopped and everything it wrote was sent. If the host goes away the
    output waits (bounded) for the next attach."""

    def __init__(self, stream: Stream, container: ManagedContainer) -> None:
        self.stream = stream
        self.container = container
        self.buffer = container.attach
        assert self.buffer is not None
        self.closed: set[str] = set()
        self.done = False
        self.buffer.on_data = self._pump
        stream.on_credit = lambda _channel: self._pump()
        stream.on_data = self._input
        stream.on_eof = self._input_eof
        stream.on_abort = self._detach
        if container.stdin is not None:
            container.stdin.on_written = lambda n: stream.consumed("stdin", n)
        self._pump()

    def _pump(self) -> None:
        if self.done:
            return
        buffer = self.buffer
        for channel in buffer.channels:
            credit = self.stream.credit(channel)
            while credit > 0 and buffer.pending.get(channel):
                data = buffer.take(channel, credit)
                credit -= self.stream.send(channel, data)
            if channel in buffer.eof and not buffer.pending.get(channel) and channel not in self.closed:
                self.closed.add(channel)
                self.stream.close_channel(channel)
        if self.container.status in ("stopped", "failed") and buffer.drained():
            for channel in buffer.channels:
                if channel not in self.closed:
                    self.stream.close_channel(channel)
            self.stream.finish({"exit_code": self.container.exit_code, "error": self.container.error})
            self._detach()

    def _input(self, channel: str, data: bytes) -> None:
        stdin = self.container.stdin
        if channel == "stdin" and stdin is not None:
            stdin.write(data)   # credited back as it reaches the container (StdinPipe.on_written)
        else:
            self.stream.consumed(channel, len(data))   # nowhere to go: dropped, the credit keeps flowing

    def _input_eof(self, channel: str) -> None:
        if channel == "stdin" and self.container.stdin is not None:
            self.container.stdin.close()
            self.container.stdin = None

    def _detach(self) -> None:
        self.done = True
        if self.buffer.on_data == self._pump:
            self.buffer.on_data = None
        if self.container.stdin is not None:
            self.container.stdin.on_written = lambda _n: None
