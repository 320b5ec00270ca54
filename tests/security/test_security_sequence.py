"""The whole process-security sequence in the order the container init runs it, checked by the exec'd program.

This is the reference for the init code: compile the filter before fork; in the child set dumpable off,
rlimits, keepcaps, the uid change, capabilities, no_new_privs, seccomp, execve.
"""

from __future__ import annotations

import os

import pytest

from styrolite.security import (
    DEFAULT_CAPABILITIES,
    apply_capabilities,
    apply_rlimits,
    default_filter,
    keep_caps_across_setuid,
    names_to_mask,
    set_dumpable,
    set_no_new_privs,
    set_oom_score_adj,
    set_umask,
)
from styrolite.spec.model import Capabilities, Rlimit

BUSYBOX = "/bin/busybox"
pytestmark = pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox-static")

SCRIPT = ("cat /proc/self/status; echo Limit: $(ulimit -n); echo Umask: $(umask); "
          "unshare -U true 2>/dev/null || echo UNSHARE: denied")


def run_sequence(uid: int, no_new_privileges: bool, caps: list[str], ambient: list[str]) -> dict[str, str]:
    seccomp = default_filter()  # parent, before fork
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.dup2(write_end, 1)
            set_dumpable(False)
            apply_rlimits([Rlimit("RLIMIT_NOFILE", 512, 512)])
            set_oom_score_adj(100)
            set_umask(0o027)
            if not no_new_privileges:
                seccomp.load()  # needs CAP_SYS_ADMIN: before the uid change and the capability drop
            keep_caps_across_setuid()
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            apply_capabilities(Capabilities(bounding=caps, effective=caps, inheritable=caps, permitted=caps,
                                            ambient=ambient))
            if no_new_privileges:
                set_no_new_privs()
                seccomp.load()
            os.execv(BUSYBOX, [BUSYBOX, "sh", "-c", SCRIPT])
        finally:
            os._exit(127)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, text
    return {key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())}


@pytest.mark.root
def test_root_container_with_no_new_privileges():
    status = run_sequence(0, True, list(DEFAULT_CAPABILITIES), [])
    mask = names_to_mask(list(DEFAULT_CAPABILITIES))
    assert int(status["CapBnd"], 16) == int(status["CapEff"], 16) == int(status["CapPrm"], 16) == mask
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2" and status["Seccomp_filters"] == "1"
    assert status["Limit"] == "512" and status["Umask"] == "0027"
    assert status["UNSHARE"] == "denied"


@pytest.mark.root
def test_non_root_user_without_no_new_privileges_keeps_its_ambient_caps():
    wanted = ["CAP_NET_BIND_SERVICE", "CAP_CHOWN"]
    status = run_sequence(1000, False, wanted, wanted)
    mask = names_to_mask(wanted)
    assert status["Uid"].split() == ["1000"] * 4
    for key in ("CapBnd", "CapPrm", "CapEff", "CapInh", "CapAmb"):
        assert int(status[key], 16) == mask, key
    assert status["NoNewPrivs"] == "0" and status["Seccomp"] == "2"
    assert status["UNSHARE"] == "denied"
