"""The real kernel calls, through cffi in ABI mode over the C library (no compiler needed at install).

The C declarations live in ffi_build.py; cffi's out-of-line ABI mode turns them into the pure-Python
module _kernel_ffi.py, so importing the seam needs neither pycparser nor a parse at start-up. cffi itself
is loaded by the first call that needs it (``load()``): ``state``, ``start`` and ``kill`` never do.
``create`` calls ``load()`` before it forks, so no container process ever loads it after pivot_root.

Calls that glibc wraps are called by name; the newer ones go through ``syscall(2)`` with the number
for this architecture. Every failure raises ``KernelError`` naming the call, its arguments and errno.
"""

from __future__ import annotations

import _signal  # the C module under `signal`, whose IntEnums would import enum
import errno as errno_module
import os
import resource

from styrolite.syscalls import constants as k

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

# Syscall numbers without a glibc 2.36 wrapper we can rely on.
_SYSCALL_NUMBERS = {
    "x86_64": {
        "pivot_root": 155, "finit_module": 313, "pidfd_send_signal": 424, "pidfd_open": 434,
        "close_range": 436, "open_tree": 428, "move_mount": 429, "mount_setattr": 442,
        "openat2": 437, "bpf": 321, "seccomp": 317,
    },
    "aarch64": {
        "pivot_root": 41, "finit_module": 273, "pidfd_send_signal": 424, "pidfd_open": 434,
        "close_range": 436, "open_tree": 428, "move_mount": 429, "mount_setattr": 442,
        "openat2": 437, "bpf": 280, "seccomp": 277,
    },
}


class KernelError(OSError):
    """A failed kernel call: ``mount('proc', '/r/proc', 'proc', MS_NOSUID): EPERM (Operation not permitted)``."""

    def __init__(self, err: int, call: str, args: str) -> None:
        name = errno_module.errorcode.get(err, str(err))
        super().__init__(err, f"{call}({args}): {name} ({os.strerror(err)})")
        self.call = call

    def __str__(self) -> str:
        return str(self.strerror)


_numbers = _SYSCALL_NUMBERS.get(os.uname().machine, _SYSCALL_NUMBERS["x86_64"])


def load() -> None:
    """Load cffi's FFI for the declarations and the C library (idempotent)."""
    global _ffi, _libc
    if not isinstance(_ffi, _NotLoaded):
        return
    from styrolite.syscalls._kernel_ffi import ffi

    libc = ffi.dlopen(None)
    # Parse every C type string the calls below use once: cffi parses a type string the first time it sees
    # it (milliseconds each), and a freshly forked container child would otherwise pay that again.
    for type_text in ("int", "long", "size_t", "unsigned int", "char[]", "char *[]", "struct mount_attr *",
                      "struct open_how *", "struct rlimit *", "struct sock_fprog *"):
        ffi.typeof(type_text)
    _ffi, _libc = ffi, libc


class _NotLoaded:
    """Stands for ``_ffi``/``_libc`` until the first use, which loads them (then the names are rebound)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attribute: str):
        load()
        return getattr(globals()[self.name], attribute)


_ffi = _NotLoaded("_ffi")
_libc = _NotLoaded("_libc")


def _cstr(value: str | None):
    return _ffi.NULL if value is None else _ffi.new("char[]", os.fsencode(value))


def _check(result: int, call: str, args: str | Callable[[], str]) -> int:
    """Raise on failure; ``args`` may be a callable so hot calls (mount) format their text only on failure."""
    if result < 0:
        err = _ffi.errno
        raise KernelError(err, call, args if isinstance(args, str) else args())
    return result


def _syscall(name: str, *args) -> int:
    return _libc.syscall(_ffi.cast("long", _numbers[name]), *args)


def _long(value: int):
    return _ffi.cast("long", value)


class LinuxSyscalls:
    """Real calls. Stateless: one module-level instance, ``LINUX``, is shared."""

    def unshare(self, flags: int) -> None:
        _check(_libc.unshare(flags), "unshare", k.clone_flag_names(flags))

    def setns(self, fd: int, nstype: int) -> None:
        _check(_libc.setns(fd, nstype), "setns", f"{fd}, {k.clone_flag_names(nstype)}")

    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
    ) -> None:
        result = _libc.mount(_cstr(source), _cstr(target), _cstr(fstype), flags, _cstr(data))
        _check(result, "mount",
               lambda: f"{source!r}, {target!r}, {fstype!r}, {k.mount_flag_names(flags)}, {data!r}")

    def umount2(self, target: str, flags: int = 0) -> None:
        _check(_libc.umount2(_cstr(target), flags), "umount2", f"{target!r}, {flags}")

    def pivot_root(self, new_root: str, put_old: str) -> None:
        _check(_syscall("pivot_root", _cstr(new_root), _cstr(put_old)), "pivot_root", f"{new_root!r}, {put_old!r}")

    def mount_setattr(
        self, path: str, flags: int, attr_set: int, attr_clr: int = 0, propagation: int = 0, dirfd: int = -100
    ) -> None:
        attr = _ffi.new("struct mount_attr *")
        attr.attr_set, attr.attr_clr, attr.propagation = attr_set, attr_clr, propagation
        result = _syscall(
            "mount_setattr", _ffi.cast("int", dirfd), _cstr(path), _ffi.cast("unsigned int", flags),
            attr, _ffi.cast("size_t", _ffi.sizeof("struct mount_attr")),
        )
        _check(result, "mount_setattr", f"{path!r}, {flags:#x}, set={attr_set:#x}, clr={attr_clr:#x}")

    def open_tree(self, dirfd: int, path: str, flags: int) -> int:
        """open_tree(2): with OPEN_TREE_CLONE, a detached copy of the mount (tree) at ``path``, as an fd."""
        result = _syscall("open_tree", _ffi.cast("int", dirfd), _cstr(path), _ffi.cast("unsigned int", flags))
        return _check(result, "open_tree", f"{dirfd}, {path!r}, {flags:#x}")

    def move_mount(self, from_dirfd: int, from_path: str, to_dirfd: int, to_path: str, flags: int) -> None:
        result = _syscall("move_mount", _ffi.cast("int", from_dirfd), _cstr(from_path), _ffi.cast("int", to_dirfd),
                          _cstr(to_path), _ffi.cast("unsigned int", flags))
        _check(result, "move_mount", f"{from_dirfd}, {from_path!r}, {to_dirfd}, {to_path!r}, {flags:#x}")

    def openat2(self, dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
        """open relative to ``dirfd`` with RESOLVE_* limits (RESOLVE_IN_ROOT: symlinks cannot escape dirfd)."""
        how = _ffi.new("struct open_how *")
        how.flags, how.mode, how.resolve = flags, mode, resolve
        result = _syscall("openat2", _ffi.cast("int", dirfd), _cstr(path), how,
                          _ffi.cast("size_t", _ffi.sizeof("struct open_how")))
        return _check(result, "openat2", f"{dirfd}, {path!r}, {flags:#o}, {mode:#o}, resolve={resolve:#x}")

    def chroot(self, path: str) -> None:
        self._os("chroot", os.chroot, path)

    def mknod(self, path: str, mode: int, device: int) -> None:
        self._os("mknod", os.mknod, path, mode, device)

    def sethostname(self, name: str) -> None:
        raw = os.fsencode(name)
        _check(_libc.sethostname(raw, len(raw)), "sethostname", repr(name))

    def setdomainname(self, name: str) -> None:
        raw = os.fsencode(name)
        _check(_libc.setdomainname(raw, len(raw)), "setdomainname", repr(name))

    def setgroups(self, groups: list[int]) -> None:
        self._os("setgroups", os.setgroups, groups)

    def setresgid(self, gid: int) -> None:
        self._os("setresgid", os.setresgid, gid, gid, gid)

    def setresuid(self, uid: int) -> None:
        self._os("setresuid", os.setresuid, uid, uid, uid)

    def personality(self, persona: int) -> int:
        return _check(_libc.personality(persona), "personality", hex(persona))

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        """The options python-prctl lacks (PR_CAP_AMBIENT); returns the call's non-negative result."""
        return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), "prctl", f"{option}, {arg2}, {arg3}, {arg4}, {arg5}")

    def pidfd_open(self, pid: int, flags: int = 0) -> int:
        try:  # the interpreter's own binding: kill and delete need no cffi
            return os.pidfd_open(pid, flags)
        except OSError as e:
            raise KernelError(e.errno or errno_module.EIO, "pidfd_open", str(pid)) from None

    def pidfd_send_signal(self, pidfd: int, sig: int, flags: int = 0) -> None:
        try:
            _signal.pidfd_send_signal(pidfd, sig, None, flags)
        except OSError as e:
            raise KernelError(e.errno or errno_module.EIO, "pidfd_send_signal", f"{pidfd}, {sig}") from None

    def close_range(self, first: int, last: int, flags: int = 0) -> None:
        result = _syscall("close_range", _ffi.cast("unsigned int", first), _ffi.cast("unsigned int", last),
                          _ffi.cast("unsigned int", flags))
        _check(result, "close_range", f"{first}, {last}, {flags:#x}")

    def setrlimit(self, resource_id: int, soft: int, hard: int) -> None:
        """Through libc, not ``resource.setrlimit``: that one turns EPERM into a ValueError without errno."""
        limit = _ffi.new("struct rlimit *")
        infinity = (1 << 64) - 1
        limit.rlim_cur = infinity if soft == resource.RLIM_INFINITY else soft
        limit.rlim_max = infinity if hard == resource.RLIM_INFINITY else hard
        _check(_libc.setrlimit(resource_id, limit), "setrlimit", f"{resource_id}, soft={soft}, hard={hard}")

    def bpf(self, cmd: int, attr: bytes) -> int:
        """bpf(2) with ``attr`` as the raw ``union bpf_attr`` bytes (pointers inside stay the caller's)."""
        buffer = _ffi.new("char[]", attr)
        result = _syscall("bpf", _ffi.cast("int", cmd), buffer, _ffi.cast("unsigned int", len(attr)))
        return _check(result, "bpf", f"{k.BPF_COMMAND_NAMES.get(cmd, cmd)}, <{len(attr)} bytes>")

    def seccomp_set_mode_filter(self, program: bytes, flags: int = 0) -> int:
        """seccomp(SECCOMP_SET_MODE_FILTER): load a classic-BPF program (8-byte ``sock_filter`` entries)."""
        buffer = _ffi.new("char[]", program)
        prog = _ffi.new("struct sock_fprog *")
        prog.len, prog.filter = len(program) // 8, buffer
        result = _syscall("seccomp", _ffi.cast("unsigned int", k.SECCOMP_SET_MODE_FILTER),
                          _ffi.cast("unsigned int", flags), prog)
        return _check(result, "seccomp", f"SECCOMP_SET_MODE_FILTER, {flags:#x}, <{len(program) // 8} instructions>")

    def execve(self, path: str, argv: list[str], envp: list[str], seccomp_program: bytes | None = None,
               seccomp_flags: int = 0) -> None:
        """execve(2); returns only by raising. With ``seccomp_program`` the filter is loaded right before it.

        Every buffer (path, argv, envp, the BPF program) is built first, so nothing runs between the
        seccomp(2) that installs the filter and the execve(2) but the check of its result: the filter only
        has to allow execve itself (runc and crun make the same promise).
        """
        keep = [_cstr(item) for item in argv]
        env = [_cstr(item) for item in envp]
        c_argv = _ffi.new("char *[]", [*keep, _ffi.NULL])
        c_envp = _ffi.new("char *[]", [*env, _ffi.NULL])
        c_path = _cstr(path)
        if seccomp_program is not None:
            buffer = _ffi.new("char[]", seccomp_program)
            prog = _ffi.new("struct sock_fprog *")
            prog.len, prog.filter = len(seccomp_program) // 8, buffer
            mode, flags = _ffi.cast("unsigned int", k.SECCOMP_SET_MODE_FILTER), _ffi.cast("unsigned int", seccomp_flags)
            if _syscall("seccomp", mode, flags, prog) < 0:
                err = _ffi.errno
                raise KernelError(err, "seccomp", f"SECCOMP_SET_MODE_FILTER, {seccomp_flags:#x}, "
                                                  f"<{len(seccomp_program) // 8} instructions>")
        _libc.execve(c_path, c_argv, c_envp)
        err = _ffi.errno
        raise KernelError(err, "execve", repr(path))

    def finit_module(self, fd: int, params: str = "", flags: int = 0) -> None:
        result = _syscall("finit_module", _ffi.cast("int", fd), _cstr(params), _ffi.cast("int", flags))
        _check(result, "finit_module", f"{fd}, {params!r}, {flags:#x}")

    def reboot(self, cmd: int) -> None:
        _check(_libc.reboot(_ffi.cast("int", cmd & 0xFFFFFFFF)), "reboot", hex(cmd))

    @staticmethod
    def _os(call: str, function, *args) -> None:
        try:
            function(*args)
        except OSError as e:
            raise KernelError(e.errno or errno_module.EIO, call, ", ".join(repr(a) for a in args)) from None


LINUX = LinuxSyscalls()
