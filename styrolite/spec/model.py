"""The OCI runtime-spec (1.0-1.3) ``config.json`` as typed record classes (styrolite.records).

Naming rule: each field is the snake_case of its JSON name (``noNewPrivileges`` -> ``no_new_privileges``);
where that is not mechanical the JSON name is given as ``field(metadata={"json": ...})``.
``@record`` is ``@dataclass`` minus ``dataclasses`` and its import-time code generation (records.py).
Optional objects are ``None`` when absent; lists and maps default to empty.
"""

from __future__ import annotations

from styrolite.records import field, record


def json_name(name: str) -> dict[str, str]:
    return {"json": name}


@record
class Root:
    path: str
    readonly: bool = False


@record
class IDMapping:
    container_id: int = field(metadata=json_name("containerID"))
    host_id: int = field(metadata=json_name("hostID"))
    size: int


@record
class Mount:
    destination: str
    type: str | None = None
    source: str | None = None
    options: list[str] = field(default_factory=list)
    uid_mappings: list[IDMapping] = field(default_factory=list)
    gid_mappings: list[IDMapping] = field(default_factory=list)


@record
class Box:
    height: int
    width: int


@record
class User:
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: list[int] = field(default_factory=list)
    username: str | None = None


@record
class Capabilities:
    bounding: list[str] = field(default_factory=list)
    effective: list[str] = field(default_factory=list)
    inheritable: list[str] = field(default_factory=list)
    permitted: list[str] = field(default_factory=list)
    ambient: list[str] = field(default_factory=list)


@record
class Rlimit:
    type: str
    soft: int
    hard: int


@record
class IOPriority:
    class_: str = field(metadata=json_name("class"))
    priority: int = 0


@record
class Scheduler:
    policy: str
    nice: int = 0
    priority: int = 0
    flags: list[str] = field(default_factory=list)
    runtime: int = 0
    deadline: int = 0
    period: int = 0


@record
class ExecCPUAffinity:
    initial: str | None = None
    final: str | None = None


@record
class Process:
    cwd: str
    args: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    terminal: bool = False
    console_size: Box | None = None
    user: User = field(default_factory=User)
    capabilities: Capabilities | None = None
    rlimits: list[Rlimit] = field(default_factory=list)
    no_new_privileges: bool = False
    apparmor_profile: str | None = None
    oom_score_adj: int | None = None
    selinux_label: str | None = None
    io_priority: IOPriority | None = None
    scheduler: Scheduler | None = None
    exec_cpu_affinity: ExecCPUAffinity | None = field(default=None, metadata=json_name("execCPUAffinity"))


@record
class Hook:
    path: str
    args: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    timeout: int | None = None


@record
class Hooks:
    prestart: list[Hook] = field(default_factory=list)
    create_runtime: list[Hook] = field(default_factory=list)
    create_container: list[Hook] = field(default_factory=list)
    start_container: list[Hook] = field(default_factory=list)
    poststart: list[Hook] = field(default_factory=list)
    poststop: list[Hook] = field(default_factory=list)


@record
class Namespace:
    type: str
    path: str | None = None


@record
class Device:
    type: str
    path: str
    major: int | None = None
    minor: int | None = None
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@record
class DeviceCgroup:
    allow: bool
    type: str | None = None  # "a", "c" or "b"; None means all
    major: int | None = None
    minor: int | None = None
    access: str | None = None  # any of "rwm"


@record
class Memory:
    limit: int | None = None
    reservation: int | None = None
    swap: int | None = None
    kernel: int | None = None
    kernel_tcp: int | None = field(default=None, metadata=json_name("kernelTCP"))
    swappiness: int | None = None
    disable_oom_killer: bool | None = field(default=None, metadata=json_name("disableOOMKiller"))
    use_hierarchy: bool | None = None
    check_before_update: bool | None = None


@record
class CPU:
    shares: int | None = None
    quota: int | None = None
    burst: int | None = None
    period: int | None = None
    realtime_runtime: int | None = None
    realtime_period: int | None = None
    cpus: str | None = None
    mems: str | None = None
    idle: int | None = None


@record
class Pids:
    limit: int


@record
class WeightDevice:
    major: int
    minor: int
    weight: int | None = None
    leaf_weight: int | None = None


@record
class ThrottleDevice:
    major: int
    minor: int
    rate: int


@record
class BlockIO:
    weight: int | None = None
    leaf_weight: int | None = None
    weight_device: list[WeightDevice] = field(default_factory=list)
    throttle_read_bps_device: list[ThrottleDevice] = field(default_factory=list)
    throttle_write_bps_device: list[ThrottleDevice] = field(default_factory=list)
    throttle_read_iops_device: list[ThrottleDevice] = field(
        default_factory=list, metadata=json_name("throttleReadIOPSDevice"))
    throttle_write_iops_device: list[ThrottleDevice] = field(
        default_factory=list, metadata=json_name("throttleWriteIOPSDevice"))


@record
class HugepageLimit:
    page_size: str
    limit: int


@record
class NetworkPriority:
    name: str
    priority: int


@record
class Network:
    class_id: int | None = field(default=None, metadata=json_name("classID"))
    priorities: list[NetworkPriority] = field(default_factory=list)


@record
class Resources:
    devices: list[DeviceCgroup] = field(default_factory=list)
    memory: Memory | None = None
    cpu: CPU | None = None
    pids: Pids | None = None
    block_io: BlockIO | None = field(default=None, metadata=json_name("blockIO"))
    hugepage_limits: list[HugepageLimit] = field(default_factory=list)
    network: Network | None = None
    rdma: dict[str, dict[str, int]] = field(default_factory=dict)
    unified: dict[str, str] = field(default_factory=dict)


@record
class SeccompArg:
    index: int
    value: int
    op: str
    value_two: int = 0


@record
class SeccompSyscall:
    names: list[str]
    action: str
    errno_ret: int | None = None
    args: list[SeccompArg] = field(default_factory=list)


@record
class Seccomp:
    default_action: str
    default_errno_ret: int | None = None
    architectures: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    listener_path: str | None = None
    listener_metadata: str | None = None
    syscalls: list[SeccompSyscall] = field(default_factory=list)


@record
class Personality:
    domain: str
    flags: list[str] = field(default_factory=list)


@record
class TimeOffset:
    secs: int = 0
    nanosecs: int = 0


@record
class Linux:
    namespaces: list[Namespace] = field(default_factory=list)
    uid_mappings: list[IDMapping] = field(default_factory=list)
    gid_mappings: list[IDMapping] = field(default_factory=list)
    time_offsets: dict[str, TimeOffset] = field(default_factory=dict)
    devices: list[Device] = field(default_factory=list)
    cgroups_path: str | None = None
    resources: Resources | None = None
    rootfs_propagation: str | None = None
    seccomp: Seccomp | None = None
    sysctl: dict[str, str] = field(default_factory=dict)
    masked_paths: list[str] = field(default_factory=list)
    readonly_paths: list[str] = field(default_factory=list)
    mount_label: str | None = None
    personality: Personality | None = None


@record
class Spec:
    oci_version: str
    root: Root | None = None
    process: Process | None = None
    hostname: str | None = None
    domainname: str | None = None
    mounts: list[Mount] = field(default_factory=list)
    hooks: Hooks | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    linux: Linux | None = None

    def namespace(self, ns_type: str) -> Namespace | None:
        """The namespace entry of that type, or None when the container shares the runtime's."""
        if self.linux is None:
            return None
        return next((ns for ns in self.linux.namespaces if ns.type == ns_type), None)
