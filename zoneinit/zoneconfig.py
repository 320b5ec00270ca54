"""The zone config: what the host asks PID 1 to do (schema and reasons in docs/zone-config.md).

The host writes it (zonebuild.configdisk) as JSON on a small raw block device; PID 1 reads it with
:func:`read_config_disk`, before any file system module is loaded. Parsing is strict and fails closed:
an unknown field, a wrong type or an inconsistent reference is a ``ConfigError`` naming the field
(``$.containers[0].limits.memory: ...``).

Disk format (no file system: nothing to mount, no kernel parser, no module needed)::

    offset 0    8 bytes   magic b"ZONECFG1"
    offset 8    4 bytes   JSON length, little-endian u32 (at most MAX_JSON bytes)
    offset 12   32 bytes  sha256 of the JSON bytes
    offset 44   ...       zero up to HEADER_SIZE (512)
    offset 512  JSON (UTF-8), then zero padding to a 4096-byte multiple
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

from styrolite.errors import ConfigError
from zoneinit.idrange import owner_shift_problem

SCHEMA_VERSION = 1
MAGIC = b"ZONECFG1"
HEADER = struct.Struct("<8sI32s")
HEADER_SIZE = 512
BLOCK = 4096
MAX_JSON = 1 << 20
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HOSTNAME_RE = re.compile(r"^(?=.{1,64}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                         r"[A-Za-z0-9])?)*$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
ENV_RE = re.compile(r"^[^=\0]+=[^\0]*$")
DISK_ROLES = ("addons", "root", "data")
FSTYPES = ("squashfs", "erofs", "ext4")


@dataclass
class Address:
    address: str
    prefix: int
    gateway: str | None = None


@dataclass
class Network:
    interface: str = "eth0"
    ipv4: Address | None = None
    ipv6: Address | None = None
    dns: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    mtu: int | None = None


@dataclass
class Disk:
    name: str
    role: str           # addons | root | data
    device: str         # /dev/vdc
    sha256: str         # "sha256:<hex>" of the first ``size`` bytes: verified in full before mounting
    size: int           # bytes of image on the device (a block device may be longer)
    fstype: str = "squashfs"
    owner_shift: int = 0  # root images: owners were shifted by this; its containers get a user namespace


@dataclass
class User:
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)


@dataclass
class Limits:
    memory: int | None = None   # bytes
    cpus: float | None = None   # CPU count (1.5 = one and a half CPUs of quota)
    pids: int | None = None


@dataclass
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


@dataclass
class Options:
    poweroff_on_exit: bool = True
    shutdown_grace: float = 10.0
    debug: bool = False


@dataclass
class ZoneConfig:
    name: str
    hostname: str | None = None
    network: Network | None = None
    disks: list[Disk] = field(default_factory=list)
    containers: list[Container] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    options: Options = field(default_factory=Options)
    version: int = SCHEMA_VERSION

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
        """The JSON document; :func:`parse_zone_config` of it gives an equal config."""
        return _drop_none(asdict(self))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


# --- parsing ---------------------------------------------------------------------------------------------------

class _Object:
    """One JSON object being read; tracks its JSON path and refuses fields nobody asked for."""

    def __init__(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected an object, got {type(value).__name__}")
        self.value, self.path, self.used = value, path, set()

    def _get(self, key: str, kinds: tuple[type, ...], type_name: str, required: bool, default: Any) -> Any:
        self.used.add(key)
        if key not in self.value or self.value[key] is None:
            if required:
                raise ConfigError(f"{self.path}.{key}", "missing")
            return default
        item = self.value[key]
        if (isinstance(item, bool) and bool not in kinds) or not isinstance(item, kinds):
            raise ConfigError(f"{self.path}.{key}", f"expected {type_name}, got {type(item).__name__}")
        return item

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> Any:
        return self._get(key, (str,), "a string", required, default)

    def integer(self, key: str, default: int | None = None, *, minimum: int = 0, required: bool = False) -> Any:
        item = self._get(key, (int,), "an integer", required, default)
        if item is not None and item < minimum:
            raise ConfigError(f"{self.path}.{key}", f"must be >= {minimum}")
        return item

    def number(self, key: str, default: float | None = None) -> Any:
        item = self._get(key, (int, float), "a number", False, default)
        return float(item) if item is not None else None

    def flag(self, key: str, default: bool) -> Any:
        return self._get(key, (bool,), "true or false", False, default)

    def strings(self, key: str, *, required: bool = False) -> list[str]:
        items = self._get(key, (list,), "a list of strings", required, [])
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise ConfigError(f"{self.path}.{key}[{i}]", "expected a string")
        return list(items)

    def child(self, key: str, *, required: bool = False) -> _Object | None:
        item = self._get(key, (dict,), "an object", required, None)
        return None if item is None else _Object(item, f"{self.path}.{key}")

    def children(self, key: str) -> list[_Object]:
        items = self._get(key, (list,), "a list", False, [])
        return [_Object(item, f"{self.path}.{key}[{i}]") for i, item in enumerate(items)]

    def done(self) -> None:
        unknown = sorted(set(self.value) - self.used)
        if unknown:
            raise ConfigError(f"{self.path}.{unknown[0]}", "unknown field")


def _ip(obj: _Object, key: str, version: int, *, required: bool = False) -> str | None:
    text = obj.text(key, required=required)
    if text is None:
        return None
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError as e:
        raise ConfigError(f"{obj.path}.{key}", f"{text!r} is not an IP address") from e
    if parsed.version != version:
        raise ConfigError(f"{obj.path}.{key}", f"{text!r} is not an IPv{version} address")
    return str(parsed)


def _address(obj: _Object | None, version: int) -> Address | None:
    if obj is None:
        return None
    address = _ip(obj, "address", version, required=True)
    prefix = obj.integer("prefix", required=True)
    if prefix > (32 if version == 4 else 128):
        raise ConfigError(f"{obj.path}.prefix", f"{prefix} is too long for IPv{version}")
    result = Address(address or "", prefix, _ip(obj, "gateway", version))
    obj.done()
    return result


def _network(obj: _Object | None) -> Network | None:
    if obj is None:
        return None
    interface = obj.text("interface", "eth0")
    if not NAME_RE.match(interface) or len(interface) > 15:
        raise ConfigError(f"{obj.path}.interface", f"{interface!r} is not an interface name")
    dns = obj.strings("dns")
    for i, server in enumerate(dns):
        try:
            ipaddress.ip_address(server)
        except ValueError as e:
            raise ConfigError(f"{obj.path}.dns[{i}]", f"{server!r} is not an IP address") from e
    network = Network(interface, _address(obj.child("ipv4"), 4), _address(obj.child("ipv6"), 6), dns,
                      obj.strings("search"), obj.integer("mtu", minimum=68))
    obj.done()
    return network


def _disk(obj: _Object) -> Disk:
    name = obj.text("name", required=True)
    if not NAME_RE.match(name):
        raise ConfigError(f"{obj.path}.name", f"{name!r} is not a valid name")
    role = obj.text("role", required=True)
    if role not in DISK_ROLES:
        raise ConfigError(f"{obj.path}.role", f"{role!r} is not one of {', '.join(DISK_ROLES)}")
    device = obj.text("device", required=True)
    if not device.startswith("/dev/") or ".." in device.split("/"):
        raise ConfigError(f"{obj.path}.device", f"{device!r} is not a /dev path")
    digest = obj.text("sha256", required=True)
    if not DIGEST_RE.match(digest):
        raise ConfigError(f"{obj.path}.sha256", "expected 'sha256:' and 64 lowercase hex digits")
    fstype = obj.text("fstype", "squashfs")
    if fstype not in FSTYPES:
        raise ConfigError(f"{obj.path}.fstype", f"{fstype!r} is not one of {', '.join(FSTYPES)}")
    owner_shift = obj.integer("owner_shift", 0)
    if owner_shift:
        problem = owner_shift_problem(owner_shift) if role == "root" else "only a root image has owners to shift"
        if problem:
            raise ConfigError(f"{obj.path}.owner_shift", problem)
    disk = Disk(name, role, device, digest, obj.integer("size", required=True, minimum=1), fstype, owner_shift)
    obj.done()
    return disk


def _container(obj: _Object) -> Container:
    name = obj.text("name", required=True)
    if not NAME_RE.match(name):
        raise ConfigError(f"{obj.path}.name", f"{name!r} is not a valid container name")
    args = obj.strings("args", required=True)
    if not args:
        raise ConfigError(f"{obj.path}.args", "empty: the container needs a program to run")
    env = obj.strings("env")
    for i, item in enumerate(env):
        if not ENV_RE.match(item):
            raise ConfigError(f"{obj.path}.env[{i}]", f"{item!r} is not KEY=VALUE")
    cwd = obj.text("cwd", "/")
    if not cwd.startswith("/"):
        raise ConfigError(f"{obj.path}.cwd", f"{cwd!r} is not an absolute path")
    user_obj = obj.child("user")
    user = User()
    if user_obj is not None:
        gids = user_obj._get("additional_gids", (list,), "a list of integers", False, [])
        for i, gid in enumerate(gids):
            if isinstance(gid, bool) or not isinstance(gid, int) or gid < 0:
                raise ConfigError(f"{user_obj.path}.additional_gids[{i}]", "expected a non-negative integer")
        user = User(user_obj.integer("uid", 0), user_obj.integer("gid", 0), list(gids))
        user_obj.done()
    limits_obj = obj.child("limits")
    limits = Limits()
    if limits_obj is not None:
        cpus = limits_obj.number("cpus")
        if cpus is not None and cpus <= 0:
            raise ConfigError(f"{limits_obj.path}.cpus", "must be > 0")
        limits = Limits(limits_obj.integer("memory", minimum=1 << 20), cpus, limits_obj.integer("pids", minimum=1))
        limits_obj.done()
    container = Container(name, obj.text("image", required=True), args, env, cwd, user, limits,
                          obj.flag("terminal", False), obj.flag("stdin", False), obj.flag("main", False))
    obj.done()
    return container


def parse_zone_config(document: Any) -> ZoneConfig:
    """Validate a decoded JSON document into a ZoneConfig; ConfigError names the first bad field."""
    root = _Object(document, "$")
    version = root.integer("version", required=True)
    if version != SCHEMA_VERSION:
        raise ConfigError("$.version", f"unsupported schema version {version} (this zone reads {SCHEMA_VERSION})")
    name = root.text("name", required=True)
    if not NAME_RE.match(name):
        raise ConfigError("$.name", f"{name!r} is not a valid zone name")
    hostname = root.text("hostname")
    if hostname is not None and not HOSTNAME_RE.match(hostname):
        raise ConfigError("$.hostname", f"{hostname!r} is not a valid host name")
    network = _network(root.child("network"))
    disks = [_disk(d) for d in root.children("disks")]
    containers = [_container(c) for c in root.children("containers")]
    modules = root.strings("modules")
    options_obj = root.child("options")
    options = Options()
    if options_obj is not None:
        grace = options_obj.number("shutdown_grace", 10.0)
        if grace < 0:
            raise ConfigError(f"{options_obj.path}.shutdown_grace", "must be >= 0")
        options = Options(options_obj.flag("poweroff_on_exit", True), grace, options_obj.flag("debug", False))
        options_obj.done()
    root.done()
    config = ZoneConfig(name, hostname, network, disks, containers, modules, options, version)
    _check_references(config)
    return config


def _check_references(config: ZoneConfig) -> None:
    seen: set[str] = set()
    for i, disk in enumerate(config.disks):
        if disk.name in seen:
            raise ConfigError(f"$.disks[{i}].name", f"duplicate disk name {disk.name!r}")
        seen.add(disk.name)
    if sum(d.role == "addons" for d in config.disks) > 1:
        raise ConfigError("$.disks", "more than one addons disk")
    names: set[str] = set()
    for i, container in enumerate(config.containers):
        if container.name in names:
            raise ConfigError(f"$.containers[{i}].name", f"duplicate container name {container.name!r}")
        names.add(container.name)
        disk = next((d for d in config.disks if d.name == container.image), None)
        if disk is None or disk.role != "root":
            raise ConfigError(f"$.containers[{i}].image", f"{container.image!r} is not a disk with role 'root'")
    if sum(c.main for c in config.containers) > 1:
        raise ConfigError("$.containers", "more than one container has main: true")


def loads(text: str | bytes) -> ZoneConfig:
    try:
        document = json.loads(text)
    except ValueError as e:
        raise ConfigError("$", f"not valid JSON: {e}") from e
    return parse_zone_config(document)


def dumps(config: ZoneConfig) -> str:
    """Canonical JSON (sorted keys, no spaces): the same config gives the same bytes."""
    return json.dumps(config.to_json(), sort_keys=True, separators=(",", ":"))


# --- the raw config disk ---------------------------------------------------------------------------------------

def encode_config_disk(config: ZoneConfig) -> bytes:
    """The whole disk image: header, JSON, zero padding to a 4096-byte multiple."""
    import hashlib

    body = dumps(config).encode()
    if len(body) > MAX_JSON:
        raise ConfigError("$", f"config is {len(body)} bytes; the disk holds at most {MAX_JSON}")
    header = HEADER.pack(MAGIC, len(body), hashlib.sha256(body).digest()).ljust(HEADER_SIZE, b"\0")
    image = header + body
    return image + b"\0" * (-len(image) % BLOCK)


def decode_config_disk(data: bytes, where: str = "config disk") -> ZoneConfig:
    import hashlib

    if len(data) < HEADER_SIZE or data[: len(MAGIC)] != MAGIC:
        raise ConfigError("", f"{where}: no zone config (bad magic; expected {MAGIC.decode()})")
    _, length, digest = HEADER.unpack_from(data)
    if length > MAX_JSON:
        raise ConfigError("", f"{where}: config length {length} exceeds {MAX_JSON}")
    body = data[HEADER_SIZE: HEADER_SIZE + length]
    if len(body) != length:
        raise ConfigError("", f"{where}: truncated ({len(body)} of {length} config bytes)")
    if hashlib.sha256(body).digest() != digest:
        raise ConfigError("", f"{where}: config checksum mismatch (corrupt disk)")
    return loads(body)


def read_config_disk(path: str) -> ZoneConfig:
    """Read and validate the config straight from the block device (or an image file); nothing is mounted."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        header = os.pread(fd, HEADER_SIZE, 0)
        length = HEADER.unpack_from(header)[1] if len(header) >= HEADER.size and header[:8] == MAGIC else 0
        data = header + os.pread(fd, min(length, MAX_JSON), HEADER_SIZE) if length else header
    finally:
        os.close(fd)
    return decode_config_disk(data, path)
