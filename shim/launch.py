"""`start` and `delete`, as containerd 1.6's runtime v2 runs them, and the shim's socket address.

containerd runs, with the bundle directory as working directory and TTRPC_ADDRESS in the environment:

    containerd-shim-zone-v2 -namespace N -address A -publish-binary B -id ID [-debug] start
    containerd-shim-zone-v2 -namespace N -address A -publish-binary B -id ID -bundle DIR delete

`start` prints the address of the shim that will serve this container (`unix:///...`) and exits; it
starts that shim only if the pod has none yet. One shim per pod: the group is the bundle's
`io.kubernetes.cri.sandbox-id` annotation (else the container id), and the socket path is a hash of
containerd's address, the namespace and the group (as containerd's runc shim names it), so every container
of a pod finds the same socket. The new shim is this program without an action, started in its own session
(own process group, no terminal), with the listening socket inherited (its number in
$ZONE_SHIM_LISTEN_FD) and stdout/stderr on the bundle's `log`
FIFO that containerd reads (a `shim.log` file when there is none). `start` writes `address` and `shim.pid`
into the bundle, as the runc and Kata shims do.

`delete` runs whenever a task's connection to its shim closes: after a normal Shutdown, when the pod's
shim lives on for other containers, and when the shim died. Only in the last case (nothing answers on the
bundle's address) does it release what the dead shim held (the backend's `cleanup_after_crash`) and remove
the stale socket. It always prints a DeleteResponse (exit 137, now), as containerd expects.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from shim.bundle import pod_of, read_spec

SOCKET_DIR_ENV = "ZONE_SHIM_SOCKET_DIR"
LISTEN_FD_ENV = "ZONE_SHIM_LISTEN_FD"  # the daemon's inherited listening socket
DEFAULT_SOCKET_DIR = "/run/containerd/s"
SOCKET_PATH_LIMIT = 106


class LaunchError(Exception):
    pass


@dataclass(frozen=True)
class ShimArgs:
    namespace: str
    id: str
    address: str  # containerd's gRPC socket
    publish_binary: str
    bundle: str
    debug: bool = False
    ttrpc_address: str = ""


def group_of(bundle: str, container_id: str) -> str:
    """The pod this container belongs to, from its bundle's OCI spec (else the container itself)."""
    return pod_of(read_spec(bundle), container_id)


def socket_address(containerd_address: str, namespace: str, group: str) -> str:
    directory = os.environ.get(SOCKET_DIR_ENV) or DEFAULT_SOCKET_DIR
    digest = hashlib.sha256(os.path.join(containerd_address, namespace, group).encode()).hexdigest()
    path = os.path.join(directory, digest)
    if len(path) > SOCKET_PATH_LIMIT:
        raise LaunchError(f"shim socket path {path} is longer than {SOCKET_PATH_LIMIT} bytes; "
                          f"set {SOCKET_DIR_ENV} to a shorter directory")
    return "unix://" + path


def _path(address: str) -> str:
    return address.removeprefix("unix://")


def can_connect(address: str, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(_path(address))
        except OSError:
            return False
    return True


def write_atomic(path: str, text: str) -> None:
    temp = os.path.join(os.path.dirname(path) or ".", "." + os.path.basename(path))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temp, path)


def _listen(address: str) -> socket.socket | None:
    """Bind the shim socket; None if a live shim already serves it (stale sockets are replaced)."""
    path = _path(address)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    for _ in range(2):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
        except OSError as e:
            sock.close()
            if e.errno != errno.EADDRINUSE:
                raise LaunchError(f"create shim socket {path}: {e.strerror}") from e
            if can_connect(address):
                return None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            continue
        os.chmod(path, 0o600)
        sock.listen(128)
        return sock
    raise LaunchError(f"create shim socket {path}: still in use after removing a stale socket")


def _open_log(bundle: str) -> int:
    """The bundle's `log` FIFO containerd reads (non-blocking writes: a stalled reader never stalls the shim),
    else an appended `shim.log`."""
    fifo = os.path.join(bundle, "log")
    with contextlib.suppress(OSError):
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    return os.open(os.path.join(bundle, "shim.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _adjust_oom_score(pid: int) -> None:
    """The shim is a little more killable than containerd, as containerd's shims are."""
    with contextlib.suppress(OSError, ValueError):
        with open(f"/proc/{os.getppid()}/oom_score_adj") as f:
            score = int(f.read().strip())
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(min(score + 1, 1000)))


def daemon_command(args: ShimArgs) -> list[str]:
    command = [sys.executable, "-m", "shim.main", "-namespace", args.namespace, "-id", args.id,
               "-address", args.address, "-publish-binary", args.publish_binary]
    if args.debug:
        command.append("-debug")
    return command


def start(args: ShimArgs) -> str:
    """Return the address of the pod's shim, starting it if it is not running."""
    if sys.stdin is not None and not sys.stdin.isatty():
        with contextlib.suppress(OSError, ValueError):
            sys.stdin.buffer.read()  # runtime options (an Any) containerd may send; none apply here
    group = group_of(args.bundle, args.id)
    address = socket_address(args.address, args.namespace, group)
    listener = _listen(address)
    if listener is None:  # the pod's shim already runs
        write_atomic(os.path.join(args.bundle, "address"), address)
        return address
    try:
        log_fd = _open_log(args.bundle)
        try:
            env = dict(os.environ)
            if args.ttrpc_address:
                env["TTRPC_ADDRESS"] = args.ttrpc_address
            package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
            env[LISTEN_FD_ENV] = str(listener.fileno())
            child = subprocess.Popen(daemon_command(args), cwd=args.bundle, env=env, stdin=subprocess.DEVNULL,
                                     stdout=log_fd, stderr=log_fd, start_new_session=True,
                                     pass_fds=(listener.fileno(),))
        finally:
            os.close(log_fd)
    except BaseException:
        listener.close()
        with contextlib.suppress(OSError):
            os.unlink(_path(address))
        raise
    listener.close()
    _adjust_oom_score(child.pid)
    write_atomic(os.path.join(args.bundle, "shim.pid"), str(child.pid))
    write_atomic(os.path.join(args.bundle, "address"), address)
    return address


def delete(args: ShimArgs, cleanup: Callable[[str, str], None]) -> bytes:
    """Clean up after a dead shim; return the serialized DeleteResponse to print."""
    from google.protobuf import timestamp_pb2

    from shim.protos import shim_pb2

    address = ""
    with contextlib.suppress(OSError), open(os.path.join(args.bundle, "address")) as f:
        address = f.read().strip()
    # containerd runs `delete` whenever a task's connection closes, also when the pod's shim lives on and
    # serves the pod's other containers: then there is nothing to clean up
    if not (address and can_connect(address)):
        cleanup(args.bundle, args.id)
        if address:
            with contextlib.suppress(OSError):
                os.unlink(_path(address))
    exited_at = timestamp_pb2.Timestamp()
    exited_at.FromDatetime(datetime.now(UTC))
    return shim_pb2.DeleteResponse(pid=0, exit_status=128 + 9, exited_at=exited_at).SerializeToString()
