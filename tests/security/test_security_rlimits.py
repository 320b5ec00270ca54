"""rlimits: validation, the calls made (through the fake), and limits really set in a forked child."""

from __future__ import annotations

import resource

import prctl
import pytest

from styrolite.errors import ConfigError, ContainerError, describe
from styrolite.security import RLIMIT_NUMBERS, apply_rlimits, validate_rlimits
from styrolite.spec.model import Rlimit
from styrolite.syscalls.fake import RecordingSyscalls

INFINITY = (1 << 64) - 1


def test_every_oci_rlimit_name_maps_to_the_resource_constant():
    assert RLIMIT_NUMBERS["RLIMIT_NOFILE"] == resource.RLIMIT_NOFILE
    assert len(RLIMIT_NUMBERS) == 16


def test_calls_through_the_seam_with_infinity_mapped():
    fake = RecordingSyscalls()
    apply_rlimits([Rlimit("RLIMIT_NOFILE", 100, 200), Rlimit("RLIMIT_CORE", INFINITY, INFINITY)], sys=fake)
    assert fake.of("setrlimit") == [
        (resource.RLIMIT_NOFILE, 100, 200),
        (resource.RLIMIT_CORE, resource.RLIM_INFINITY, resource.RLIM_INFINITY),
    ]


@pytest.mark.parametrize(
    ("rlimits", "path", "fragment"),
    [
        ([Rlimit("RLIMIT_NOFILE", 1, 2), Rlimit("RLIMIT_BOGUS", 1, 2)], "process.rlimits[1].type", "RLIMIT_BOGUS"),
        ([Rlimit("RLIMIT_NOFILE", 1, 2), Rlimit("RLIMIT_NOFILE", 1, 2)], "process.rlimits[1].type", "duplicate"),
        ([Rlimit("RLIMIT_NOFILE", 300, 200)], "process.rlimits[0].soft", "exceeds hard limit 200"),
        ([Rlimit("RLIMIT_NOFILE", INFINITY, 200)], "process.rlimits[0].soft", "unlimited exceeds"),
        ([Rlimit("RLIMIT_NOFILE", -1, 200)], "process.rlimits[0].soft", "0..2**64-1"),
    ],
)
def test_bad_rlimits_name_the_json_path(rlimits, path, fragment):
    with pytest.raises(ConfigError) as info:
        validate_rlimits(rlimits)
    assert info.value.path == path
    assert fragment in str(info.value)


def test_a_failed_call_names_the_rlimit():
    fake = RecordingSyscalls()
    fake.fail_on("setrlimit")
    with pytest.raises(ContainerError, match="set RLIMIT_NPROC to soft=5 hard=5"):
        apply_rlimits([Rlimit("RLIMIT_NPROC", 5, 5)], sys=fake)


def test_limits_are_really_set(forked):
    def child():
        apply_rlimits([Rlimit("RLIMIT_NOFILE", 100, 200), Rlimit("RLIMIT_CORE", 0, 0),
                       Rlimit("RLIMIT_NPROC", 4096, 4096)])
        return [resource.getrlimit(r) for r in (resource.RLIMIT_NOFILE, resource.RLIMIT_CORE, resource.RLIMIT_NPROC)]

    assert forked(child).ok() == [[100, 200], [0, 0], [4096, 4096]]


def test_raising_the_hard_limit_without_cap_sys_resource_is_a_clear_error(forked):
    def child():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 128))
        prctl.set_caps((prctl.CAP_SYS_RESOURCE, prctl.CAP_EFFECTIVE, False))  # as on hosts without it
        try:
            apply_rlimits([Rlimit("RLIMIT_NOFILE", 64, 4096)])
        except ContainerError as e:
            return describe(e)
        return None

    message = forked(child).ok()
    assert message is not None
    assert "RLIMIT_NOFILE" in message and "CAP_SYS_RESOURCE" in message and "current 128" in message
    assert "EPERM" in message


def test_numbers_agree_with_the_resource_module():
    for name, number in RLIMIT_NUMBERS.items():
        if hasattr(resource, name):
            assert getattr(resource, name) == number, name
