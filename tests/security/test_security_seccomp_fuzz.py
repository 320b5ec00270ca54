"""Hostile seccomp profiles: compile_filter either compiles or raises ConfigError, never anything else."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from styrolite.errors import ConfigError
from styrolite.security import compile_filter
from styrolite.security.seccomp import ACTIONS, ARCHITECTURES, FLAGS
from styrolite.spec.model import Seccomp, SeccompArg, SeccompSyscall

OPS = ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
       "SCMP_CMP_MASKED_EQ"]
some_ints = st.one_of(st.integers(min_value=-2, max_value=8), st.integers(min_value=-(1 << 65), max_value=1 << 65))
maybe_errno = st.one_of(st.none(), st.integers(min_value=-5, max_value=70000))
action = st.one_of(st.sampled_from(ACTIONS), st.text(max_size=12))
args = st.builds(SeccompArg, index=some_ints, value=some_ints, op=st.one_of(st.sampled_from(OPS), st.text(max_size=8)),
                 value_two=some_ints)
names = st.lists(st.one_of(st.sampled_from(["read", "mkdir", "personality", "socketcall", "clone3", "kexec_load"]),
                           st.text(max_size=12)), max_size=4)
syscalls = st.builds(SeccompSyscall, names=names, action=action, errno_ret=maybe_errno,
                     args=st.lists(args, max_size=3))
profiles = st.builds(
    Seccomp, default_action=action, default_errno_ret=maybe_errno,
    architectures=st.lists(st.one_of(st.sampled_from(sorted(ARCHITECTURES)), st.text(max_size=6)), max_size=2),
    flags=st.lists(st.one_of(st.sampled_from(sorted(FLAGS)), st.text(max_size=6)), max_size=2),
    syscalls=st.lists(syscalls, max_size=4),
)


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(profiles)
def test_compile_filter_fails_only_with_config_error(profile):
    try:
        compiled = compile_filter(profile)
    except ConfigError as e:
        assert e.path.startswith("linux.seccomp")
    else:
        assert compiled.program and len(compiled.program) % 8 == 0
