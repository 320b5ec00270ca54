"""What the zone keeps for its pod beyond each container: the namespaces the pod's containers share, the
pod-level sysctls written into them, emptyDir volumes, and each container's file volumes.

A zone is one pod. Its containers share the workload network namespace (made at boot, ``zoneinit.network``)
and, when their OCI config says so, one ipc and one uts namespace. Those are made here on first use, owned by
the pod's **user namespace** (ids 0..65535 -> the images' owner shift), which every container on a shifted
image joins instead of making its own, as Kubernetes' user-namespaced pods do: container root then holds its
capabilities over the pod's ipc and uts namespaces (it mounts its mqueue, sets the pod's ipc sysctls) and
over nothing of the zone's. All three are pinned by bind mounts of their nsfs files like the network one.
A forked helper makes them (``make_pod_namespaces``), so PID 1 never moves.
A container whose OCI config names a pid namespace path (CRI's POD mode: ``shareProcessNamespace``) joins the
pod's **pid namespace**, made on first use inside the pod's user namespace (``make_pod_pid_namespace``) and
kept alive by a holder process that is its pid 1, as Kubernetes' pause container is: PID 1's orphan for the
zone's life, it ignores every signal it can and lets the kernel reap what is re-parented to it; the zone's
power-off kills it with everything else. A pid namespace whose pid 1 has died takes no new process: a
container asking for it then fails by name (``check_pid_namespace``), never runs in a namespace of its own.
emptyDir volumes are directories of the zone named by the pod's volume name, so every container naming it
sees the same files, for the pod's life; ``medium: memory`` gives one its own tmpfs (with its size limit).
File volumes (configMaps, secrets, /etc/hosts, a termination log) are written per container and removed
with it. Everything a user-namespaced container must write to is owned by its root (the image's shift).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
from typing import TYPE_CHECKING, NoReturn

from styrolite.errors import StateError
from styrolite.syscalls import LINUX, Syscalls
from styrolite.syscalls import constants as k
from zoneinit.config.sysctls import by_namespace
from zoneinit.containers.ocimerge import PodPaths
from zoneinit.containers.podspec import Volume
from zoneinit.errors import ZoneInitError

if TYPE_CHECKING:
    from zoneinit.mounts.table import MountTable

NAMESPACE_FLAGS = {"ipc": k.CLONE_NEWIPC, "uts": k.CLONE_NEWUTS, "network": k.CLONE_NEWNET}
FILE_OPTIONS = ["rbind", "nosuid", "nodev"]   # /run's own flags, which a user namespace cannot drop
PR_SET_DUMPABLE = 4
PF_EXITING = 0x4                              # /proc/<pid>/stat flags: the process is in exit
HOLDER_NAME = b"pod-pid-holder"               # its /proc/<pid>/comm (15 bytes at most)


def make_pod_namespaces(paths: PodPaths, shift: int, hostname: str | None, sys: Syscalls = LINUX) -> None:
    """The pod's user (when ``shift``), ipc and uts namespaces, pinned at ``paths``. Run in a forked helper of
    PID 1: a child of ours unshares the user namespace, we write its id maps (only a process outside it may
    map a whole range), it unshares ipc and uts inside it and names the host, and we pin its namespaces."""
    from zoneinit.config.idrange import ID_RANGE

    pins = [(kind, getattr(paths, kind)) for kind in (("user", "ipc", "uts") if shift else ("ipc", "uts"))]
    for _kind, pin in pins:
        os.makedirs(os.path.dirname(pin), mode=0o711, exist_ok=True)
        os.close(os.open(pin, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o400))
    to_child_r, to_child_w = os.pipe2(os.O_CLOEXEC)
    from_child_r, from_child_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the namespace holder
        try:
            os.close(to_child_w)
            os.close(from_child_r)
            if shift:
                sys.unshare(k.CLONE_NEWUSER)
            os.write(from_child_w, b"u")
            if os.read(to_child_r, 1) != b"g":
                os._exit(1)
            sys.unshare(k.CLONE_NEWIPC | k.CLONE_NEWUTS)
            if hostname:
                sys.sethostname(hostname)
            os.write(from_child_w, b"n")
            os.read(to_child_r, 1)
        finally:
            os._exit(0)
    os.close(to_child_r)
    os.close(from_child_w)
    step = "make the pod's namespaces"
    try:
        if os.read(from_child_r, 1) != b"u":
            raise ZoneInitError("the pod's namespace holder died before its user namespace existed")
        if shift:
            step = f"map the pod's user namespace to {shift}..{shift + ID_RANGE - 1}"
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{pid}/{name}", "w", encoding="ascii") as f:
                    f.write(f"0 {shift} {ID_RANGE}\n")
        os.write(to_child_w, b"g")
        if os.read(from_child_r, 1) != b"n":
            raise ZoneInitError("the pod's namespace holder could not make its ipc and uts namespaces"
                                + (f" or name the host {hostname!r}" if hostname else ""))
        for kind, pin in pins:
            step = f"pin the pod's {kind} namespace at {pin}"
            sys.mount(f"/proc/{pid}/ns/{kind}", pin, None, k.MS_BIND)
    except OSError as e:
        raise ZoneInitError(step) from e
    finally:
        os.close(to_child_w)   # the holder exits: the pins keep its namespaces
        os.close(from_child_r)
        os.waitpid(pid, 0)


def make_pod_pid_namespace(pin: str, user: str | None, sys: Syscalls = LINUX) -> int:
    """The pod's pid namespace, pinned at ``pin``; returns the zone pid of its holder (its pid 1). Run in a
    forked helper of PID 1: a child of ours enters the pod's user namespace ``user`` as its root (when the pod
    has one: the pid namespace is then owned by it, so container root may join it and mount its /proc),
    unshares the pid namespace, forks the holder into it and exits, which leaves the holder to PID 1 (an
    orphan its loop reaps like any other). We pin the namespace."""
    os.makedirs(os.path.dirname(pin), mode=0o711, exist_ok=True)
    os.close(os.open(pin, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o400))
    owner = os.open(user, os.O_RDONLY | os.O_CLOEXEC) if user is not None else None
    result_r, result_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child that makes the namespace
        step = "start"
        try:
            os.close(result_r)
            with contextlib.suppress(OSError):   # the holder's name, while /proc/self is still ours to write
                comm = os.open("/proc/self/comm", os.O_WRONLY | os.O_CLOEXEC)
                os.write(comm, HOLDER_NAME)
                os.close(comm)
            if owner is not None:
                step = f"enter the pod's user namespace {user}"
                sys.setns(owner, k.CLONE_NEWUSER)
                sys.setresgid(0)
                sys.setresuid(0)
            step = "make the holder undumpable"   # it is a copy of PID 1's memory: no one in the pod may read it
            sys.prctl(PR_SET_DUMPABLE, 0)
            step = "unshare the pid namespace"
            sys.unshare(k.CLONE_NEWPID)
            step = "fork the holder"
            holder = os.fork()
            if holder == 0:
                hold_pid_namespace()
            os.write(result_w, str(holder).encode())
        except BaseException as e:
            with contextlib.suppress(BaseException):
                os.write(result_w, f"!{step}: {e}".encode()[:4000])
        finally:
            os._exit(0)
    os.close(result_w)
    if owner is not None:
        os.close(owner)
    chunks = []
    try:
        while chunk := os.read(result_r, 4096):   # EOF: the child exited and the holder closed its copy
            chunks.append(chunk)
    finally:
        os.close(result_r)
        _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode(errors="replace")
    if not text.isdigit():
        raise ZoneInitError("make the pod's pid namespace: " + (
            text[1:] if text.startswith("!") else f"its helper died (wait status {status:#x})"))
    holder = int(text)
    try:
        sys.mount(f"/proc/{holder}/ns/pid", pin, None, k.MS_BIND)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.kill(holder, signal.SIGKILL)   # no pin, no pod pid namespace: PID 1 reaps it
        raise ZoneInitError(f"pin the pod's pid namespace (holder pid {holder}) at {pin}") from e
    return holder


def hold_pid_namespace() -> NoReturn:  # pragma: no cover - runs as the holder, pid 1 of the pod's pid namespace
    """Hold the pod's pid namespace for the zone's life, as Kubernetes' pause container does: every signal
    that can be is ignored (as pid 1 of its namespace, nothing inside it can then end it; the zone's SIGKILL at
    power-off does), SIGCHLD included, so the kernel reaps every orphan re-parented to it; no inherited
    descriptor, its own session, "/" as its directory. Nothing is imported: it is a forked copy of PID 1, and
    what it does not touch stays shared with it."""
    try:
        for signum in signal.valid_signals():
            if signum not in (signal.SIGKILL, signal.SIGSTOP):
                with contextlib.suppress(OSError, ValueError):   # the C library's own real-time signals
                    signal.signal(signum, signal.SIG_IGN)
        os.setsid()
        os.chdir("/")
        os.closerange(0, max(os.sysconf("SC_OPEN_MAX"), 1024))
        try:
            null = os.open("/dev/null", os.O_RDWR)   # 0, 1, 2: nothing is ever written
            os.dup2(null, 1)
            os.dup2(null, 2)
        except OSError:
            pass
        while True:
            signal.pause()
    finally:
        os._exit(1)


def pid_holder_problem(holder: int, pin: str) -> str | None:
    """None while ``holder`` lives and is pid 1 of the pid namespace pinned at ``pin``; else what is wrong."""
    try:
        with open(f"/proc/{holder}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        state, flags = fields[0], int(fields[6])
        held = os.stat(f"/proc/{holder}/ns/pid")
    except (OSError, IndexError, ValueError):
        return "has exited"
    if state in (b"Z", b"X", b"x") or flags & PF_EXITING:   # exiting: it waits for its namespace to empty
        return "has exited"
    try:
        pinned = os.stat(pin)
    except OSError as e:
        return f"is alive, but the namespace's pin {pin} is gone ({e.strerror})"
    if (held.st_dev, held.st_ino) != (pinned.st_dev, pinned.st_ino):
        return f"has exited (pid {holder} is another process now)"
    return None


def write_sysctls(kind: str, pin: str, values: dict[str, str], user: str | None = None,
                  sys: Syscalls = LINUX) -> None:
    """Set ``values`` inside the namespace pinned at ``pin`` (run in a forked helper: setns moves the caller).
    ``user``: the namespace belongs to that user namespace; its files are its root's, so write as that root."""
    target = os.open(pin, os.O_RDONLY | os.O_CLOEXEC)   # both opened first: the pins are not the pod root's
    owner = os.open(user, os.O_RDONLY | os.O_CLOEXEC) if user is not None else None
    try:
        if owner is not None:
            sys.setns(owner, k.CLONE_NEWUSER)
            sys.setresgid(0)
            sys.setresuid(0)
        sys.setns(target, NAMESPACE_FLAGS[kind])
    finally:
        for fd in (target, owner):
            if fd is not None:
                os.close(fd)
    for key, value in values.items():
        try:   # os-level bytes: as the pod's root nothing more of Python may be importable
            fd = os.open("/proc/sys/" + key.replace(".", "/"), os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as e:
            raise ZoneInitError(f"sysctl {key}={value} in the pod's {kind} namespace") from e


class Pod:
    """The zone's pod: shared namespaces, emptyDir volumes, per-container file volumes (under ``base``)."""

    def __init__(self, base: str, network: str | None, hostname: str | None, mounts: MountTable,
                 sys: Syscalls = LINUX, sysctls: dict[str, str] | None = None) -> None:
        self.base = base
        self.sysctls = dict(sysctls or {})   # the pod's (the zone config's), written when its namespaces are made
        self.sysctls_written = False
        self.paths = PodPaths(network, os.path.join(base, "ns", "ipc"), os.path.join(base, "ns", "uts"),
                              os.path.join(base, "ns", "user"), os.path.join(base, "ns", "pid"))
        self.hostname = hostname
        self.mounts = mounts
        self.sys = sys
        self.emptydirs: dict[str, Volume] = {}      # name -> the volume that made it
        self.shift: int | None = None                # the pod's user namespace (0: none), once it is made
        self.pid_holder: int | None = None           # pid 1 of the pod's pid namespace, once it is made

    # --- namespaces ---------------------------------------------------------------------------------------
    def check_shift(self, shift: int) -> None:
        """The pod's namespaces belong to one user namespace: its containers' images share one owner shift
        (an unshifted image runs without a user namespace, which may use them all the same)."""
        if self.shift is not None and shift and shift != self.shift:
            raise ValueError(f"the image is shifted by {shift}, the pod's user namespace "
                             + (f"maps {self.shift}" if self.shift else "does not exist (its namespaces were made "
                                "for containers without one)"))

    def ensure_namespaces(self, shift: int) -> None:
        """Make the pod's user, ipc and uts namespaces on first use (one forked helper), and write the pod's
        sysctls into them (and into the pod's network namespace)."""
        self.check_shift(shift)
        if self.shift is None:
            from zoneinit.isolate import in_child

            in_child(make_pod_namespaces, self.paths, shift, self.hostname, self.sys)
            self.shift = shift
        if not self.sysctls_written:   # until they are: a failed write fails every container of the pod
            self.apply_sysctls(by_namespace(self.sysctls))
            self.sysctls_written = True

    def ensure_pid_namespace(self) -> None:
        """Make the pod's pid namespace on first use (one forked helper; after ``ensure_namespaces``: it
        belongs to the pod's user namespace when there is one). StateError if its holder has died since."""
        if self.pid_holder is not None:
            self.check_pid_namespace()
            return
        if self.shift is None:
            raise ZoneInitError("the pod's pid namespace is made after its user namespace (ensure_namespaces)")
        from zoneinit.isolate import in_child

        self.pid_holder = in_child(make_pod_pid_namespace, self.paths.pid,
                                   self.paths.user if self.shift else None, self.sys)

    def check_pid_namespace(self) -> None:
        """StateError if the pod's pid namespace was made and its holder has died: the namespace takes no new
        process, and a container sharing it must not run anywhere else."""
        if self.pid_holder is None:
            return
        problem = pid_holder_problem(self.pid_holder, self.paths.pid)
        if problem is not None:
            raise StateError(f"the pod's shared pid namespace (shareProcessNamespace) is gone: its pid 1, the "
                             f"holder process {self.pid_holder}, {problem}; no container can join it in this zone")

    def apply_sysctls(self, sysctls: dict[str, dict[str, str]]) -> None:
        from zoneinit.isolate import in_child

        for kind, values in sysctls.items():
            pin = getattr(self.paths, kind)
            if pin is None:
                raise ZoneInitError(f"sysctls {', '.join(values)}: the zone has no pod network namespace")
            owner = self.paths.user if self.shift and kind != "network" else None   # the pod's own namespaces
            in_child(write_sysctls, kind, pin, values, owner, self.sys)

    # --- volumes ------------------------------------------------------------------------------------------
    def volume_source(self, container_id: str, index: int, volume: Volume) -> str:
        """Where a volume lives in the zone (the bind mount's source)."""
        if volume.kind == "emptydir":
            return os.path.join(self.base, "emptydir", volume.name)
        return os.path.join(self.base, "files", container_id, str(index))

    def volume_mounts(self, container_id: str, volumes: list[Volume]) -> list[dict[str, object]]:
        """The bind mounts of ``volumes`` for config.json, parents before children."""
        ordered = sorted(enumerate(volumes), key=lambda item: item[1].destination.count("/"))
        return [{"destination": v.destination, "type": "bind", "source": self.volume_source(container_id, i, v),
                 "options": [*FILE_OPTIONS, "ro" if v.readonly else "rw"]} for i, v in ordered]

    def prepare_volumes(self, container_id: str, volumes: list[Volume], owner: int) -> None:
        """Write file volumes and make (or reuse) emptyDirs; ``owner`` is the container root's zone uid."""
        for index, volume in enumerate(volumes):
            source = self.volume_source(container_id, index, volume)
            try:
                if volume.kind == "emptydir":
                    self._emptydir(volume, source, owner)
                else:
                    self._write_files(volume, source, owner)
            except OSError as e:
                raise ZoneInitError(f"volume {volume.destination} of container {container_id}") from e

    def _emptydir(self, volume: Volume, source: str, owner: int) -> None:
        known = self.emptydirs.get(volume.name)
        if known is not None:
            if (known.medium, known.size) != (volume.medium, volume.size):
                raise ZoneInitError(f"emptyDir {volume.name!r} exists with medium {known.medium or 'default'!r} "
                                    f"and size {known.size}; asked again with {volume.medium or 'default'!r} "
                                    f"and {volume.size}")
            return
        os.makedirs(source, mode=0o777, exist_ok=True)
        if volume.medium == "memory":
            data = "mode=0777" + (f",size={volume.size}" if volume.size else "")
            self.mounts.mount("tmpfs", source, "tmpfs", k.MS_NOSUID | k.MS_NODEV, data)
        os.chown(source, owner, owner)
        os.chmod(source, 0o777)   # emptyDir is world-writable, as kubelet makes it
        self.emptydirs[volume.name] = volume

    @staticmethod
    def _write_files(volume: Volume, source: str, owner: int) -> None:
        single = len(volume.files) == 1 and volume.files[0].path == ""
        os.makedirs(os.path.dirname(source) if single else source, mode=0o755, exist_ok=True)
        if not single:
            os.chown(source, owner, owner)
        for entry in volume.files:
            path = source if single else os.path.join(source, entry.path)
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                _write_all(fd, entry.data)
                os.fchown(fd, owner, owner)
                os.fchmod(fd, entry.mode)
            finally:
                os.close(fd)

    def read_file(self, container_id: str, volumes: list[Volume], path: str, limit: int) -> bytes:
        """The content of ``path`` (a container path inside one of its file or emptyDir volumes)."""
        path = "/" + "/".join(part for part in path.split("/") if part)
        if ".." in path.split("/"):
            raise ValueError(f"read_file: {path!r} must not contain '..'")
        for index, volume in sorted(enumerate(volumes), key=lambda item: -len(item[1].destination)):
            if path != volume.destination and not path.startswith(volume.destination.rstrip("/") + "/"):
                continue
            source = self.volume_source(container_id, index, volume)
            relative = path[len(volume.destination):].lstrip("/")
            target = os.path.join(source, relative) if relative else source
            return _read_inside(source, target, limit)
        raise FileNotFoundError(f"{path} is not in a file or emptyDir volume of container {container_id!r}")

    def remove_container(self, container_id: str) -> None:
        """The container's file volumes (emptyDirs are the pod's and stay)."""
        directory = os.path.join(self.base, "files", container_id)
        if os.path.lexists(directory):
            shutil.rmtree(directory)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_inside(root: str, target: str, limit: int) -> bytes:
    """Read ``target`` without following a symlink out of ``root`` (a container may have written links)."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(target)
    if real != real_root and not real.startswith(real_root + os.sep):
        raise ValueError(f"read_file: {target} leads outside its volume")
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"read_file: {target} is not a regular file")
        chunks = []
        remaining = limit
        while remaining > 0 and (chunk := os.read(fd, min(remaining, 1 << 16))):
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
