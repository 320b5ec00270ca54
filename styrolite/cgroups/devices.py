"""The device policy: OCI ``linux.resources.devices`` plus the devices every container must be able to use.

Policy (as runc): default deny; the spec's rules apply in order, a later rule overriding an earlier one
for the devices both match; then the default set is allowed, so no config can take /dev/null away.
"""

from __future__ import annotations

from styrolite.spec.model import Device, DeviceCgroup

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

DEFAULT_ALLOWED_DEVICES: tuple[DeviceCgroup, ...] = (
    DeviceCgroup(allow=True, type="c", major=None, minor=None, access="m"),  # mknod of any char device
    DeviceCgroup(allow=True, type="b", major=None, minor=None, access="m"),  # mknod of any block device
    DeviceCgroup(allow=True, type="c", major=1, minor=3, access="rwm"),  # /dev/null
    DeviceCgroup(allow=True, type="c", major=1, minor=5, access="rwm"),  # /dev/zero
    DeviceCgroup(allow=True, type="c", major=1, minor=7, access="rwm"),  # /dev/full
    DeviceCgroup(allow=True, type="c", major=1, minor=8, access="rwm"),  # /dev/random
    DeviceCgroup(allow=True, type="c", major=1, minor=9, access="rwm"),  # /dev/urandom
    DeviceCgroup(allow=True, type="c", major=5, minor=0, access="rwm"),  # /dev/tty
    DeviceCgroup(allow=True, type="c", major=5, minor=1, access="rwm"),  # /dev/console
    DeviceCgroup(allow=True, type="c", major=5, minor=2, access="rwm"),  # /dev/ptmx
    DeviceCgroup(allow=True, type="c", major=136, minor=None, access="rwm"),  # /dev/pts/*
)


def normalized(rule: DeviceCgroup) -> DeviceCgroup:
    """Missing type means all devices, missing access means ``rwm``; a negative number is a wildcard."""
    kind = rule.type or "a"
    if kind not in ("a", "b", "c"):
        raise ValueError(f"device rule type {rule.type!r}: must be 'a', 'b' or 'c'")
    access = rule.access or "rwm"
    if set(access) - set("rwm"):
        raise ValueError(f"device rule access {rule.access!r}: only the letters r, w, m")
    major = None if rule.major is None or rule.major < 0 else rule.major
    minor = None if rule.minor is None or rule.minor < 0 else rule.minor
    return DeviceCgroup(allow=rule.allow, type=kind, major=major, minor=minor, access="".join(sorted(set(access),
                        key="rwm".index)))


def node_rules(devices: Iterable[Device]) -> list[DeviceCgroup]:
    """Every ``linux.devices`` node the runtime creates is usable (rwm), as with runc: listing a device
    there is how a config asks for it. FIFOs (``p``) have no cgroup rule."""
    return [DeviceCgroup(allow=True, type="b" if d.type == "b" else "c", major=d.major, minor=d.minor, access="rwm")
            for d in devices if d.type in ("b", "c", "u") and d.major is not None and d.minor is not None]


def effective_rules(spec_rules: list[DeviceCgroup], devices: Iterable[Device] = ()) -> list[DeviceCgroup]:
    """Deny everything, then the spec's rules in order, then the ``linux.devices`` nodes, then the defaults."""
    deny_all = DeviceCgroup(allow=False, type="a", access="rwm")
    return [deny_all, *(normalized(r) for r in spec_rules), *node_rules(devices), *DEFAULT_ALLOWED_DEVICES]


def v1_rule_texts(rule: DeviceCgroup) -> list[str]:
    """The lines devices.allow / devices.deny take for one rule: ``c 1:3 rwm``, or ``a`` for every device.

    The kernel reads a bare ``a`` as "all devices, all access" (it resets the whole list), so a type-``a``
    rule that is narrower than that is written as one ``b`` and one ``c`` line.
    """
    rule = normalized(rule)
    if rule.type == "a" and rule.major is None and rule.minor is None and rule.access == "rwm":
        return ["a"]
    major = "*" if rule.major is None else str(rule.major)
    minor = "*" if rule.minor is None else str(rule.minor)
    kinds = ["b", "c"] if rule.type == "a" else [rule.type]
    return [f"{kind} {major}:{minor} {rule.access}" for kind in kinds]
