"""Capabilities: name tables, the pure plan, and the five sets really applied in a forked child."""

from __future__ import annotations

import os
import subprocess

import prctl
import pytest
from security_forking import status_fields

from styrolite.errors import ConfigError
from styrolite.security import (
    CAPABILITY_NAMES,
    DEFAULT_CAPABILITIES,
    apply_capabilities,
    capability_name,
    capability_number,
    current_capabilities,
    keep_caps_across_setuid,
    last_cap,
    mask_to_names,
    names_to_mask,
    plan_capabilities,
)
from styrolite.security.capabilities import unknown_capability_warnings
from styrolite.spec.model import Capabilities, Process

BUSYBOX = "/bin/busybox"
ALL = (1 << 41) - 1


def caps_of(names, ambient=()) -> Capabilities:
    names = list(names)
    return Capabilities(bounding=names, effective=names, inheritable=names, permitted=names, ambient=list(ambient))


# --- name tables -------------------------------------------------------------------------------------


def test_table_matches_the_kernel_numbers_python_prctl_knows():
    assert len(CAPABILITY_NAMES) == 41
    assert capability_number("CAP_CHECKPOINT_RESTORE") == 40
    for name in CAPABILITY_NAMES:
        if hasattr(prctl, name):
            assert getattr(prctl, name) == capability_number(name), name


def test_names_are_case_insensitive_and_prefix_optional():
    assert capability_number("cap_sys_admin") == capability_number("SYS_ADMIN") == 21
    assert capability_name(21) == "CAP_SYS_ADMIN"
    assert capability_name(63) == "CAP_63"
    with pytest.raises(KeyError):
        capability_number("CAP_WORLD_DOMINATION")


def test_mask_round_trip():
    assert names_to_mask(["CAP_CHOWN", "CAP_KILL"]) == 0b100001
    assert mask_to_names(names_to_mask(list(DEFAULT_CAPABILITIES))) == sorted(
        DEFAULT_CAPABILITIES, key=capability_number)


def test_last_cap_is_the_running_kernels():
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert last_cap() == int(f.read())


def test_current_capabilities_reads_all_five_sets():
    sets = current_capabilities()
    assert set(sets) == {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}
    assert sets["CapBnd"] == int(status_fields()["CapBnd"], 16)


def test_default_set_excludes_the_issue_6_list():
    for name in ("CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_PTRACE", "CAP_NET_ADMIN", "CAP_NET_RAW",
                 "CAP_SYS_RAWIO", "CAP_SYS_BOOT", "CAP_DAC_READ_SEARCH", "CAP_SYSLOG"):
        assert name not in DEFAULT_CAPABILITIES


# --- pure plan ---------------------------------------------------------------------------------------


def full(bnd=ALL, prm=ALL, inh=0) -> dict[str, int]:
    return {"CapBnd": bnd, "CapPrm": prm, "CapEff": prm, "CapInh": inh, "CapAmb": 0}


def test_plan_keeps_what_is_asked_for():
    plan = plan_capabilities(caps_of(["CAP_CHOWN", "CAP_KILL"], ambient=["CAP_KILL"]), full(), 40)
    assert plan.bounding == plan.permitted == plan.effective == plan.inheritable == names_to_mask(
        ["CAP_CHOWN", "CAP_KILL"])
    assert plan.ambient == names_to_mask(["CAP_KILL"])
    assert plan.warnings == []


def test_plan_skips_caps_the_host_lacks_with_one_line_each():
    no_sys_resource = ALL & ~names_to_mask(["CAP_SYS_RESOURCE"])
    plan = plan_capabilities(caps_of(["CAP_CHOWN", "CAP_SYS_RESOURCE"]), full(no_sys_resource, no_sys_resource), 40)
    assert plan.bounding == names_to_mask(["CAP_CHOWN"])
    assert len(plan.warnings) == 1
    assert "CAP_SYS_RESOURCE" in plan.warnings[0] and "bounding" in plan.warnings[0]


def test_plan_skips_caps_newer_than_the_kernel():
    plan = plan_capabilities(caps_of(["CAP_CHECKPOINT_RESTORE", "CAP_BPF"]), full(), 39)
    assert plan.bounding == names_to_mask(["CAP_BPF"])
    assert "CAP_CHECKPOINT_RESTORE" in plan.warnings[0] and "cap_last_cap=39" in plan.warnings[0]


def test_plan_ambient_needs_permitted_and_inheritable():
    caps = Capabilities(bounding=["CAP_KILL"], permitted=["CAP_KILL"], effective=["CAP_KILL"],
                        inheritable=[], ambient=["CAP_KILL"])
    plan = plan_capabilities(caps, full(), 40)
    assert plan.ambient == 0
    assert plan.warnings == ["capability CAP_KILL skipped from ambient: ambient needs it in permitted and "
                             "inheritable too"]


def test_plan_effective_needs_permitted():
    caps = Capabilities(bounding=["CAP_KILL"], effective=["CAP_KILL"])
    plan = plan_capabilities(caps, full(), 40)
    assert plan.effective == 0 and "effective needs it in permitted" in plan.warnings[0]


def test_unknown_name_is_skipped_and_reported_once_at_create():
    plan = plan_capabilities(Capabilities(bounding=["CAP_CHOWN"], permitted=["CAP_CHOWN"],
                                          effective=["CAP_CHOWN", "CAP_NOPE"]), full(), 40)
    assert plan.effective == names_to_mask(["CAP_CHOWN"]) and plan.bounding == names_to_mask(["CAP_CHOWN"])
    process = Process(cwd="/", capabilities=Capabilities(effective=["CAP_NOPE", "chown", "CAP_NOPE"]))
    assert unknown_capability_warnings(process) == ["process.capabilities: unknown capability 'CAP_NOPE' ignored"]


def test_non_string_name_is_a_config_error_with_the_json_path():
    with pytest.raises(ConfigError) as info:
        plan_capabilities(Capabilities(effective=["CAP_CHOWN", 7]), full(), 40)  # type: ignore[list-item]
    assert info.value.path == "process.capabilities.effective[1]"


# --- applied for real --------------------------------------------------------------------------------


def test_root_process_gets_exactly_the_configured_sets(forked):
    wanted = list(DEFAULT_CAPABILITIES)

    def child():
        warnings = apply_capabilities(caps_of(wanted, ambient=["CAP_CHOWN"]))
        return warnings, status_fields()

    warnings, status = forked(child).ok()
    mask = names_to_mask(wanted)
    assert warnings == []
    for key in ("CapBnd", "CapPrm", "CapEff", "CapInh"):
        assert int(status[key], 16) == mask, key
    assert int(status["CapAmb"], 16) == names_to_mask(["CAP_CHOWN"])


def test_missing_host_capability_is_a_warning_not_a_crash(forked):
    def child():
        prctl.capbset_drop(prctl.CAP_SYS_RESOURCE)  # make the host "lack" it even where it has it
        prctl.set_caps((prctl.CAP_SYS_RESOURCE, [prctl.CAP_PERMITTED, prctl.CAP_EFFECTIVE], False))
        warnings = apply_capabilities(caps_of(["CAP_KILL", "CAP_SYS_RESOURCE"]))
        return warnings, status_fields()

    warnings, status = forked(child).ok()
    assert len(warnings) == 1 and "CAP_SYS_RESOURCE" in warnings[0]
    assert int(status["CapBnd"], 16) == int(status["CapEff"], 16) == names_to_mask(["CAP_KILL"])


def test_empty_sets_drop_everything(forked):
    status = forked(lambda: (apply_capabilities(Capabilities()), status_fields())[1]).ok()
    for key in ("CapBnd", "CapPrm", "CapEff", "CapInh", "CapAmb"):
        assert int(status[key], 16) == 0, key


def test_none_leaves_the_sets_alone(forked):
    before = current_capabilities()
    assert forked(lambda: (apply_capabilities(None), current_capabilities())[1]).ok() == {
        key: before[key] for key in before}


@pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox-static")
def test_non_root_user_keeps_exactly_the_configured_caps_across_setuid_and_execve(forked):
    """The real init sequence: keepcaps, setresuid(1000), apply, execve; caps seen by the new program."""
    wanted = ["CAP_NET_BIND_SERVICE", "CAP_KILL"]

    def child():
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.dup2(write_end, 1)
            keep_caps_across_setuid()
            os.setgroups([])
            os.setresgid(1000, 1000, 1000)
            os.setresuid(1000, 1000, 1000)
            apply_capabilities(caps_of(wanted, ambient=wanted))
            os.execv(BUSYBOX, [BUSYBOX, "cat", "/proc/self/status"])
        os.close(write_end)
        with os.fdopen(read_end) as f:
            text = f.read()
        os.waitpid(pid, 0)
        return dict((key, value.strip()) for key, _, value in (line.partition(":") for line in text.splitlines()))

    status = forked(child).ok()
    mask = names_to_mask(wanted)
    assert status["Uid"].split()[0] == "1000"
    for key in ("CapBnd", "CapPrm", "CapEff", "CapInh", "CapAmb"):
        assert int(status[key], 16) == mask, key


@pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox-static")
def test_non_root_user_without_ambient_has_no_effective_caps_after_execve(forked):
    def child():
        keep_caps_across_setuid()
        os.setresuid(1000, 1000, 1000)
        apply_capabilities(caps_of(["CAP_KILL"]))
        return subprocess.run([BUSYBOX, "cat", "/proc/self/status"], capture_output=True, text=True).stdout

    text = forked(child).ok()
    status = dict((key, value.strip()) for key, _, value in (line.partition(":") for line in text.splitlines()))
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapBnd"], 16) == names_to_mask(["CAP_KILL"])
