"""Where a container's state lives between CLI calls: ``<root>/<id>/state.json`` (runc's layout).

The stored status is only a hint: the truth is whether the init process (pid + its start time, to
defeat pid reuse) is alive, whether the exec fifo still exists (created, not started) and whether the
cgroup is frozen (paused).

The record also keeps what later calls would otherwise have to work out again (runc does the same): the
cgroup's directories as ``create`` resolved them, the hook phases the config has and whether the container
has a mount namespace of its own, so ``state``, ``start``, ``kill`` and ``delete`` neither parse the
config nor read the host's mount table. Plain classes, hand-written checks and styrolite.jsonio (no
dataclasses, no regular expressions, no json package): this module is imported by every CLI call.
"""

from __future__ import annotations

import os

from styrolite import OCI_VERSION, jsonio
from styrolite.errors import ContainerError, NotFoundError

DEFAULT_ROOT = "/run/styrolite"
EXEC_FIFO = "exec.fifo"
_ID_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_ID_CHARS = _ID_FIRST | frozenset("_.+-")
MAX_ID_LENGTH = 1024


def validate_id(container_id: str) -> str:
    """Letters, digits and ``_.+-``, not starting with a symbol, at most 1024 characters."""
    if not (isinstance(container_id, str) and 0 < len(container_id) <= MAX_ID_LENGTH
            and container_id[0] in _ID_FIRST and _ID_CHARS.issuperset(container_id)):
        raise ContainerError(
            f"invalid container id {container_id!r}: use letters, digits and _.+- (not starting with a symbol)"
        )
    return container_id


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot), or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name may contain spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":  # a zombie has exited; only its parent has not reaped it yet
        return None
    return int(fields[19])


class ContainerState:
    """One container's record. Fields that an older styrolite did not write load as their defaults."""

    FIELDS: dict[str, object] = {
        "id": None,
        "bundle": None,
        "pid": 0,
        "pid_start_time": 0,
        "status": "creating",
        "created": 0.0,
        "annotations": None,  # dict[str, str]; a fresh {} per instance
        "cgroup_path": None,  # as the cgroup manager names it, for display
        "cgroups_path_config": None,  # linux.cgroupsPath, to open the same cgroup again
        "cgroup": None,  # the cgroup's directories as create resolved them (styrolite.cgroups.record_of)
        "hooks": None,  # the hook phases the config has; None: unknown (read the config)
        "own_mount_namespace": None,  # False: the container shares the runtime's mounts; None: unknown
        "rootfs": "",
        "exit_code": None,
    }
    __slots__ = tuple(FIELDS)

    def __init__(self, id: str, bundle: str, **values: object) -> None:
        unknown = set(values) - set(self.FIELDS)
        if unknown:
            raise TypeError(f"ContainerState: unknown field {sorted(unknown)[0]!r}")
        for name, default in self.FIELDS.items():
            setattr(self, name, values.get(name, default))
        self.id, self.bundle = id, bundle
        if self.annotations is None:
            self.annotations = {}

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_dict(cls, raw: dict) -> ContainerState:
        known = {key: value for key, value in raw.items() if key in cls.FIELDS and key not in ("id", "bundle")}
        return cls(raw["id"], raw["bundle"], **known)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ContainerState) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"ContainerState({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"

    def oci_state(self) -> dict:
        """The state document of runtime-spec runtime.md (also what hooks read on stdin)."""
        state = {
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "status": self.status,
            "bundle": self.bundle,
            "annotations": dict(self.annotations),
        }
        if self.status in ("created", "running", "paused") or (self.status == "creating" and self.pid):
            state["pid"] = self.pid
        return state


class StateStore:
    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        self.root = os.path.abspath(root)

    def container_dir(self, container_id: str) -> str:
        return os.path.join(self.root, validate_id(container_id))

    def reserve(self, container_id: str) -> str:
        """Make the container's directory; fails when the id is taken (mkdir is atomic)."""
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        path = self.container_dir(container_id)
        try:
            os.mkdir(path, 0o711)
        except FileExistsError:
            raise ContainerError(f"container {container_id!r} already exists") from None
        return path

    def save(self, state: ContainerState) -> None:
        path = os.path.join(self.container_dir(state.id), "state.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(jsonio.dumps(state.to_dict()))
        os.replace(tmp, path)

    def load(self, container_id: str) -> ContainerState:
        path = os.path.join(self.container_dir(container_id), "state.json")
        try:
            with open(path) as f:
                raw = jsonio.loads(f.read())
            state = ContainerState.from_dict(raw)
        except FileNotFoundError:
            raise NotFoundError(f"container {container_id!r} does not exist") from None
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            raise ContainerError(f"read state of container {container_id!r}: {e}") from e
        state.status = self.live_status(state)
        return state

    def ids(self) -> list[str]:
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        return [n for n in names if os.path.exists(os.path.join(self.root, n, "state.json"))]

    def remove(self, container_id: str) -> None:
        directory = self.container_dir(container_id)
        try:  # the usual case: state.json and nothing else (the exec fifo is gone after start)
            for name in os.listdir(directory):
                os.unlink(os.path.join(directory, name))
            os.rmdir(directory)
        except FileNotFoundError:
            pass
        except OSError:
            import shutil

            shutil.rmtree(directory, ignore_errors=True)

    def exec_fifo(self, container_id: str) -> str:
        return os.path.join(self.container_dir(container_id), EXEC_FIFO)

    def live_status(self, state: ContainerState) -> str:
        if state.status == "creating" and not state.pid:
            return "creating"
        if not state.pid or process_start_time(state.pid) != state.pid_start_time:
            return "stopped"
        if os.path.exists(self.exec_fifo(state.id)):
            return "created" if state.status != "creating" else "creating"
        if state.status == "paused":
            return "paused"
        return "running"
