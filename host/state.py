"""The per-zone state directory, so a second CLI call finds the zones the first one started.

Layout of ``$ZONE_STATE/<name>/`` (default ``/var/lib/zone/zones/<name>/``)::

    zone.json        the ZoneDef the zone was created from
    runtime.json     what the backend started: {"backend", "pid" | "domid", "started_at", ...}
    qemu.pid         written by QEMU itself (-pidfile)
    idm.sock         IDM: QEMU's virtio-serial chardev socket (the host connects as a client)
    qmp.sock         QEMU's QMP control socket (quit when a graceful stop times out)
    ctl.sock         while a foreground `run` holds the IDM link: its call proxy (host.callproxy)
    console.log      the zone's serial console
    disks/           per-zone disks (the config disk; shared images live in the cache, not here)
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from host.errors import HostError, ZoneExistsError, ZoneNotFoundError
from host.zonedef import NAME_PATTERN, ZoneDef

DEFAULT_STATE_ROOT = "/var/lib/zone/zones"
UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the NUL


def state_root() -> Path:
    return Path(os.environ.get("ZONE_STATE") or DEFAULT_STATE_ROOT)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (a zombie QEMU has powered the zone off)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0:1]
    return state != ["Z"] and state != ["X"]


class ZoneDir:
    """One zone's state directory; every path a backend or the CLI needs is a property here."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.path = root / name

    # --- paths -------------------------------------------------------------------------------------
    @property
    def definition_file(self) -> Path:
        return self.path / "zone.json"

    @property
    def runtime_file(self) -> Path:
        return self.path / "runtime.json"

    @property
    def pidfile(self) -> Path:
        return self.path / "qemu.pid"

    @property
    def idm_socket(self) -> Path:
        return self.path / "idm.sock"

    @property
    def qmp_socket(self) -> Path:
        return self.path / "qmp.sock"

    @property
    def control_socket(self) -> Path:
        return self.path / "ctl.sock"

    @property
    def console_log(self) -> Path:
        return self.path / "console.log"

    @property
    def disks(self) -> Path:
        return self.path / "disks"

    # --- lifecycle ---------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.definition_file.is_file()

    def create(self, definition: ZoneDef) -> None:
        """Claim the name (atomically: mkdir) and save the definition; fails if the zone exists."""
        definition.validate()
        for sock in (self.idm_socket, self.qmp_socket, self.control_socket):
            if len(str(sock)) > UNIX_PATH_MAX:
                raise HostError(f"state directory {self.path} is too deep for a unix socket path ({sock})")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.path.mkdir(mode=0o700)
        except FileExistsError as e:
            if self.exists():
                raise ZoneExistsError(
                    f"zone {self.name!r} already exists (remove it with: zonehost rm {self.name})"
                ) from e
            # a leftover directory without a definition (crash during create): take it over
        self.disks.mkdir(exist_ok=True)
        _write_json(self.definition_file, definition.to_json())

    def load(self) -> ZoneDef:
        try:
            document = json.loads(self.definition_file.read_text())
        except FileNotFoundError as e:
            raise ZoneNotFoundError(f"no zone named {self.name!r}") from e
        except (OSError, ValueError) as e:
            raise HostError(f"read {self.definition_file}") from e
        return ZoneDef.from_json(document)

    def save_runtime(self, **info: Any) -> None:
        info.setdefault("started_at", time.time())
        _write_json(self.runtime_file, info)

    def runtime(self) -> dict[str, Any]:
        try:
            return json.loads(self.runtime_file.read_text())
        except (OSError, ValueError):
            return {}

    def update_runtime(self, **info: Any) -> None:
        current = self.runtime()
        current.update(info)
        _write_json(self.runtime_file, current)

    def pid(self) -> int | None:
        """The QEMU pid from QEMU's own pidfile, else from runtime.json; None if neither is there."""
        for source in (self.pidfile,):
            try:
                return int(source.read_text().strip())
            except (OSError, ValueError):
                pass
        pid = self.runtime().get("pid")
        return pid if isinstance(pid, int) else None

    def is_running(self) -> bool:
        pid = self.pid()
        return pid is not None and pid_alive(pid)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def zone_dir(name: str, root: Path | None = None) -> ZoneDir:
    if not NAME_PATTERN.match(name):
        raise ZoneNotFoundError(f"no zone named {name!r} (not a valid zone name)")
    return ZoneDir(root or state_root(), name)


def existing_zone(name: str, root: Path | None = None) -> ZoneDir:
    zone = zone_dir(name, root)
    if not zone.exists():
        raise ZoneNotFoundError(f"no zone named {name!r}")
    return zone


def list_zones(root: Path | None = None) -> list[ZoneDir]:
    base = root or state_root()
    try:
        names = sorted(entry.name for entry in base.iterdir() if entry.is_dir())
    except FileNotFoundError:
        return []
    return [zone for zone in (ZoneDir(base, n) for n in names if NAME_PATTERN.match(n)) if zone.exists()]


def _write_json(path: Path, document: object) -> None:
    """Write-then-rename, so a concurrent reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
