"""The zone config document (schema version 1): plain records (styrolite.records), and its canonical JSON.

Built by the parser (``zoneinit.config.parser``) from JSON, by the host (``zonebuild.configdisk``) from images
and options. ``dumps`` gives the canonical text: the same config always gives the same bytes.
"""

from __future__ import annotations

from typing import Any

from styrolite.records import asdict, field, record

SCHEMA_VERSION = 1


@record
class Address:
    address: str
    prefix: int
    gateway: str | None = None


@record
class Network:
    interface: str = "eth0"
    ipv4: Address | None = None
    ipv6: Address | None = None
    dns: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    mtu: int | None = None


@record
class Disk:
    name: str
    role: str           # addons | root | data | extension
    device: str         # /dev/vdc
    sha256: str         # "sha256:<hex>" of the first ``size`` bytes: verified in full before mounting
    size: int           # bytes of image on the device (a block device may be longer)
    fstype: str = "squashfs"
    owner_shift: int = 0  # root images: owners were shifted by this; its containers get a user namespace


@record
class User:
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)


@record
class Limits:
    memory: int | None = None   # bytes
    cpus: float | None = None   # CPU count (1.5 = one and a half CPUs of quota)
    pids: int | None = None


@record
class Container:
    name: str
    image: str                  # the name of a disk with role "root"
    args: list[str]             # the full argv (image Entrypoint + Cmd, or the override), resolved by the host
    env: list[str] = field(default_factory=list)  # "KEY=VALUE", image Env merged with overrides
    cwd: str = "/"
    user: User = field(default_factory=User)
    limits: Limits = field(default_factory=Limits)
    terminal: bool = False
    stdin: bool = False
    main: bool = False          # the workload whose exit is the zone's exit
    hostname: str | None = None         # its own UTS name (default: the zone's)
    readonly_root: bool = False         # the overlay's writable layer exists either way; this forbids writes
    annotations: dict[str, str] = field(default_factory=dict)   # copied into its OCI config.json


@record
class Extension:
    """A system extension image on a disk of role ``extension``, mounted at /run/zone/extensions/<name>."""

    name: str
    disk: str                   # the name of its disk (role "extension")
    kernel_releases: list[str] = field(default_factory=list)   # the releases its modules are for (empty: none)
    modules: list[str] = field(default_factory=list)           # loaded from it at boot, dependencies first
    tools: bool = False         # its bin/ and lib/ are offered to zone-level exec (never to containers)


@record
class Component:
    """What the zone was composed from, pinned by digest (reported in zone.info; PID 1 acts on none of it)."""

    kind: str                   # kernel | initrd | app | extension
    digest: str                 # sha256 of what was used: the image (index or manifest) digest, or the file's
    ref: str | None = None      # the reference or path it came from
    manifest: str | None = None  # the platform manifest chosen from an index
    name: str | None = None     # the extension's or container's name


@record
class Options:
    poweroff_on_exit: bool = True
    shutdown_grace: float = 10.0
    debug: bool = False


@record
class ZoneConfig:
    name: str
    hostname: str | None = None
    network: Network | None = None
    disks: list[Disk] = field(default_factory=list)
    containers: list[Container] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    options: Options = field(default_factory=Options)
    version: int = SCHEMA_VERSION
    extensions: list[Extension] = field(default_factory=list)
    components: list[Component] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)   # the pod's, for its shared namespaces

    def disk(self, name: str) -> Disk:
        for disk in self.disks:
            if disk.name == name:
                return disk
        raise KeyError(name)

    def main_container(self) -> Container | None:
        for container in self.containers:
            if container.main:
                return container
        return self.containers[0] if len(self.containers) == 1 else None

    def to_json(self) -> dict[str, Any]:
        """The JSON document; parsing it gives an equal config."""
        return _drop_defaults(asdict(self))


# left out when empty: older documents stay equal
OPTIONAL_LISTS = ("annotations", "extensions", "components", "sysctls")


def _drop_defaults(value: Any) -> Any:
    """None, and the empty annotations, extensions, components and sysctls, are left out: the document says only what
    was asked (and a config without extensions has the bytes it had before they existed)."""
    if isinstance(value, dict):
        return {k: _drop_defaults(v) for k, v in value.items()
                if v is not None and not (k in OPTIONAL_LISTS and not v)}
    if isinstance(value, list):
        return [_drop_defaults(v) for v in value]
    return value


def dumps(config: ZoneConfig) -> str:
    """Canonical JSON (sorted keys, no spaces): the same config gives the same bytes."""
    import json

    return json.dumps(config.to_json(), sort_keys=True, separators=(",", ":"))
