"""The names config.json may use: the validator checks against them and ``features`` advertises them.

Kept in one place so that what Styrolite accepts and what it claims to support cannot drift apart.
"""

from __future__ import annotations

OCI_VERSION_MIN = "1.0.0"
OCI_VERSION_MAX = "1.3.0"
KNOWN_MINOR = 3  # the newest minor whose fields this model knows; newer 1.x configs must use only those

# Fields of the 1.x spec that Styrolite knows but does not implement: a config that sets one is refused with
# the field's JSON path (never silently ignored); ``features`` reports each as not enabled.
UNSUPPORTED_LINUX_FIELDS: dict[str, str] = {
    "intelRdt": "Intel RDT (resctrl) is not supported",
    "netDevices": "moving host network devices into the container is not supported",
    "memoryPolicy": "NUMA memory policies are not supported",
}

# config-linux.md namespace types (the CLONE_NEW* flags are in styrolite.syscalls.constants.NAMESPACE_FLAGS;
# not imported here so that parsing a config never loads the cffi seam)
NAMESPACE_TYPES: tuple[str, ...] = ("cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts")

# include/uapi/linux/capability.h, in number order: CAPABILITIES[n] is capability number n.
CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip
CAPABILITY_NUMBERS: dict[str, int] = {name: number for number, name in enumerate(CAPABILITIES)}

# include/uapi/asm-generic/resource.h, in number order.
RLIMITS: tuple[str, ...] = (
    "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE", "RLIMIT_RSS", "RLIMIT_NPROC",
    "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS", "RLIMIT_LOCKS", "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_RTTIME",
)  # fmt: skip
RLIMIT_NUMBERS: dict[str, int] = {name: number for number, name in enumerate(RLIMITS)}

SECCOMP_ACTIONS: tuple[str, ...] = (
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY",
)  # fmt: skip
SECCOMP_OPERATORS: tuple[str, ...] = (
    "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ",
)  # fmt: skip
SECCOMP_ARCHITECTURES: tuple[str, ...] = (
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64",
)  # fmt: skip  (the ones Debian 12's libseccomp 2.5 knows; styrolite.security.seccomp maps each)
SECCOMP_FLAGS: tuple[str, ...] = (
    "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
)  # fmt: skip

HOOK_NAMES: tuple[str, ...] = (
    "prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop",
)  # fmt: skip

ROOTFS_PROPAGATIONS: tuple[str, ...] = (
    "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable", "runbindable",
)  # fmt: skip

DEVICE_TYPES: tuple[str, ...] = ("c", "b", "u", "p")
DEVICE_CGROUP_TYPES: tuple[str, ...] = ("a", "c", "b")
TIME_OFFSET_CLOCKS: tuple[str, ...] = ("boottime", "monotonic")

IO_PRIORITY_CLASSES: tuple[str, ...] = ("IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE")
SCHEDULER_POLICIES: tuple[str, ...] = (
    "SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_ISO", "SCHED_IDLE", "SCHED_DEADLINE",
)  # fmt: skip
SCHEDULER_FLAGS: tuple[str, ...] = (
    "SCHED_FLAG_RESET_ON_FORK", "SCHED_FLAG_RECLAIM", "SCHED_FLAG_DL_OVERRUN", "SCHED_FLAG_KEEP_POLICY",
    "SCHED_FLAG_KEEP_PARAMS", "SCHED_FLAG_UTIL_CLAMP_MIN", "SCHED_FLAG_UTIL_CLAMP_MAX",
)  # fmt: skip
PERSONALITY_DOMAINS: tuple[str, ...] = ("LINUX", "LINUX32")

# Mount options Styrolite understands (mount(2) flags, propagation, recursive mount_setattr variants).
# Filesystem data options (mode=, size=, ...) pass through to the kernel and are not listed, per features.md.
MOUNT_OPTIONS: tuple[str, ...] = (
    "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "lazytime", "loud",
    "mand", "noatime", "nodev", "nodiratime", "noexec", "nolazytime", "nomand", "norelatime",
    "nostrictatime", "nosuid", "nosymfollow", "private", "ratime", "rbind", "rdev", "rdiratime", "relatime",
    "remount", "rexec", "rnoatime", "rnodev", "rnodiratime", "rnoexec", "rnorelatime", "rnostrictatime",
    "rnosuid", "rnosymfollow", "ro", "rprivate", "rrelatime", "rro", "rrw", "rshared", "rslave",
    "rstrictatime", "rsuid", "rsymfollow", "runbindable", "rw", "shared", "silent", "slave", "strictatime",
    "suid", "symfollow", "sync", "tmpcopyup", "unbindable",
)  # fmt: skip


def one_of(choices: tuple[str, ...] | list[str]) -> str:
    """``(expected one of: a, b, c)`` for error messages."""
    return f"(expected one of: {', '.join(choices)})"
