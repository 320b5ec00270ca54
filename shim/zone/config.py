"""The zone shim's settings: what each pod's zone boots from and how the shim treats it.

Read from one file, TOML (``*.toml``) or JSON (anything else), found in this order:

1. the runtime handler's ``options.ConfigPath`` in containerd's config, which containerd's CRI plugin sends
   the shim as ``runtimeoptions.v1.Options`` with the sandbox's Create (``shim.runtime_options``);
2. ``$ZONE_SHIM_CONFIG`` (containerd passes its environment to shims);
3. ``/etc/zone/shim.toml`` if it exists;
4. else the defaults below.

    kernel        = ""           # the kernel OCI image (a layout directory that exists); "" = zonebuild's, cached
    initrd        = ""           # our zone initrd; "" = the one built from this installation, cached
    memory_mib    = 512          # each pod zone's memory
    vcpus         = 1
    state_dir     = "/run/zone/pods"   # one directory per pod zone (sockets, console.log, config disk)
    boot_timeout  = 120.0        # s from QEMU's start to PID 1's zone.ready; then RunPodSandbox fails
    stop_timeout  = 10.0         # s between zone.shutdown and killing the VMM
    rootfs_cache  = ""           # container root images; "" = $ZONE_CACHE/host/pod-rootfs
    user_namespace = true        # containers run in a user namespace (images' owners shifted by 65536)
    kernel_args   = []           # appended to the zone kernel's command line
    accel         = ""           # "kvm" or "tcg"; "" = KVM when it really works, else TCG
    hypervisor    = "qemu"       # the only one a shim can drive here (see docs/kubernetes.md)

An unknown key or a value of the wrong type is an error naming it, so a typo fails RunPodSandbox loudly
instead of booting a zone the operator did not configure.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV = "ZONE_SHIM_CONFIG"
SYSTEM_CONFIG = "/etc/zone/shim.toml"
HYPERVISORS = ("qemu",)


class ConfigError(ValueError):
    """The shim's config file cannot be read or holds a bad value; the message names the file and key."""


@dataclass(frozen=True)
class ShimConfig:
    kernel: str = ""
    initrd: str = ""
    memory_mib: int = 512
    vcpus: int = 1
    state_dir: str = "/run/zone/pods"
    boot_timeout: float = 120.0
    stop_timeout: float = 10.0
    rootfs_cache: str = ""
    user_namespace: bool = True
    kernel_args: list[str] = field(default_factory=list)
    accel: str = ""
    hypervisor: str = "qemu"
    source: str = "defaults"   # where it came from (logged; not a key of the file)

    def validate(self) -> ShimConfig:
        where = self.source
        if self.memory_mib < 64:
            raise ConfigError(f"{where}: memory_mib = {self.memory_mib}: at least 64")
        if not 1 <= self.vcpus <= 64:
            raise ConfigError(f"{where}: vcpus = {self.vcpus}: 1 to 64")
        for name in ("boot_timeout", "stop_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{where}: {name} must be positive")
        if not os.path.isabs(self.state_dir):
            raise ConfigError(f"{where}: state_dir = {self.state_dir!r}: an absolute path")
        if self.hypervisor not in HYPERVISORS:
            raise ConfigError(f"{where}: hypervisor = {self.hypervisor!r}: a shim drives {', '.join(HYPERVISORS)} "
                              "(Xen PV needs containerd inside dom0; see docs/kubernetes.md)")
        if self.accel not in ("", "kvm", "tcg"):
            raise ConfigError(f"{where}: accel = {self.accel!r}: \"kvm\", \"tcg\" or \"\"")
        for name in ("kernel", "initrd"):
            value = getattr(self, name)
            if value and not os.path.exists(value):
                raise ConfigError(f"{where}: {name} = {value!r}: no such file or directory")
        return self


_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,),
                                       "list[str]": (list,)}


def parse(document: Any, source: str) -> ShimConfig:
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected a table/object of settings")
    known = {f.name: f for f in fields(ShimConfig) if f.name != "source"}
    values: dict[str, Any] = {}
    for key, value in document.items():
        spec = known.get(key)
        if spec is None:
            raise ConfigError(f"{source}: unknown setting {key!r} (known: {', '.join(sorted(known))})")
        kind = str(spec.type)
        allowed = _TYPES[kind]
        if (isinstance(value, bool) and kind != "bool") or not isinstance(value, allowed):
            raise ConfigError(f"{source}: {key} = {value!r}: expected {kind}")
        if kind == "list[str]" and not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{source}: {key}: expected a list of strings")
        values[key] = float(value) if kind == "float" else value
    return ShimConfig(**values, source=source).validate()


def load_file(path: str) -> ShimConfig:
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"zone shim config {path}: {e.strerror}") from e
    try:
        document = tomllib.loads(raw.decode()) if path.endswith(".toml") else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"zone shim config {path}: not valid {'TOML' if path.endswith('.toml') else 'JSON'}: "
                          f"{e}") from e
    return parse(document, path)


def load(config_path: str = "") -> ShimConfig:
    """The settings: from ``config_path`` (the runtime options'), else $ZONE_SHIM_CONFIG, else the system
    file, else the defaults."""
    for candidate in (config_path, os.environ.get(ENV, "")):
        if candidate:
            return load_file(candidate)
    if os.path.exists(SYSTEM_CONFIG):
        return load_file(SYSTEM_CONFIG)
    return ShimConfig().validate()
