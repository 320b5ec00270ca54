"""Semantic checks on a decoded Spec: what the types alone cannot say.

Everything here fails before any namespace or mount exists, so a bad config.json never leaves
half-created state behind. Each error names the JSON path of the offending value. The rules follow
the runtime-spec's MUSTs plus runc's validator where the spec is silent (sysctls, hostname).
"""

from __future__ import annotations

from styrolite.errors import ConfigError
from styrolite.jsonio import dumps as quoted
from styrolite.spec import vocabulary as v
from styrolite.spec.jsonpath import join_index, join_key
from styrolite.spec.model import (
    Capabilities,
    Device,
    DeviceCgroup,
    Hooks,
    IDMapping,
    Linux,
    Mount,
    Process,
    Resources,
    Seccomp,
    Spec,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_SEMVER_LABEL_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.-")


def semver(version: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a SemVer ``MAJOR.MINOR.PATCH[-pre][+build]``, or None: no leading zeros,
    ASCII digits, labels of ``[0-9A-Za-z.-]``."""
    rest, plus, build = version.partition("+")
    core, dash, pre = rest.partition("-")
    if (plus and not (build and _SEMVER_LABEL_CHARS.issuperset(build))) or \
            (dash and not (pre and _SEMVER_LABEL_CHARS.issuperset(pre))):
        return None
    parts = core.split(".")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and (p == "0" or p[0] != "0") for p in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])

# runc's list: the IPC namespace's sysctls besides fs.mqueue.*
_IPC_SYSCTLS = frozenset({
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
    "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
})  # fmt: skip
_UTS_SYSCTLS = frozenset({"kernel.domainname"})


def validate_spec(spec: Spec) -> None:
    """Raise ConfigError for the first rule ``spec`` breaks (the order follows the document)."""
    check_oci_version(spec.oci_version)
    if spec.root is None:
        raise ConfigError("root", "required object is missing (the container needs a root filesystem)")
    if not spec.root.path:
        raise ConfigError("root.path", "must not be empty")
    if spec.process is None:
        raise ConfigError("process", "required object is missing (the container needs a process to run)")
    validate_process(spec.process, "process")
    for i, mount in enumerate(spec.mounts):
        validate_mount(mount, join_index("mounts", i))
    if spec.hooks is not None:
        validate_hooks(spec.hooks)
    validate_linux(spec.linux if spec.linux is not None else Linux())
    # after the namespace list itself is known to be sound
    if spec.hostname and spec.namespace("uts") is None:
        raise ConfigError("hostname", "setting the hostname requires a uts namespace in linux.namespaces")
    if spec.domainname and spec.namespace("uts") is None:
        raise ConfigError("domainname", "setting the domainname requires a uts namespace in linux.namespaces")


def check_oci_version(version: str) -> None:
    """Any 1.x: the spec promises that minor versions only add fields. Configs of a minor newer than
    ``vocabulary.OCI_VERSION_MAX`` are accepted only when every key in them is one Styrolite knows
    (``parse.unknown_keys``), so a field added later can never be silently ignored."""
    numbers = semver(version)
    if numbers is None:
        raise ConfigError("ociVersion", f"{quoted(version)} is not a SemVer version like \"1.3.0\"")
    if numbers[0] != 1:
        raise ConfigError("ociVersion", f"unsupported version {quoted(version)} (Styrolite implements the "
                                        f"1.x runtime-spec, {v.OCI_VERSION_MIN} through {v.OCI_VERSION_MAX})")


def is_newer_than_known(version: str) -> bool:
    numbers = semver(version)
    return numbers is not None and numbers[0] == 1 and numbers[1] > v.KNOWN_MINOR


def check_unsupported_fields(document: object) -> None:
    """A field of the spec that Styrolite does not implement is refused, never ignored: the container would
    otherwise run with less than it asked for (``vocabulary.UNSUPPORTED_LINUX_FIELDS``)."""
    linux = document.get("linux") if isinstance(document, dict) else None
    if not isinstance(linux, dict):
        return
    for key, why in v.UNSUPPORTED_LINUX_FIELDS.items():
        if linux.get(key) not in (None, {}, []):
            raise ConfigError(join_key("linux", key), f"{why} by this runtime (see `styrolite features`)")


# ---------------------------------------------------------------- small checks


def check_absolute(value: str, path: str, what: str = "path") -> None:
    if not value.startswith("/"):
        raise ConfigError(path, f"{what} {quoted(value)} must be absolute")


def check_no_dotdot(value: str, path: str) -> None:
    if ".." in value.split("/"):
        raise ConfigError(path, f"{quoted(value)} must not contain '..'")


def check_known(value: str, known: tuple[str, ...], path: str, what: str) -> None:
    if value not in known:
        raise ConfigError(path, f"unknown {what} {quoted(value)} {v.one_of(known)}")


def check_range(value: int, low: int, high: int, path: str) -> None:
    if not low <= value <= high:
        raise ConfigError(path, f"{value} is out of range ({low} to {high})")


def check_env(entries: Iterable[str], path: str) -> None:
    for i, entry in enumerate(entries):
        name, sep, _value = entry.partition("=")
        if not sep or not name or "\0" in name:
            raise ConfigError(join_index(path, i), f"{quoted(entry)} is not of the form KEY=VALUE")


# ---------------------------------------------------------------- process


def validate_process(process: Process, path: str) -> None:
    """Also used alone for ``exec --process`` documents (then ``path`` is empty)."""
    if not process.args:
        raise ConfigError(join_key(path, "args"), "must contain at least the program to run")
    check_absolute(process.cwd, join_key(path, "cwd"), "cwd")
    check_env(process.env, join_key(path, "env"))
    user_path = join_key(path, "user")
    check_range(process.user.uid, 0, UINT32_MAX, join_key(user_path, "uid"))
    check_range(process.user.gid, 0, UINT32_MAX, join_key(user_path, "gid"))
    for i, gid in enumerate(process.user.additional_gids):
        check_range(gid, 0, UINT32_MAX, join_index(join_key(user_path, "additionalGids"), i))
    if process.user.umask is not None:
        check_range(process.user.umask, 0, 0o777, join_key(user_path, "umask"))
    if process.capabilities is not None:
        validate_capabilities(process.capabilities, join_key(path, "capabilities"))
    seen: dict[str, int] = {}
    for i, rlimit in enumerate(process.rlimits):
        item = join_index(join_key(path, "rlimits"), i)
        check_known(rlimit.type, v.RLIMITS, join_key(item, "type"), "rlimit type")
        if rlimit.type in seen:
            raise ConfigError(join_key(item, "type"), f"duplicate rlimit {rlimit.type} "
                              f"(also at index {seen[rlimit.type]})")
        seen[rlimit.type] = i
        check_range(rlimit.soft, 0, UINT64_MAX, join_key(item, "soft"))
        check_range(rlimit.hard, 0, UINT64_MAX, join_key(item, "hard"))
        if rlimit.soft > rlimit.hard:
            raise ConfigError(join_key(item, "soft"), f"soft limit {rlimit.soft} exceeds hard limit {rlimit.hard}")
    if process.oom_score_adj is not None:
        check_range(process.oom_score_adj, -1000, 1000, join_key(path, "oomScoreAdj"))
    if process.io_priority is not None:
        io_path = join_key(path, "ioPriority")
        check_known(process.io_priority.class_, v.IO_PRIORITY_CLASSES, join_key(io_path, "class"), "I/O priority class")
        check_range(process.io_priority.priority, 0, 7, join_key(io_path, "priority"))
    if process.scheduler is not None:
        sched_path = join_key(path, "scheduler")
        check_known(process.scheduler.policy, v.SCHEDULER_POLICIES, join_key(sched_path, "policy"), "scheduler policy")
        check_range(process.scheduler.nice, -20, 19, join_key(sched_path, "nice"))
        for i, flag in enumerate(process.scheduler.flags):
            check_known(flag, v.SCHEDULER_FLAGS, join_index(join_key(sched_path, "flags"), i), "scheduler flag")


def validate_capabilities(caps: Capabilities, path: str) -> None:
    """Names must look like capabilities; one this runtime does not know is ignored with a warning at create
    (runc and crun do the same: clients send the capability list of the newest kernel they know)."""
    for set_name in ("bounding", "effective", "inheritable", "permitted", "ambient"):
        set_path = join_key(path, set_name)
        for i, name in enumerate(getattr(caps, set_name)):
            if not name.strip():
                raise ConfigError(join_index(set_path, i), "capability name must not be empty")


# ---------------------------------------------------------------- mounts and hooks


def validate_mount(mount: Mount, path: str) -> None:
    dest_path = join_key(path, "destination")
    check_absolute(mount.destination, dest_path, "destination")
    check_no_dotdot(mount.destination, dest_path)
    if (mount.type == "bind" or "bind" in mount.options or "rbind" in mount.options) and not mount.source:
        raise ConfigError(join_key(path, "source"), "a bind mount needs a source")
    validate_mappings(mount.uid_mappings, join_key(path, "uidMappings"))
    validate_mappings(mount.gid_mappings, join_key(path, "gidMappings"))
    if bool(mount.uid_mappings) != bool(mount.gid_mappings):
        raise ConfigError(path, "an idmapped mount needs both uidMappings and gidMappings")


def validate_hooks(hooks: Hooks) -> None:
    for name in v.HOOK_NAMES:
        kind_path = join_key("hooks", name)
        for i, hook in enumerate(getattr(hooks, _snake(name))):
            item = join_index(kind_path, i)
            check_absolute(hook.path, join_key(item, "path"))
            check_env(hook.env, join_key(item, "env"))
            if hook.timeout is not None and hook.timeout <= 0:
                raise ConfigError(join_key(item, "timeout"), f"must be greater than zero, got {hook.timeout}")


def _snake(name: str) -> str:
    """``createRuntime`` -> ``create_runtime``."""
    return "".join("_" + c.lower() if "A" <= c <= "Z" else c for c in name)


# ---------------------------------------------------------------- linux


def validate_linux(linux: Linux) -> None:
    namespaces: dict[str, int] = {}
    for i, ns in enumerate(linux.namespaces):
        item = join_index("linux.namespaces", i)
        check_known(ns.type, v.NAMESPACE_TYPES, join_key(item, "type"), "namespace type")
        if ns.type in namespaces:
            raise ConfigError(join_key(item, "type"), f"duplicate namespace type {quoted(ns.type)} "
                              f"(also at linux.namespaces[{namespaces[ns.type]}])")
        namespaces[ns.type] = i
        if ns.path is not None:
            check_absolute(ns.path, join_key(item, "path"))
    user_ns = linux.namespaces[namespaces["user"]] if "user" in namespaces else None
    validate_mappings(linux.uid_mappings, "linux.uidMappings")
    validate_mappings(linux.gid_mappings, "linux.gidMappings")
    if user_ns is None:
        for key, mappings in (("uidMappings", linux.uid_mappings), ("gidMappings", linux.gid_mappings)):
            if mappings:
                raise ConfigError(join_key("linux", key), "ID mappings require a user namespace in linux.namespaces")
    elif user_ns.path is None:
        for key, mappings in (("uidMappings", linux.uid_mappings), ("gidMappings", linux.gid_mappings)):
            if not mappings:
                raise ConfigError(join_key("linux", key), "a new user namespace requires at least one mapping")

    if linux.time_offsets and "time" not in namespaces:
        raise ConfigError("linux.timeOffsets", "time offsets require a time namespace in linux.namespaces")
    if linux.time_offsets and linux.namespaces[namespaces["time"]].path is not None:
        raise ConfigError("linux.timeOffsets", "time offsets cannot be set on a joined time namespace (it has a path)")
    for clock, offset in linux.time_offsets.items():
        clock_path = join_key("linux.timeOffsets", clock)
        check_known(clock, v.TIME_OFFSET_CLOCKS, clock_path, "clock")
        check_range(offset.secs, INT64_MIN, INT64_MAX, join_key(clock_path, "secs"))
        check_range(offset.nanosecs, 0, 999_999_999, join_key(clock_path, "nanosecs"))

    for i, device in enumerate(linux.devices):
        validate_device(device, join_index("linux.devices", i))
    if linux.cgroups_path is not None:
        check_no_dotdot(linux.cgroups_path, "linux.cgroupsPath")
    if linux.resources is not None:
        validate_resources(linux.resources, "linux.resources")
    if linux.rootfs_propagation is not None:
        check_known(linux.rootfs_propagation, v.ROOTFS_PROPAGATIONS, "linux.rootfsPropagation", "propagation")
    if linux.seccomp is not None:
        validate_seccomp(linux.seccomp, "linux.seccomp")
    for key in linux.sysctl:
        check_sysctl(key, namespaces, join_key("linux.sysctl", key))
    for list_name in ("maskedPaths", "readonlyPaths"):
        for i, entry in enumerate(getattr(linux, _snake(list_name))):
            check_absolute(entry, join_index(join_key("linux", list_name), i))
    if linux.personality is not None:
        check_known(linux.personality.domain, v.PERSONALITY_DOMAINS, "linux.personality.domain", "personality domain")


def validate_mappings(mappings: list[IDMapping], path: str) -> None:
    for i, mapping in enumerate(mappings):
        item = join_index(path, i)
        check_range(mapping.container_id, 0, UINT32_MAX, join_key(item, "containerID"))
        check_range(mapping.host_id, 0, UINT32_MAX, join_key(item, "hostID"))
        if mapping.size <= 0:
            raise ConfigError(join_key(item, "size"), f"must be greater than zero, got {mapping.size}")
        if mapping.container_id + mapping.size - 1 > UINT32_MAX or mapping.host_id + mapping.size - 1 > UINT32_MAX:
            raise ConfigError(join_key(item, "size"), f"{mapping.size} IDs overflow the 32-bit ID space")


def validate_device(device: Device, path: str) -> None:
    check_known(device.type, v.DEVICE_TYPES, join_key(path, "type"), "device type")
    dev_path = join_key(path, "path")
    check_absolute(device.path, dev_path)
    check_no_dotdot(device.path, dev_path)
    # anywhere in the container's tree, as runc and crun allow (the node is made inside the root)
    if device.path.strip("/") == "":
        raise ConfigError(dev_path, f"device path {quoted(device.path)} must name a file, not the root")
    if device.type != "p":
        for key, number in (("major", device.major), ("minor", device.minor)):
            if number is None:
                raise ConfigError(join_key(path, key), f"required for device type {quoted(device.type)}")
            check_range(number, 0, UINT32_MAX, join_key(path, key))
    if device.file_mode is not None:
        # podman and docker send the file-type bits too (0o20666 for a character device): only the
        # permission bits are used, as runc and crun do
        check_range(device.file_mode, 0, 0o177777, join_key(path, "fileMode"))
    for key, ident in (("uid", device.uid), ("gid", device.gid)):
        if ident is not None:
            check_range(ident, 0, UINT32_MAX, join_key(path, key))


def validate_device_cgroup(rule: DeviceCgroup, path: str) -> None:
    if rule.type is not None:
        check_known(rule.type, v.DEVICE_CGROUP_TYPES, join_key(path, "type"), "device type")
    if rule.access is not None and (not rule.access or set(rule.access) - set("rwm")):
        raise ConfigError(join_key(path, "access"), f"{quoted(rule.access)} must be a combination of r, w and m")


def validate_resources(resources: Resources, path: str) -> None:
    for i, rule in enumerate(resources.devices):
        validate_device_cgroup(rule, join_index(join_key(path, "devices"), i))
    # pids.limit 0 and blockIO.weight 0 mean "not set" (runc's reading; docker always sends weight 0)


def validate_seccomp(seccomp: Seccomp, path: str) -> None:
    check_known(seccomp.default_action, v.SECCOMP_ACTIONS, join_key(path, "defaultAction"), "seccomp action")
    if seccomp.default_action == "SCMP_ACT_NOTIFY":
        raise ConfigError(join_key(path, "defaultAction"), "SCMP_ACT_NOTIFY cannot be the default action")
    for i, arch in enumerate(seccomp.architectures):
        check_known(arch, v.SECCOMP_ARCHITECTURES, join_index(join_key(path, "architectures"), i), "architecture")
    for i, flag in enumerate(seccomp.flags):
        check_known(flag, v.SECCOMP_FLAGS, join_index(join_key(path, "flags"), i), "seccomp flag")
    needs_listener = False
    for i, rule in enumerate(seccomp.syscalls):
        item = join_index(join_key(path, "syscalls"), i)
        if not rule.names:
            raise ConfigError(join_key(item, "names"), "must name at least one syscall")
        for j, name in enumerate(rule.names):
            if not name:
                raise ConfigError(join_index(join_key(item, "names"), j), "syscall name must not be empty")
        check_known(rule.action, v.SECCOMP_ACTIONS, join_key(item, "action"), "seccomp action")
        needs_listener |= rule.action == "SCMP_ACT_NOTIFY"
        if rule.errno_ret is not None:
            check_range(rule.errno_ret, 0, UINT32_MAX, join_key(item, "errnoRet"))
        for j, arg in enumerate(rule.args):
            arg_path = join_index(join_key(item, "args"), j)
            check_range(arg.index, 0, 5, join_key(arg_path, "index"))
            check_range(arg.value, 0, UINT64_MAX, join_key(arg_path, "value"))
            check_range(arg.value_two, 0, UINT64_MAX, join_key(arg_path, "valueTwo"))
            check_known(arg.op, v.SECCOMP_OPERATORS, join_key(arg_path, "op"), "seccomp operator")
    if needs_listener and not seccomp.listener_path:
        raise ConfigError(join_key(path, "listenerPath"), "required when a rule uses SCMP_ACT_NOTIFY")
    if seccomp.listener_path:
        check_absolute(seccomp.listener_path, join_key(path, "listenerPath"))


def check_sysctl(key: str, namespaces: dict[str, int], path: str) -> None:
    """Only namespaced sysctls, and only when the container has its own copy of that namespace (as runc)."""
    if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
        needed = "ipc"
    elif key.startswith("net."):
        needed = "network"
    elif key == "kernel.hostname":
        # its own uts namespace or not, the hostname is the "hostname" field's (runc and crun refuse it)
        raise ConfigError(path, 'sysctl is not allowed: it conflicts with the "hostname" field')
    elif key in _UTS_SYSCTLS:
        needed = "uts"
    else:
        raise ConfigError(path, "sysctl is not namespaced: setting it would change the whole kernel, not the container")
    if needed not in namespaces:
        raise ConfigError(path, f"sysctl requires a {needed} namespace in linux.namespaces")
