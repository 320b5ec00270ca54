"""The default seccomp profile, in the spirit of Docker's: default ERRNO(EPERM) and an allow list.

An allow list fails closed: a syscall added to the kernel next year is denied until someone decides
otherwise. The list is Docker's unconditional allow list (what ordinary programs, busybox, glibc and
CPython need), with these differences, all towards denying more:

- Never allowed (Docker grants some of them only with extra capabilities): kexec_load, kexec_file_load,
  init_module, finit_module, delete_module, open_by_handle_at, name_to_handle_at, bpf, perf_event_open,
  fanotify_init, keyctl, add_key, request_key, mount, umount, umount2, the new mount API (fsopen, fsconfig,
  fsmount, fspick, move_mount, open_tree, mount_setattr), pivot_root, swapon, swapoff, reboot, setns,
  unshare, ptrace, process_vm_readv, process_vm_writev,
  pidfd_getfd, kcmp, userfaultfd, iopl, ioperm, acct, quotactl, quotactl_fd, clock_settime(64),
  settimeofday, stime, lookup_dcookie, nfsservctl, vm86, vm86old, syslog, sethostname, setdomainname,
  vhangup, uselib, _sysctl, io_uring_*, mbind/set_mempolicy, socketcall (x86 32-bit: its arguments
  cannot be inspected, so the AF_VSOCK check below could be bypassed; 32-bit programs on kernels >= 4.3
  use the direct socket calls).
- ``clone`` is allowed only without namespace flags (CLONE_NEWUSER/NS/PID/NET/IPC/UTS/CGROUP);
  ``clone3`` returns ENOSYS (its flags live in memory seccomp cannot read), so glibc falls back to clone.
- ``socket`` is allowed except for AF_VSOCK: the zone's inter-domain channel is not for containers.
- ``personality`` only for the harmless domains Docker allows.
"""

from __future__ import annotations

import functools
import os

from styrolite.security import libseccomp as scmp
from styrolite.spec.model import Seccomp, SeccompArg, SeccompSyscall
from styrolite.syscalls import constants as k

ALLOWED: tuple[str, ...] = (
    "accept", "accept4", "access", "adjtimex", "alarm", "arch_prctl", "bind", "brk", "cachestat", "capget",
    "capset", "chdir", "chmod", "chown", "chown32", "chroot", "clock_adjtime", "clock_adjtime64",
    "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat", "dup", "dup2",
    "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2",
    "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group",
    "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod",
    "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr",
    "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs",
    "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex", "futex_requeue", "futex_time64", "futex_wait",
    "futex_waitv", "futex_wake", "futimesat", "getcpu", "getcwd", "getdents", "getdents64", "getegid",
    "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32", "getitimer",
    "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid",
    "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list", "getrusage", "getsid",
    "getsockname", "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32",
    "getxattr", "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel",
    "ioctl", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64", "ioprio_get",
    "ioprio_set", "io_setup", "io_submit", "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen", "listxattr",
    "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise",
    "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod",
    "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "modify_ldt", "mprotect", "mq_getsetattr",
    "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend",
    "mq_timedsend_time64", "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
    "munlockall", "munmap", "nanosleep", "newfstatat", "_newselect", "open", "openat", "openat2", "pause",
    "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "poll",
    "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease",
    "pselect6", "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
    "readlinkat", "readv", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages",
    "removexattr", "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction",
    "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval",
    "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
    "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget", "semop", "semtimedop",
    "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid",
    "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer",
    "setpgid", "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
    "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid", "setsockopt",
    "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr", "shmat", "shmctl", "shmdt",
    "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn", "socketpair",
    "splice", "stat", "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync",
    "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete",
    "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
    "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64",
    "times", "tkill", "truncate", "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime",
    "utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write",
    "writev",
    # 32-bit ARM and aarch64 spellings
    "arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls",
)

# Explicitly denied (also denied by omission; listed so the intent is testable and reviewable).
DENIED: tuple[str, ...] = (
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "open_by_handle_at",
    "name_to_handle_at", "bpf", "perf_event_open", "fanotify_init", "keyctl", "add_key", "request_key",
    "mount", "umount", "umount2", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
    "mount_setattr", "pivot_root", "swapon", "swapoff", "reboot", "setns", "unshare", "ptrace",
    "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "userfaultfd", "iopl", "ioperm", "acct",
    "quotactl", "quotactl_fd", "clock_settime", "clock_settime64", "settimeofday", "stime", "lookup_dcookie",
    "nfsservctl", "vm86", "vm86old", "syslog", "sethostname", "setdomainname", "vhangup", "uselib", "_sysctl",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "mbind", "set_mempolicy", "socketcall",
    "create_module", "get_kernel_syms", "query_module",
)

NAMESPACE_CLONE_FLAGS = (k.CLONE_NEWNS | k.CLONE_NEWUTS | k.CLONE_NEWIPC | k.CLONE_NEWUSER | k.CLONE_NEWPID
                         | k.CLONE_NEWNET | k.CLONE_NEWCGROUP)
AF_VSOCK = 40
ENOSYS = 38
PERSONALITIES_ALLOWED = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)


@functools.cache
def _known_allowed() -> tuple[str, ...]:
    return tuple(name for name in ALLOWED if scmp.resolve_syscall(name) != scmp.NR_SCMP_ERROR)


def native_architectures() -> list[str]:
    """The OCI arch names a container on this machine may use (Docker's map: x86_64 also runs x86/x32)."""
    machine = os.uname().machine
    if machine == "x86_64":
        return ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    if machine == "aarch64":
        return ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    return []


def default_profile() -> Seccomp:
    """The default profile: a fresh ``Seccomp`` (callers may modify it). Names this libseccomp cannot resolve
    are left out, so compiling it gives no warnings; they are denied by the default action anyway."""
    known = list(_known_allowed())
    return Seccomp(
        default_action="SCMP_ACT_ERRNO",
        default_errno_ret=1,  # EPERM
        architectures=native_architectures(),
        syscalls=[
            SeccompSyscall(names=known, action="SCMP_ACT_ALLOW"),
            SeccompSyscall(names=["clone"], action="SCMP_ACT_ALLOW",
                           args=[SeccompArg(index=0, value=NAMESPACE_CLONE_FLAGS, value_two=0,
                                            op="SCMP_CMP_MASKED_EQ")]),
            SeccompSyscall(names=["clone3"], action="SCMP_ACT_ERRNO", errno_ret=ENOSYS),
            SeccompSyscall(names=["socket"], action="SCMP_ACT_ALLOW",
                           args=[SeccompArg(index=0, value=AF_VSOCK, op="SCMP_CMP_NE")]),
            SeccompSyscall(names=["personality"], action="SCMP_ACT_ALLOW",
                           args=[SeccompArg(index=0, value=value, op="SCMP_CMP_EQ")
                                 for value in PERSONALITIES_ALLOWED]),
        ],
    )
