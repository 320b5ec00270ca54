"""Where a container's state lives between CLI calls: ``<root>/<id>/state.json`` (runc's layout).

The stored status is only a hint: the truth is whether the init process (pid + its start time, to
defeat pid reuse) is alive, whether the exec fifo still exists (created, not started) and whether the
cgroup is frozen (paused).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field, fields

from styrolite import OCI_VERSION
from styrolite.errors import ContainerError, NotFoundError

DEFAULT_ROOT = "/run/styrolite"
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,1023}$")
EXEC_FIFO = "exec.fifo"


def validate_id(container_id: str) -> str:
    if not _ID_PATTERN.match(container_id or ""):
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


@dataclass
class ContainerState:
    id: str
    bundle: str
    pid: int = 0
    pid_start_time: int = 0
    status: str = "creating"
    created: float = 0.0
    annotations: dict[str, str] = field(default_factory=dict)
    cgroup_path: str | None = None  # as the cgroup manager names it, for display
    cgroups_path_config: str | None = None  # linux.cgroupsPath, to open the same cgroup again
    rootfs: str = ""
    exit_code: int | None = None

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
            json.dump(asdict(state), f)
        os.replace(tmp, path)

    def load(self, container_id: str) -> ContainerState:
        path = os.path.join(self.container_dir(container_id), "state.json")
        try:
            with open(path) as f:
                raw = json.load(f)
        except FileNotFoundError:
            raise NotFoundError(f"container {container_id!r} does not exist") from None
        except (OSError, ValueError) as e:
            raise ContainerError(f"read state of container {container_id!r}: {e}") from e
        known = {f.name for f in fields(ContainerState)}
        state = ContainerState(**{key: value for key, value in raw.items() if key in known})
        state.status = self.live_status(state)
        return state

    def ids(self) -> list[str]:
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        return [n for n in names if os.path.exists(os.path.join(self.root, n, "state.json"))]

    def remove(self, container_id: str) -> None:
        shutil.rmtree(self.container_dir(container_id), ignore_errors=True)

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
