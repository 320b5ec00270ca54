"""OCI ``linux.seccomp`` -> a seccomp BPF filter, compiled by libseccomp before fork, loaded last in the child.

Two halves, on purpose:

- ``compile_filter(seccomp)`` runs in the runtime (parent) BEFORE fork. It validates the profile (bad
  input -> ``ConfigError`` naming the JSON path, e.g. ``linux.seccomp.syscalls[3].action``), builds a
  libseccomp context and exports it as classic BPF bytes. A warm process (the zone agent) can compile a
  profile once and reuse the ``SeccompFilter`` for every container.
- ``SeccompFilter.load()`` runs in the container child, last before execve: one ``seccomp(2)`` call through
  the syscall seam; no libseccomp, no allocation of note.

Load-time privilege: the kernel accepts a filter only from a process that has no_new_privs set or
CAP_SYS_ADMIN in its effective set (libseccomp's own NO_NEW_PRIVS-on-load is switched off: whether the
container gets no_new_privs is ``process.noNewPrivileges``'s decision, not the filter's). So the caller
orders it like runc:

- ``noNewPrivileges: true``: ... apply_capabilities -> set_no_new_privs() -> filter.load() -> execve.
- ``noNewPrivileges: false``: filter.load() while still privileged, i.e. BEFORE the uid change and
  ``apply_capabilities`` (the filter then must allow what follows: capset, prctl, setresuid, execve...;
  the default profile does).

Semantics follow runc: unknown syscall names are skipped with a warning (the profile may name syscalls
newer than this libseccomp); a rule whose action equals the default action is dropped (libseccomp refuses
it and it changes nothing); conditions of one rule on different arguments are ANDed, several conditions on
the SAME argument are ORed (one rule per condition, since libseccomp rejects them in one rule).
``SCMP_ACT_NOTIFY`` (a user-space listener) is not supported and says so.
"""

from __future__ import annotations

import errno as errno_module
import functools
import os

from styrolite.errors import ConfigError, ContainerError
from styrolite.security import libseccomp as scmp
from styrolite.security.seccomp_default import default_profile
from styrolite.security.seccomp_filter import SeccompFilter
from styrolite.spec.model import Seccomp, SeccompSyscall
from styrolite.syscalls import constants as k

ACTIONS = ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO",
           "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY")
_RETURN_CODE_ACTIONS = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")

# OCI flag -> (libseccomp attribute, kernel flag). WAIT_KILLABLE_RECV only matters with NOTIFY.
FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": (scmp.FLTATR_CTL_TSYNC, k.SECCOMP_FILTER_FLAG_TSYNC),
    "SECCOMP_FILTER_FLAG_LOG": (scmp.FLTATR_CTL_LOG, k.SECCOMP_FILTER_FLAG_LOG),
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": (scmp.FLTATR_CTL_SSB, k.SECCOMP_FILTER_FLAG_SPEC_ALLOW),
}

# OCI SCMP_ARCH_* -> libseccomp's arch name.
ARCHITECTURES = {
    "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X32": "x32", "SCMP_ARCH_ARM": "arm",
    "SCMP_ARCH_AARCH64": "aarch64", "SCMP_ARCH_MIPS": "mips", "SCMP_ARCH_MIPS64": "mips64",
    "SCMP_ARCH_MIPS64N32": "mips64n32", "SCMP_ARCH_MIPSEL": "mipsel", "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32", "SCMP_ARCH_PPC": "ppc", "SCMP_ARCH_PPC64": "ppc64",
    "SCMP_ARCH_PPC64LE": "ppc64le", "SCMP_ARCH_S390": "s390", "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc", "SCMP_ARCH_PARISC64": "parisc64", "SCMP_ARCH_RISCV64": "riscv64",
}

_MAX_ARGS = 6
_MAX_ERRNO_RET = 4094
_UINT64_MAX = (1 << 64) - 1


def validate_seccomp(seccomp: Seccomp, path: str = "linux.seccomp") -> None:
    """Everything that can be checked without libseccomp; ConfigError names the JSON path."""
    _validate_action(seccomp.default_action, seccomp.default_errno_ret, f"{path}.defaultAction",
                     f"{path}.defaultErrnoRet")
    for index, arch in enumerate(seccomp.architectures):
        if arch not in ARCHITECTURES:
            raise ConfigError(f"{path}.architectures[{index}]", f"unknown architecture {arch!r}")
    for index, flag in enumerate(seccomp.flags):
        if flag not in FLAGS:
            raise ConfigError(f"{path}.flags[{index}]",
                              f"unsupported flag {flag!r} (supported: {', '.join(FLAGS)})")
    for index, rule in enumerate(seccomp.syscalls):
        where = f"{path}.syscalls[{index}]"
        if not rule.names:
            raise ConfigError(f"{where}.names", "must name at least one syscall")
        for name_index, name in enumerate(rule.names):
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{where}.names[{name_index}]", f"must be a syscall name, not {name!r}")
        _validate_action(rule.action, rule.errno_ret, f"{where}.action", f"{where}.errnoRet")
        for arg_index, arg in enumerate(rule.args):
            arg_path = f"{where}.args[{arg_index}]"
            if not isinstance(arg.index, int) or not 0 <= arg.index < _MAX_ARGS:
                raise ConfigError(f"{arg_path}.index", f"must be 0..{_MAX_ARGS - 1}, not {arg.index!r}")
            if arg.op not in scmp.CMP_OPS:
                raise ConfigError(f"{arg_path}.op", f"unknown operator {arg.op!r} (known: {', '.join(scmp.CMP_OPS)})")
            for name, value in (("value", arg.value), ("valueTwo", arg.value_two)):
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT64_MAX:
                    raise ConfigError(f"{arg_path}.{name}", f"must be an integer in 0..2**64-1, not {value!r}")


def _validate_action(action: str, errno_ret: int | None, action_path: str, errno_path: str) -> None:
    if action not in ACTIONS:
        raise ConfigError(action_path, f"unknown action {action!r} (known: {', '.join(ACTIONS)})")
    if action == "SCMP_ACT_NOTIFY":
        raise ConfigError(action_path, "SCMP_ACT_NOTIFY is not supported (Styrolite has no seccomp listener)")
    if errno_ret is not None:
        if action not in _RETURN_CODE_ACTIONS:
            raise ConfigError(errno_path, f"only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {action}")
        # The kernel caps ERRNO data at MAX_ERRNO (4095) and libseccomp refuses it; TRACE data is 16 bits.
        limit = _MAX_ERRNO_RET if action == "SCMP_ACT_ERRNO" else 0xFFFF
        if isinstance(errno_ret, bool) or not isinstance(errno_ret, int) or not 0 <= errno_ret <= limit:
            raise ConfigError(errno_path, f"must be an integer in 0..{limit} for {action}, not {errno_ret!r}")


def action_value(action: str, errno_ret: int | None) -> int:
    """OCI action name -> libseccomp action word (ERRNO/TRACE carry errnoRet, EPERM by default)."""
    code = errno_module.EPERM if errno_ret is None else errno_ret
    return {
        "SCMP_ACT_KILL": scmp.ACT_KILL_THREAD,
        "SCMP_ACT_KILL_THREAD": scmp.ACT_KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS": scmp.ACT_KILL_PROCESS,
        "SCMP_ACT_TRAP": scmp.ACT_TRAP,
        "SCMP_ACT_ERRNO": scmp.act_errno(code),
        "SCMP_ACT_TRACE": scmp.act_trace(code),
        "SCMP_ACT_ALLOW": scmp.ACT_ALLOW,
        "SCMP_ACT_LOG": scmp.ACT_LOG,
    }[action]


def compile_filter(seccomp: Seccomp, path: str = "linux.seccomp", cache_dir: str | None = None) -> SeccompFilter:
    """Validate and compile (in the parent, before fork). Warnings list skipped syscall names.

    Memoised on the profile's content: a warm process starting many containers with the same profile
    compiles it once (tens of milliseconds for the default profile); the result is immutable. With
    ``cache_dir`` the compiled filter is also kept on disk for the next process (seccomp_cache).
    """
    key = (repr(seccomp), path)
    compiled = _compiled.get(key)
    if compiled is None:
        validate_seccomp(seccomp, path)
        disk_key = None
        if cache_dir is not None:
            from styrolite.security import seccomp_cache

            disk_key = seccomp_cache.cache_key(seccomp, path)
            compiled = seccomp_cache.load(cache_dir, disk_key)
        if compiled is None:
            compiled = _compile(seccomp, path)
            if disk_key is not None:
                seccomp_cache.store(cache_dir, disk_key, compiled)
        if len(_compiled) >= _CACHE_SIZE:
            _compiled.pop(next(iter(_compiled)))
        _compiled[key] = compiled
    return compiled


_CACHE_SIZE = 16
_compiled: dict[tuple[str, str], SeccompFilter] = {}


def _compile(seccomp: Seccomp, path: str) -> SeccompFilter:
    """libseccomp's BPF for a validated profile."""
    lib = scmp.library()
    default = action_value(seccomp.default_action, seccomp.default_errno_ret)
    ctx = lib.lib.seccomp_init(default)
    if ctx == lib.ffi.NULL:
        raise ContainerError(f"{path}: seccomp_init({seccomp.default_action}) failed")
    try:
        warnings = _build(ctx, seccomp, default, path)
        program = _export(ctx)
    finally:
        lib.lib.seccomp_release(ctx)
    flags = 0
    for flag in seccomp.flags:
        flags |= FLAGS[flag][1]
    return SeccompFilter(program=program, flags=flags, warnings=tuple(warnings))


def _build(ctx, seccomp: Seccomp, default: int, path: str) -> list[str]:
    lib = scmp.library().lib
    try:
        # The container's noNewPrivileges decides NNP, not the filter; bad-arch syscalls are killed.
        scmp.check(lib.seccomp_attr_set(ctx, scmp.FLTATR_CTL_NNP, 0), "seccomp_attr_set(CTL_NNP, 0)")
        for flag in seccomp.flags:
            scmp.check(lib.seccomp_attr_set(ctx, FLAGS[flag][0], 1), f"seccomp_attr_set({flag})")
    except OSError as e:
        raise ContainerError(f"{path}.flags: this kernel or libseccomp does not support them") from e
    # Binary-tree dispatch: for the default profile the kernel loads it ~40% faster (it pre-evaluates the
    # filter for every syscall number) and unlisted syscalls take O(log n) comparisons instead of O(n).
    # Best effort: libseccomp < 2.5 lacks the attribute and then builds the linear filter.
    lib.seccomp_attr_set(ctx, scmp.FLTATR_CTL_OPTIMIZE, 2)
    warnings: list[str] = []
    for index, arch in enumerate(seccomp.architectures):
        token = scmp.resolve_arch(ARCHITECTURES[arch])
        if token == 0:
            raise ConfigError(f"{path}.architectures[{index}]", f"libseccomp {scmp.version()} does not know {arch}")
        result = lib.seccomp_arch_add(ctx, token)
        if result < 0 and -result == errno_module.EDOM:
            # Other endianness (ppc64, s390x on x86_64): no process on this machine can use it.
            warnings.append(f"{path}.architectures[{index}]: {arch} cannot run on this machine: skipped")
        elif result < 0 and -result != errno_module.EEXIST:  # the native arch is always there
            raise ConfigError(f"{path}.architectures[{index}]", f"cannot add {arch}: {os.strerror(-result)}")
    for index, rule in enumerate(seccomp.syscalls):
        warnings += _add_rule(ctx, rule, default, f"{path}.syscalls[{index}]")
    return warnings


def _add_rule(ctx, rule: SeccompSyscall, default: int, where: str) -> list[str]:
    lib = scmp.library()
    action = action_value(rule.action, rule.errno_ret)
    if action == default:
        return []
    conditions = [(arg.index, scmp.CMP_OPS[arg.op], arg.value, arg.value_two) for arg in rule.args]
    indexes = [condition[0] for condition in conditions]
    # Same argument compared more than once -> OR (one rule each); different arguments -> AND (one rule).
    groups = [[c] for c in conditions] if len(set(indexes)) < len(indexes) else [conditions]
    warnings = []
    for name_index, name in enumerate(rule.names):
        number = scmp.resolve_syscall(name)
        if number == scmp.NR_SCMP_ERROR:
            warnings.append(f"{where}.names[{name_index}]: unknown syscall {name!r} skipped")
            continue
        for group in groups:
            array = lib.ffi.new("struct scmp_arg_cmp[]", group) if group else lib.ffi.NULL
            result = lib.lib.seccomp_rule_add_array(ctx, action, number, len(group), array)
            if result < 0:
                raise ConfigError(f"{where}.names[{name_index}]",
                                  f"libseccomp rejected the rule for {name!r} ({rule.action}, args {group}): "
                                  f"{errno_module.errorcode.get(-result, -result)} ({os.strerror(-result)})")
    return warnings


def _export(ctx) -> bytes:
    lib = scmp.library().lib
    fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
    try:
        scmp.check(lib.seccomp_export_bpf(ctx, fd), "seccomp_export_bpf")
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    except OSError as e:
        raise ContainerError("export the seccomp filter as BPF") from e
    finally:
        os.close(fd)


@functools.cache
def default_filter() -> SeccompFilter:
    """``compile_filter(default_profile())``, compiled once per process (a filter is immutable bytes)."""
    return compile_filter(default_profile())
