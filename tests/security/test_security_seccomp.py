"""seccomp: validation with JSON paths, compilation, and filters really loaded in a forked child."""

from __future__ import annotations

import errno
import os
import signal
import socket
import struct

import prctl
import pytest
from security_forking import status_fields

from styrolite.errors import ConfigError, ContainerError, describe
from styrolite.security import compile_filter, default_filter, set_no_new_privs, validate_seccomp
from styrolite.security import libseccomp as scmp
from styrolite.security.seccomp import action_value
from styrolite.spec.model import Seccomp, SeccompArg, SeccompSyscall
from styrolite.syscalls import LINUX
from styrolite.syscalls import constants as k
from styrolite.syscalls.fake import RecordingSyscalls


def allow_all_but(*rules: SeccompSyscall, **kwargs) -> Seccomp:
    return Seccomp(default_action="SCMP_ACT_ALLOW", syscalls=list(rules), **kwargs)


def errno_of(call) -> int | None:
    try:
        call()
    except OSError as e:
        return e.errno
    return None


# --- validation and compilation (no kernel) ----------------------------------------------------------


def test_actions_map_to_libseccomp_words():
    assert action_value("SCMP_ACT_ERRNO", None) == 0x00050000 | errno.EPERM
    assert action_value("SCMP_ACT_ERRNO", 38) == 0x00050026
    assert action_value("SCMP_ACT_KILL", None) == action_value("SCMP_ACT_KILL_THREAD", None) == 0
    assert action_value("SCMP_ACT_KILL_PROCESS", None) == 0x80000000
    assert action_value("SCMP_ACT_ALLOW", None) == 0x7FFF0000
    assert action_value("SCMP_ACT_TRACE", 5) == 0x7FF00005


@pytest.mark.parametrize(
    ("profile", "path", "fragment"),
    [
        (Seccomp(default_action="SCMP_ACT_MAYBE"), "linux.seccomp.defaultAction", "unknown action"),
        (Seccomp(default_action="SCMP_ACT_ALLOW", default_errno_ret=1), "linux.seccomp.defaultErrnoRet",
         "only valid with"),
        (allow_all_but(SeccompSyscall(["read"], "SCMP_ACT_ERRNO"), SeccompSyscall(["write"], "SCMP_ACT_ERRNO"),
                       SeccompSyscall(["open"], "SCMP_ACT_ERRNO"), SeccompSyscall(["mkdir"], "SCMP_ACT_BOOM")),
         "linux.seccomp.syscalls[3].action", "SCMP_ACT_BOOM"),
        (allow_all_but(SeccompSyscall(["mkdir"], "SCMP_ACT_NOTIFY")), "linux.seccomp.syscalls[0].action",
         "not supported"),
        (allow_all_but(SeccompSyscall(["mkdir"], "SCMP_ACT_ERRNO", errno_ret=4095)),
         "linux.seccomp.syscalls[0].errnoRet", "0..4094"),
        (Seccomp(default_action="SCMP_ACT_TRACE", default_errno_ret=70000), "linux.seccomp.defaultErrnoRet",
         "0..65535"),
        (allow_all_but(SeccompSyscall([], "SCMP_ACT_ERRNO")), "linux.seccomp.syscalls[0].names", "at least one"),
        (allow_all_but(SeccompSyscall(["mkdir", ""], "SCMP_ACT_ERRNO")), "linux.seccomp.syscalls[0].names[1]",
         "syscall name"),
        (allow_all_but(SeccompSyscall(["mkdir"], "SCMP_ACT_ERRNO", args=[SeccompArg(6, 0, "SCMP_CMP_EQ")])),
         "linux.seccomp.syscalls[0].args[0].index", "0..5"),
        (allow_all_but(SeccompSyscall(["mkdir"], "SCMP_ACT_ERRNO", args=[SeccompArg(0, 0, "SCMP_CMP_SIMILAR")])),
         "linux.seccomp.syscalls[0].args[0].op", "SCMP_CMP_SIMILAR"),
        (allow_all_but(SeccompSyscall(["mkdir"], "SCMP_ACT_ERRNO", args=[SeccompArg(0, -1, "SCMP_CMP_EQ")])),
         "linux.seccomp.syscalls[0].args[0].value", "2**64-1"),
        (allow_all_but(architectures=["SCMP_ARCH_Z80"]), "linux.seccomp.architectures[0]", "SCMP_ARCH_Z80"),
        (allow_all_but(flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]), "linux.seccomp.flags[0]", "unsupported"),
    ],
)
def test_bad_profiles_name_the_json_path(profile, path, fragment):
    with pytest.raises(ConfigError) as info:
        compile_filter(profile)
    assert info.value.path == path
    assert fragment in str(info.value)


def test_unknown_syscall_is_skipped_with_a_warning_naming_its_path():
    compiled = compile_filter(allow_all_but(SeccompSyscall(["mkdir", "no_such_call"], "SCMP_ACT_ERRNO")))
    assert compiled.warnings == ("linux.seccomp.syscalls[0].names[1]: unknown syscall 'no_such_call' skipped",)


def test_architectures_of_the_other_endianness_are_skipped_with_a_warning():
    compiled = compile_filter(allow_all_but(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64",
                                                           "SCMP_ARCH_S390X"]))
    assert compiled.warnings == ("linux.seccomp.architectures[2]: SCMP_ARCH_S390X cannot run on this machine: "
                                 "skipped",)


def test_export_bpf_is_a_sock_filter_array_ending_in_a_return():
    program = compile_filter(allow_all_but(SeccompSyscall(["mkdir"], "SCMP_ACT_ERRNO"))).export_bpf()
    assert program and len(program) % 8 == 0
    # first instruction loads the arch (offset 4 of struct seccomp_data): BPF_LD|BPF_W|BPF_ABS
    code, _jt, _jf, offset = struct.unpack_from("<HBBI", program, 0)
    assert (code, offset) == (0x20, 4)
    assert struct.unpack_from("<H", program, len(program) - 8)[0] == 0x06  # BPF_RET|BPF_K


def test_flags_reach_the_kernel_call():
    compiled = compile_filter(allow_all_but(flags=["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"]))
    fake = RecordingSyscalls()
    compiled.load(sys=fake)
    assert fake.of("seccomp_set_mode_filter") == [(compiled.program,
                                                   k.SECCOMP_FILTER_FLAG_LOG | k.SECCOMP_FILTER_FLAG_TSYNC)]


def test_rule_equal_to_the_default_action_is_dropped():
    assert compile_filter(allow_all_but(SeccompSyscall(["read"], "SCMP_ACT_ALLOW"))).warnings == ()


def test_validate_alone_needs_no_libseccomp():
    validate_seccomp(allow_all_but(SeccompSyscall(["mkdir"], "SCMP_ACT_ERRNO", errno_ret=5)))


# --- loaded for real ---------------------------------------------------------------------------------


def load_in_child(profile: Seccomp, then, no_new_privs: bool = True):
    compiled = compile_filter(profile)  # in the parent, before fork, as the runtime does

    def child():
        if no_new_privs:
            set_no_new_privs()
        compiled.load()
        return then()

    return child


def test_denied_mkdir_returns_the_configured_errno(forked, tmp_path):
    profile = allow_all_but(SeccompSyscall(["mkdir", "mkdirat"], "SCMP_ACT_ERRNO", errno_ret=1))

    def then():
        status = status_fields()
        return errno_of(lambda: os.mkdir(tmp_path / "x")), status["Seccomp"], status["Seccomp_filters"], \
            status["NoNewPrivs"]

    assert forked(load_in_child(profile, then)).ok() == [errno.EPERM, "2", "1", "1"]
    assert not (tmp_path / "x").exists()


def test_custom_errno(forked, tmp_path):
    profile = allow_all_but(SeccompSyscall(["mkdir", "mkdirat"], "SCMP_ACT_ERRNO", errno_ret=errno.EROFS))
    assert forked(load_in_child(profile, lambda: errno_of(lambda: os.mkdir(tmp_path / "x")))).ok() == errno.EROFS


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                                    "SCMP_ACT_TRAP"])
def test_kill_and_trap_actions_end_the_child_with_sigsys(forked, tmp_path, action):
    profile = allow_all_but(SeccompSyscall(["mkdir", "mkdirat"], action))
    result = forked(load_in_child(profile, lambda: os.mkdir(tmp_path / "x")))
    assert result.signal == signal.SIGSYS
    assert not (tmp_path / "x").exists()


def test_log_action_allows(forked, tmp_path):
    profile = allow_all_but(SeccompSyscall(["mkdir", "mkdirat"], "SCMP_ACT_LOG"))
    forked(load_in_child(profile, lambda: os.mkdir(tmp_path / "x"))).ok()
    assert (tmp_path / "x").is_dir()


def test_default_errno_with_allow_list(forked):
    profile = Seccomp(default_action="SCMP_ACT_ERRNO", default_errno_ret=errno.ENOTSUP,
                      syscalls=[SeccompSyscall(["exit", "exit_group", "write", "getpid", "close", "munmap",
                                                "rt_sigprocmask", "rt_sigaction", "brk", "mmap", "madvise",
                                                "futex"], "SCMP_ACT_ALLOW")])
    assert forked(load_in_child(profile, lambda: errno_of(os.getcwd))).ok() == errno.ENOTSUP


def test_argument_comparison_denies_only_the_matching_value(forked):
    profile = allow_all_but(SeccompSyscall(["personality"], "SCMP_ACT_ERRNO", errno_ret=1,
                                           args=[SeccompArg(0, 0xFFFFFFFF, "SCMP_CMP_EQ")]))

    def then():
        return errno_of(lambda: LINUX.personality(k.PERSONALITY_QUERY)), errno_of(lambda: LINUX.personality(0))

    assert forked(load_in_child(profile, then)).ok() == [errno.EPERM, None]


def test_masked_eq_uses_value_as_the_mask_and_value_two_as_the_datum(forked, tmp_path):
    """Deny openat(2) with O_CREAT in its flags (argument 2), allow every other open."""
    existing = tmp_path / "existing"
    existing.write_text("x")
    profile = allow_all_but(SeccompSyscall(["openat"], "SCMP_ACT_ERRNO", errno_ret=1,
                                           args=[SeccompArg(2, os.O_CREAT, "SCMP_CMP_MASKED_EQ",
                                                            value_two=os.O_CREAT)]))

    def then():
        def open_close(path, flags):
            os.close(os.open(path, flags, 0o600))

        return [errno_of(lambda: open_close(tmp_path / "new", os.O_WRONLY | os.O_CREAT)),
                errno_of(lambda: open_close(existing, os.O_WRONLY | os.O_CREAT | os.O_APPEND)),
                errno_of(lambda: open_close(existing, os.O_RDONLY))]

    assert forked(load_in_child(profile, then)).ok() == [errno.EPERM, errno.EPERM, None]
    assert not (tmp_path / "new").exists()


def test_conditions_on_the_same_argument_are_ored_and_on_different_ones_anded(forked):
    same_arg = SeccompSyscall(["personality"], "SCMP_ACT_ERRNO", errno_ret=1,
                              args=[SeccompArg(0, 0x0008, "SCMP_CMP_EQ"), SeccompArg(0, 0x20008, "SCMP_CMP_EQ")])
    profile = allow_all_but(same_arg)

    def then():
        return [errno_of(lambda p=p: LINUX.personality(p)) for p in (0x0008, 0x20008, 0)]

    assert forked(load_in_child(profile, then)).ok() == [errno.EPERM, errno.EPERM, None]


@pytest.mark.parametrize(("op", "value", "denied_which"), [("SCMP_CMP_GE", 1, 1), ("SCMP_CMP_LT", 1, 0),
                                                          ("SCMP_CMP_GT", 0, 1), ("SCMP_CMP_LE", 0, 0),
                                                          ("SCMP_CMP_NE", 0, 1)])
def test_ordering_comparisons(forked, op, value, denied_which):
    """getpriority(which, 0) with which = PRIO_PROCESS (0) or PRIO_PGRP (1); the rule denies one of them."""
    profile = allow_all_but(SeccompSyscall(["getpriority"], "SCMP_ACT_ERRNO", errno_ret=1,
                                           args=[SeccompArg(0, value, op)]))

    def then():
        return [errno_of(lambda: os.getpriority(os.PRIO_PROCESS, 0)), errno_of(lambda: os.getpriority(os.PRIO_PGRP, 0))]

    expected = [None, None]
    expected[denied_which] = errno.EPERM
    assert forked(load_in_child(profile, then)).ok() == expected


def test_flags_log_and_tsync_load(forked):
    profile = allow_all_but(SeccompSyscall(["mkdir"], "SCMP_ACT_ERRNO"),
                            flags=["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"])
    assert forked(load_in_child(profile, lambda: status_fields()["Seccomp"])).ok() == "2"


def test_loading_without_no_new_privs_needs_cap_sys_admin(forked):
    compiled = compile_filter(allow_all_but(SeccompSyscall(["mkdir"], "SCMP_ACT_ERRNO")))

    def child():
        prctl.set_caps((prctl.CAP_SYS_ADMIN, prctl.CAP_EFFECTIVE, False))
        try:
            compiled.load()
        except ContainerError as e:
            return describe(e)
        return None

    message = forked(child).ok()
    assert message is not None and "no_new_privs" in message and "EACCES" in message


def test_privileged_load_without_no_new_privs(forked):
    profile = allow_all_but(SeccompSyscall(["mkdir"], "SCMP_ACT_ERRNO"))

    def then():
        status = status_fields()
        return status["NoNewPrivs"], status["Seccomp"]

    assert forked(load_in_child(profile, then, no_new_privs=False)).ok() == ["0", "2"]


# --- the default profile -----------------------------------------------------------------------------


def test_default_profile_compiles_without_warnings_and_is_cached():
    assert default_filter().warnings == ()
    assert default_filter() is default_filter()


def test_default_profile_allows_no_denied_name():
    from styrolite.security.seccomp_default import ALLOWED, DENIED

    assert not set(ALLOWED) & set(DENIED)
    for name in ("kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
                 "open_by_handle_at", "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "mount",
                 "umount2", "pivot_root", "swapon", "swapoff", "reboot", "setns", "unshare", "ptrace",
                 "process_vm_readv", "process_vm_writev", "userfaultfd", "iopl", "ioperm", "acct", "quotactl",
                 "clock_settime", "settimeofday", "lookup_dcookie", "name_to_handle_at", "nfsservctl", "vm86"):
        assert name in DENIED, name
        assert scmp.resolve_syscall(name) != scmp.NR_SCMP_ERROR, name


BUSYBOX = "/bin/busybox"
EHWPOISON = 133  # not in Python's errno module


@pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox-static")
def test_default_profile_runs_busybox_and_denies_unshare_and_mount(forked):
    import subprocess

    compiled = default_filter()

    def child():
        set_no_new_privs()
        compiled.load()
        ok = subprocess.run([BUSYBOX, "sh", "-c", "echo hi; ls /"], capture_output=True, text=True)
        denied = subprocess.run([BUSYBOX, "sh", "-c", "unshare -U true || echo unshare-denied; "
                                 "mount -t tmpfs none /mnt || echo mount-denied"], capture_output=True, text=True)
        return ok.returncode, ok.stdout, denied.stdout

    code, out, denied = forked(child).ok()
    assert code == 0 and out.startswith("hi\n") and "bin" in out.split()
    assert "unshare-denied" in denied and "mount-denied" in denied


def test_default_profile_denies_dangerous_calls_directly(forked, tmp_path):
    compiled = default_filter()

    def child():
        set_no_new_privs()
        compiled.load()
        results = {
            "unshare": errno_of(lambda: LINUX.unshare(k.CLONE_NEWUSER)),
            "unshare_ns": errno_of(lambda: LINUX.unshare(k.CLONE_NEWNS)),
            "mount": errno_of(lambda: LINUX.mount("none", str(tmp_path), "tmpfs", 0)),
            "umount2": errno_of(lambda: LINUX.umount2(str(tmp_path))),
            "pivot_root": errno_of(lambda: LINUX.pivot_root("/", "/")),
            "bpf": errno_of(lambda: LINUX.bpf(0, bytes(128))),
            "finit_module": errno_of(lambda: LINUX.finit_module(0)),
            "vsock": errno_of(lambda: socket.socket(40, socket.SOCK_STREAM)),
            "personality_x": errno_of(lambda: LINUX.personality(0x0400000)),
        }
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM):
            results["inet_socket"] = None
        results["fork"] = os.waitpid(_fork_exit(), 0)[1]
        return results

    results = forked(child).ok()
    for name in ("unshare", "unshare_ns", "mount", "umount2", "pivot_root", "bpf", "finit_module", "vsock",
                 "personality_x"):
        assert results[name] == errno.EPERM, name
    assert results["inet_socket"] is None
    assert results["fork"] == 0


def _fork_exit() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    return pid


def test_default_profile_runs_python_threads_and_subprocesses(forked):
    import subprocess
    import sys

    compiled = default_filter()
    code = ("import threading, subprocess; t = threading.Thread(target=print, args=('thread',)); t.start(); "
            "t.join(); print(subprocess.run(['true']).returncode)")

    def child():
        set_no_new_privs()
        compiled.load()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        return done.returncode, done.stdout, done.stderr

    assert forked(child).ok() == [0, "thread\n0\n", ""]


def test_tsync_failure_names_the_thread():
    class TsyncFails(RecordingSyscalls):
        def seccomp_set_mode_filter(self, program: bytes, flags: int = 0) -> int:
            super().seccomp_set_mode_filter(program, flags)
            return 4242

    compiled = compile_filter(allow_all_but(flags=["SECCOMP_FILTER_FLAG_TSYNC"]))
    with pytest.raises(ContainerError, match="thread 4242"):
        compiled.load(sys=TsyncFails())


def test_compiling_the_same_profile_twice_reuses_the_filter():
    first = compile_filter(allow_all_but(SeccompSyscall(["mkdir"], "SCMP_ACT_ERRNO", errno_ret=3)))
    assert compile_filter(allow_all_but(SeccompSyscall(["mkdir"], "SCMP_ACT_ERRNO", errno_ret=3))) is first
    assert compile_filter(allow_all_but(SeccompSyscall(["mkdir"], "SCMP_ACT_ERRNO", errno_ret=4))) is not first


def test_every_explicitly_denied_syscall_is_refused_by_the_filter(forked):
    """Each DENIED name that exists natively, called with zero arguments, gets the profile's own errno.

    The default errno is changed to one no kernel path returns here (EHWPOISON), so the answer can only
    come from the filter, not from the kernel refusing the arguments.
    """
    from cffi import FFI

    from styrolite.security import default_profile
    from styrolite.security.seccomp_default import DENIED

    profile = default_profile()
    profile.default_errno_ret = EHWPOISON
    compiled = compile_filter(profile)
    numbers = {name: scmp.resolve_syscall(name) for name in DENIED}
    natives = {name: number for name, number in numbers.items() if number >= 0}
    ffi = FFI()
    ffi.cdef("long syscall(long number, ...);")
    libc = ffi.dlopen(None)
    zero = ffi.cast("long", 0)

    def child():
        set_no_new_privs()
        compiled.load()
        answers = {}
        for name, number in natives.items():
            result = libc.syscall(ffi.cast("long", number), zero, zero, zero, zero, zero, zero)
            answers[name] = ffi.errno if result == -1 else f"returned {result}"
        return answers

    answers = forked(child).ok()
    assert len(answers) >= 50
    assert {name: answer for name, answer in answers.items() if answer != EHWPOISON} == {}


def test_trace_action_without_a_tracer_fails_with_enosys(forked, tmp_path):
    profile = allow_all_but(SeccompSyscall(["mkdir", "mkdirat"], "SCMP_ACT_TRACE", errno_ret=7))
    assert forked(load_in_child(profile, lambda: errno_of(lambda: os.mkdir(tmp_path / "x")))).ok() == errno.ENOSYS
