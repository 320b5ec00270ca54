"""A zone definition: what to boot (kernel image, initrd, app image) and how (memory, vcpus, network, backend).

It is plain data, saved as JSON in the zone's state directory (``host.state``) so that a later CLI call
sees exactly what a zone was started with. ``validate()`` checks user input and raises ``ZoneDefError``
naming the bad field, so the CLI can print one clear line.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from host.errors import ZoneDefError

BACKENDS = ("qemu", "xen")
MAIN_CONTAINER = "main"   # the name `zonehost run` gives the zone's one container (the image's command)
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
ENV_KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MODULE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PULL_POLICIES = ("missing", "always", "never")
MIN_MEMORY_MIB = 64
MAX_VCPUS = 64

# QEMU user-mode networking (slirp) always offers this network; a zone that asks for networking without
# an explicit address gets these values.
USER_NET_ADDRESS = "10.0.2.15/24"
USER_NET_GATEWAY = "10.0.2.2"
USER_NET_DNS = "10.0.2.3"


@dataclass
class NetworkDef:
    """User-mode QEMU networking (or a Xen vif) plus the address configuration PID 1 applies in the zone."""

    address: str | None = USER_NET_ADDRESS   # CIDR; None = the zone leaves eth0 unconfigured
    gateway: str | None = USER_NET_GATEWAY
    dns: list[str] = field(default_factory=lambda: [USER_NET_DNS])
    host_forwards: list[str] = field(default_factory=list)  # QEMU hostfwd: "tcp::8080-:80"
    bridge: str | None = None                  # Xen vif bridge (ignored by QEMU)

    def validate(self) -> None:
        if self.address is not None:
            try:
                ipaddress.ip_interface(self.address)
            except ValueError as e:
                raise ZoneDefError(f"network.address: {self.address!r} is not an address/prefix") from e
            if "/" not in self.address:
                raise ZoneDefError(f"network.address: {self.address!r} needs a prefix length (e.g. /24)")
        for name, value in (("network.gateway", self.gateway), *(("network.dns", d) for d in self.dns)):
            if value is None:
                continue
            try:
                ipaddress.ip_address(value)
            except ValueError as e:
                raise ZoneDefError(f"{name}: {value!r} is not an IP address") from e
        for forward in self.host_forwards:
            if not re.fullmatch(r"(tcp|udp):[0-9.]*:\d+-[0-9.]*:\d+", forward):
                raise ZoneDefError(f"network.host_forwards: {forward!r} is not PROTO:[HOSTADDR]:PORT-[ADDR]:PORT")


@dataclass
class ZoneDef:
    """Everything needed to (re)create one zone."""

    name: str
    kernel_image: str                        # kernel OCI image (/kernel/image etc.): a layout dir or a reference
    initrd: str                              # our initramfs (Nuitka /init), compressed cpio
    app_image: str | None = None             # OCI layout dir, image tar or reference; None = built-in busybox
    command: list[str] | None = None         # overrides the image's Entrypoint+Cmd
    env: dict[str, str] = field(default_factory=dict)
    memory_mib: int = 256
    vcpus: int = 1
    network: NetworkDef | None = None
    backend: str = "qemu"
    cmdline_extra: list[str] = field(default_factory=list)  # appended to the kernel command line
    remove_on_exit: bool = False             # `run --rm`
    user_namespace: bool = True              # container root is not zone root (an ownership-shifted root image)
    extensions: list[str] = field(default_factory=list)   # system extension images: references or layout dirs
    modules: list[str] = field(default_factory=list)      # kernel modules to load at boot (extensions, addons)
    pull: str = "missing"                    # pull policy for references: missing | always | never

    def validate(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ZoneDefError(
                f"name: {self.name!r} must be 1-63 characters of a-z, 0-9, '_', '.', '-', starting alphanumeric"
            )
        if self.backend not in BACKENDS:
            raise ZoneDefError(f"backend: {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if not isinstance(self.memory_mib, int) or self.memory_mib < MIN_MEMORY_MIB:
            raise ZoneDefError(f"memory: {self.memory_mib!r} MiB is below the minimum of {MIN_MEMORY_MIB} MiB")
        if not isinstance(self.vcpus, int) or not 1 <= self.vcpus <= MAX_VCPUS:
            raise ZoneDefError(f"vcpus: {self.vcpus!r} must be between 1 and {MAX_VCPUS}")
        if not self.kernel_image:
            raise ZoneDefError("kernel_image: missing")
        if not self.initrd:
            raise ZoneDefError("initrd: missing")
        if self.command is not None and not self.command:
            raise ZoneDefError("command: empty (omit it to use the image's entrypoint)")
        for key in self.env:
            if not ENV_KEY_PATTERN.match(key):
                raise ZoneDefError(f"env: {key!r} is not a valid variable name")
        if self.network is not None:
            self.network.validate()
        if self.pull not in PULL_POLICIES:
            raise ZoneDefError(f"pull: {self.pull!r} is not one of {', '.join(PULL_POLICIES)}")
        for module in self.modules:
            if not MODULE_PATTERN.match(module):
                raise ZoneDefError(f"modules: {module!r} is not a kernel module name")
        if len(set(self.extensions)) != len(self.extensions):
            raise ZoneDefError("extensions: the same image is named twice")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ZoneDef:
        if not isinstance(document, dict):
            raise ZoneDefError("zone definition: expected a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(document) - known)
        if unknown:
            raise ZoneDefError(f"zone definition: unknown field(s) {', '.join(unknown)}")
        fields = dict(document)
        network = fields.get("network")
        if network is not None:
            if not isinstance(network, dict) or set(network) - set(NetworkDef.__dataclass_fields__):
                raise ZoneDefError("network: expected an object with address, gateway, dns, host_forwards, bridge")
            fields["network"] = NetworkDef(**network)
        try:
            definition = cls(**fields)
        except TypeError as e:
            raise ZoneDefError(f"zone definition: {e}") from e
        definition.validate()
        return definition


def parse_env(pairs: list[str]) -> dict[str, str]:
    """``["K=V", ...]`` (the CLI's ``-e``) -> dict; a pair without ``=`` is an error, not a silent drop."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ZoneDefError(f"env: {pair!r} is not KEY=VALUE")
        env[key] = value
    return env
