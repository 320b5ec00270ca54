"""no_new_privs, oom_score_adj, umask, personality, dumpable: applied in a forked child and read back."""

from __future__ import annotations

import os

import prctl
import pytest
from security_forking import status_fields

from styrolite.errors import ConfigError, ContainerError, describe
from styrolite.security import (
    set_dumpable,
    set_no_new_privs,
    set_oom_score_adj,
    set_personality,
    set_umask,
)
from styrolite.spec.model import Personality
from styrolite.syscalls import constants as k
from styrolite.syscalls.fake import RecordingSyscalls


def test_no_new_privs_shows_in_proc_status(forked):
    assert forked(lambda: (set_no_new_privs(), status_fields()["NoNewPrivs"])[1]).ok() == "1"


def test_dumpable_off(forked):
    assert forked(lambda: (set_dumpable(False), prctl.get_dumpable())[1]).ok() == 0


def test_oom_score_adj_written(forked):
    def child():
        set_oom_score_adj(500)
        with open("/proc/self/oom_score_adj") as f:
            return int(f.read())

    assert forked(child).ok() == 500


def test_lowering_oom_score_without_cap_sys_resource_is_a_clear_error(forked):
    def child():
        prctl.set_caps((prctl.CAP_SYS_RESOURCE, prctl.CAP_EFFECTIVE, False))
        try:
            set_oom_score_adj(-999)
        except ContainerError as e:
            return describe(e)
        return None

    message = forked(child).ok()
    assert message is not None and "CAP_SYS_RESOURCE" in message and "-999" in message


@pytest.mark.parametrize("value", [1001, -1001, "5", True])
def test_oom_score_adj_out_of_range(value):
    with pytest.raises(ConfigError, match=r"process\.oomScoreAdj"):
        set_oom_score_adj(value)


def test_umask(forked):
    def child():
        old = set_umask(0o027)
        return old, os.umask(0o027)

    assert forked(child).ok()[1] == 0o027
    with pytest.raises(ConfigError, match=r"process\.user\.umask"):
        set_umask(0o1777)


def test_personality_linux32_really_changes_uname(forked):
    if os.uname().machine != "x86_64":
        pytest.skip("LINUX32 check written for x86_64")
    assert forked(lambda: (set_personality(Personality("LINUX32")), os.uname().machine)[1]).ok() == "i686"


def test_personality_through_the_fake():
    fake = RecordingSyscalls()
    set_personality(Personality("LINUX"), sys=fake)
    set_personality(Personality("LINUX32"), sys=fake)
    assert fake.of("personality") == [(k.PER_LINUX,), (k.PER_LINUX32,)]


def test_bad_personality():
    with pytest.raises(ConfigError) as info:
        set_personality(Personality("WINDOWS"), sys=RecordingSyscalls())
    assert info.value.path == "linux.personality.domain"
    with pytest.raises(ConfigError) as info:
        set_personality(Personality("LINUX", flags=["ADDR_NO_RANDOMIZE"]), sys=RecordingSyscalls())
    assert info.value.path == "linux.personality.flags"
