"""The one zone-config parser: JSON document -> ``ZoneConfig`` (schema and reasons in docs/zone-config.md).

Strict and fail-closed: an unknown field, a wrong type or an inconsistent reference is a ``ZoneConfigError``
naming the field (``$.containers[0].limits.memory: ...``). PID 1 reads the config disk with it (in a forked
child, ``zoneinit.mounts.configdisk``), the host validates what it writes with it (``zonebuild.configdisk``),
and IDM ``container.create`` reads a container definition with :func:`parse_container`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from zoneinit.config.document import (
    SCHEMA_VERSION,
    Address,
    Component,
    Container,
    Disk,
    Extension,
    Limits,
    Network,
    Options,
    User,
    ZoneConfig,
)
from zoneinit.config.idrange import owner_shift_problem
from zoneinit.config.sysctls import sysctl_namespace
from zoneinit.errors import ZoneConfigError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HOSTNAME_RE = re.compile(r"^(?=.{1,64}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                         r"[A-Za-z0-9])?)*$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
ENV_RE = re.compile(r"^[^=\0]+=[^\0]*$")
DISK_ROLES = ("addons", "root", "data", "extension")
EXTENSION_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")   # a directory name under /run/zone/extensions
RELEASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$")   # a kernel release (uname -r)
MODULE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
COMPONENT_KINDS = ("kernel", "initrd", "app", "extension")
FSTYPES = ("squashfs", "erofs", "ext4")
MAX_ID = 2**32 - 1   # uid_t / gid_t


# --- parsing ---------------------------------------------------------------------------------------------------

class _Object:
    """One JSON object being read; tracks its JSON path and refuses fields nobody asked for."""

    def __init__(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise ZoneConfigError(path, f"expected an object, got {type(value).__name__}")
        self.value, self.path, self.used = value, path, set()

    def _get(self, key: str, kinds: tuple[type, ...], type_name: str, required: bool, default: Any) -> Any:
        self.used.add(key)
        if key not in self.value or self.value[key] is None:
            if required:
                raise ZoneConfigError(f"{self.path}.{key}", "missing")
            return default
        item = self.value[key]
        if (isinstance(item, bool) and bool not in kinds) or not isinstance(item, kinds):
            raise ZoneConfigError(f"{self.path}.{key}", f"expected {type_name}, got {type(item).__name__}")
        return item

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> Any:
        return self._get(key, (str,), "a string", required, default)

    def integer(self, key: str, default: int | None = None, *, minimum: int = 0, maximum: int | None = None,
                required: bool = False) -> Any:
        item = self._get(key, (int,), "an integer", required, default)
        if item is not None and item < minimum:
            raise ZoneConfigError(f"{self.path}.{key}", f"must be >= {minimum}")
        if item is not None and maximum is not None and item > maximum:
            raise ZoneConfigError(f"{self.path}.{key}", f"must be <= {maximum}")
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
                raise ZoneConfigError(f"{self.path}.{key}[{i}]", "expected a string")
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
            raise ZoneConfigError(f"{self.path}.{unknown[0]}", "unknown field")


def _ip(obj: _Object, key: str, version: int, *, required: bool = False) -> str | None:
    import ipaddress  # the network part only: PID 1 parses IDM container definitions without it

    text = obj.text(key, required=required)
    if text is None:
        return None
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError as e:
        raise ZoneConfigError(f"{obj.path}.{key}", f"{text!r} is not an IP address") from e
    if parsed.version != version:
        raise ZoneConfigError(f"{obj.path}.{key}", f"{text!r} is not an IPv{version} address")
    return str(parsed)


def _address(obj: _Object | None, version: int) -> Address | None:
    if obj is None:
        return None
    address = _ip(obj, "address", version, required=True)
    prefix = obj.integer("prefix", required=True)
    if prefix > (32 if version == 4 else 128):
        raise ZoneConfigError(f"{obj.path}.prefix", f"{prefix} is too long for IPv{version}")
    result = Address(address or "", prefix, _ip(obj, "gateway", version))
    obj.done()
    return result


def _network(obj: _Object | None) -> Network | None:
    if obj is None:
        return None
    import ipaddress

    interface = obj.text("interface", "eth0")
    if not NAME_RE.match(interface) or len(interface) > 15:
        raise ZoneConfigError(f"{obj.path}.interface", f"{interface!r} is not an interface name")
    dns = obj.strings("dns")
    for i, server in enumerate(dns):
        try:
            ipaddress.ip_address(server)
        except ValueError as e:
            raise ZoneConfigError(f"{obj.path}.dns[{i}]", f"{server!r} is not an IP address") from e
    network = Network(interface, _address(obj.child("ipv4"), 4), _address(obj.child("ipv6"), 6), dns,
                      obj.strings("search"), obj.integer("mtu", minimum=68))
    obj.done()
    return network


def _disk(obj: _Object) -> Disk:
    name = obj.text("name", required=True)
    if not NAME_RE.match(name):
        raise ZoneConfigError(f"{obj.path}.name", f"{name!r} is not a valid name")
    role = obj.text("role", required=True)
    if role not in DISK_ROLES:
        raise ZoneConfigError(f"{obj.path}.role", f"{role!r} is not one of {', '.join(DISK_ROLES)}")
    device = obj.text("device", required=True)
    if not device.startswith("/dev/") or ".." in device.split("/"):
        raise ZoneConfigError(f"{obj.path}.device", f"{device!r} is not a /dev path")
    digest = obj.text("sha256", required=True)
    if not DIGEST_RE.match(digest):
        raise ZoneConfigError(f"{obj.path}.sha256", "expected 'sha256:' and 64 lowercase hex digits")
    fstype = obj.text("fstype", "squashfs")
    if fstype not in FSTYPES:
        raise ZoneConfigError(f"{obj.path}.fstype", f"{fstype!r} is not one of {', '.join(FSTYPES)}")
    owner_shift = obj.integer("owner_shift", 0)
    if owner_shift:
        problem = owner_shift_problem(owner_shift) if role == "root" else "only a root image has owners to shift"
        if problem:
            raise ZoneConfigError(f"{obj.path}.owner_shift", problem)
    disk = Disk(name, role, device, digest, obj.integer("size", required=True, minimum=1), fstype, owner_shift)
    obj.done()
    return disk


def _user(obj: _Object | None) -> User:
    if obj is None:
        return User()
    gids = obj._get("additional_gids", (list,), "a list of integers", False, [])
    for i, gid in enumerate(gids):
        if isinstance(gid, bool) or not isinstance(gid, int) or not 0 <= gid <= MAX_ID:
            raise ZoneConfigError(f"{obj.path}.additional_gids[{i}]", f"expected an integer in [0, {MAX_ID}]")
    user = User(obj.integer("uid", 0, maximum=MAX_ID), obj.integer("gid", 0, maximum=MAX_ID), list(gids))
    obj.done()
    return user


def _limits(obj: _Object | None) -> Limits:
    if obj is None:
        return Limits()
    cpus = obj.number("cpus")
    if cpus is not None and cpus <= 0:
        raise ZoneConfigError(f"{obj.path}.cpus", "must be > 0")
    limits = Limits(obj.integer("memory", minimum=1 << 20), cpus, obj.integer("pids", minimum=1))
    obj.done()
    return limits


def _annotations(obj: _Object | None) -> dict[str, str]:
    if obj is None:
        return {}
    for key, value in obj.value.items():
        if not isinstance(value, str):
            raise ZoneConfigError(f"{obj.path}.{key}", "expected a string")
    return dict(obj.value)


def _sysctls(obj: _Object | None) -> dict[str, str]:
    """The pod's sysctls: string values, each of a namespace the pod has (never one of the whole kernel)."""
    if obj is None:
        return {}
    for key, value in obj.value.items():
        if not isinstance(value, str):
            raise ZoneConfigError(f"{obj.path}[{key!r}]", "expected a string")
        if "/" in key or "" in key.split(".") or ".." in key:
            raise ZoneConfigError(f"{obj.path}[{key!r}]", "not a sysctl name")
        if sysctl_namespace(key) is None:
            raise ZoneConfigError(f"{obj.path}[{key!r}]", "sysctl is not namespaced: setting it would change the "
                                  "whole zone kernel, not the pod (only net.*, the IPC ones, fs.mqueue.* and "
                                  "kernel.domainname are a pod's)")
    return dict(obj.value)


def _container(obj: _Object) -> Container:
    name = obj.text("name", required=True)
    if not NAME_RE.match(name):
        raise ZoneConfigError(f"{obj.path}.name", f"{name!r} is not a valid container name")
    args = obj.strings("args", required=True)
    if not args:
        raise ZoneConfigError(f"{obj.path}.args", "empty: the container needs a program to run")
    env = obj.strings("env")
    for i, item in enumerate(env):
        if not ENV_RE.match(item):
            raise ZoneConfigError(f"{obj.path}.env[{i}]", f"{item!r} is not KEY=VALUE")
    cwd = obj.text("cwd", "/")
    if not cwd.startswith("/"):
        raise ZoneConfigError(f"{obj.path}.cwd", f"{cwd!r} is not an absolute path")
    hostname = obj.text("hostname")
    if hostname is not None and not HOSTNAME_RE.match(hostname):
        raise ZoneConfigError(f"{obj.path}.hostname", f"{hostname!r} is not a valid host name")
    container = Container(name, obj.text("image", required=True), args, env, cwd, _user(obj.child("user")),
                          _limits(obj.child("limits")), obj.flag("terminal", False), obj.flag("stdin", False),
                          obj.flag("main", False), hostname, obj.flag("readonly_root", False),
                          _annotations(obj.child("annotations")))
    obj.done()
    return container


def _matching(obj: _Object, key: str, pattern: re.Pattern[str], what: str) -> list[str]:
    items = obj.strings(key)
    for i, item in enumerate(items):
        if not pattern.match(item):
            raise ZoneConfigError(f"{obj.path}.{key}[{i}]", f"{item!r} is not {what}")
    return items


def _extension(obj: _Object) -> Extension:
    name = obj.text("name", required=True)
    if not EXTENSION_NAME_RE.match(name):
        raise ZoneConfigError(f"{obj.path}.name", f"{name!r} is not an extension name (a-z, 0-9, '_', '.', '-')")
    extension = Extension(name, obj.text("disk", required=True),
                          _matching(obj, "kernel_releases", RELEASE_RE, "a kernel release"),
                          _matching(obj, "modules", MODULE_RE, "a module name"), obj.flag("tools", False))
    if extension.modules and not extension.kernel_releases:
        raise ZoneConfigError(f"{obj.path}.modules", "modules to load, but no kernel_releases they are built for")
    obj.done()
    return extension


def _component(obj: _Object) -> Component:
    kind = obj.text("kind", required=True)
    if kind not in COMPONENT_KINDS:
        raise ZoneConfigError(f"{obj.path}.kind", f"{kind!r} is not one of {', '.join(COMPONENT_KINDS)}")
    digests = []
    for key in ("digest", "manifest"):
        value = obj.text(key, required=key == "digest")
        if value is not None and not DIGEST_RE.match(value):
            raise ZoneConfigError(f"{obj.path}.{key}", "expected 'sha256:' and 64 lowercase hex digits")
        digests.append(value)
    component = Component(kind, digests[0], obj.text("ref"), digests[1], obj.text("name"))
    obj.done()
    return component


def parse_container(document: Any, path: str = "$") -> Container:
    """One container definition (the shape of an entry of ``containers``), e.g. from IDM ``container.create``;
    which disk its ``image`` names is checked when the container is prepared."""
    return _container(_Object(document, path))


def parse_zone_config(document: Any) -> ZoneConfig:
    """Validate a decoded JSON document into a ZoneConfig; ZoneConfigError names the first bad field."""
    root = _Object(document, "$")
    version = root.integer("version", required=True)
    if version != SCHEMA_VERSION:
        raise ZoneConfigError("$.version", f"unsupported schema version {version} (this zone reads {SCHEMA_VERSION})")
    name = root.text("name", required=True)
    if not NAME_RE.match(name):
        raise ZoneConfigError("$.name", f"{name!r} is not a valid zone name")
    hostname = root.text("hostname")
    if hostname is not None and not HOSTNAME_RE.match(hostname):
        raise ZoneConfigError("$.hostname", f"{hostname!r} is not a valid host name")
    network = _network(root.child("network"))
    disks = [_disk(d) for d in root.children("disks")]
    containers = [_container(c) for c in root.children("containers")]
    modules = _matching(root, "modules", MODULE_RE, "a module name")
    extensions = [_extension(e) for e in root.children("extensions")]
    components = [_component(c) for c in root.children("components")]
    sysctls = _sysctls(root.child("sysctls"))
    options_obj = root.child("options")
    options = Options()
    if options_obj is not None:
        grace = options_obj.number("shutdown_grace", 10.0)
        if grace < 0:
            raise ZoneConfigError(f"{options_obj.path}.shutdown_grace", "must be >= 0")
        options = Options(options_obj.flag("poweroff_on_exit", True), grace, options_obj.flag("debug", False))
        options_obj.done()
    root.done()
    config = ZoneConfig(name, hostname, network, disks, containers, modules, options, version, extensions, components,
                        sysctls)
    _check_references(config)
    return config


def _check_references(config: ZoneConfig) -> None:
    seen: set[str] = set()
    for i, disk in enumerate(config.disks):
        if disk.name in seen:
            raise ZoneConfigError(f"$.disks[{i}].name", f"duplicate disk name {disk.name!r}")
        seen.add(disk.name)
    if sum(d.role == "addons" for d in config.disks) > 1:
        raise ZoneConfigError("$.disks", "more than one addons disk")
    names: set[str] = set()
    for i, container in enumerate(config.containers):
        if container.name in names:
            raise ZoneConfigError(f"$.containers[{i}].name", f"duplicate container name {container.name!r}")
        names.add(container.name)
        disk = next((d for d in config.disks if d.name == container.image), None)
        if disk is None or disk.role != "root":
            raise ZoneConfigError(f"$.containers[{i}].image", f"{container.image!r} is not a disk with role 'root'")
    if sum(c.main for c in config.containers) > 1:
        raise ZoneConfigError("$.containers", "more than one container has main: true")
    extension_disks = {d.name for d in config.disks if d.role == "extension"}
    used: dict[str, str] = {}
    for i, extension in enumerate(config.extensions):
        if extension.name in used.values():
            raise ZoneConfigError(f"$.extensions[{i}].name", f"duplicate extension name {extension.name!r}")
        if extension.disk not in extension_disks:
            raise ZoneConfigError(f"$.extensions[{i}].disk", f"{extension.disk!r} is not a disk with role 'extension'")
        if extension.disk in used:
            raise ZoneConfigError(f"$.extensions[{i}].disk", f"disk {extension.disk!r} is already extension "
                                                             f"{used[extension.disk]!r}")
        used[extension.disk] = extension.name
    for name in sorted(extension_disks - set(used)):
        raise ZoneConfigError("$.disks", f"extension disk {name!r} is named by no entry of extensions")


def loads(text: str | bytes) -> ZoneConfig:
    try:
        document = json.loads(text)
    except ValueError as e:
        raise ZoneConfigError("$", f"not valid JSON: {e}") from e
    return parse_zone_config(document)
