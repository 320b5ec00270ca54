"""Which namespaces are joined before a user namespace and which after it (the recording seam, no root)."""

from __future__ import annotations

import errno
import os

import pytest

from styrolite.errors import ContainerError
from styrolite.namespaces import join_before_user
from styrolite.syscalls import constants as k
from styrolite.syscalls.fake import RecordingSyscalls


def _opened(*types: str) -> list[tuple[str, int]]:
    return [(t, os.open("/dev/null", os.O_RDONLY)) for t in types]


def test_privileged_caller_joins_everything_before_the_user_namespace() -> None:
    fake = RecordingSyscalls()
    later = join_before_user(_opened("user", "ipc", "network", "mount"), fake)
    assert [args[1] for args in fake.of("setns")] == [k.CLONE_NEWIPC, k.CLONE_NEWNET, k.CLONE_NEWNS]
    assert [t for t, _ in later] == ["user"]
    for _, fd in later:
        os.close(fd)


def test_eperm_is_deferred_until_after_the_user_namespace() -> None:
    """A rootless caller may join the container's namespaces only from inside its user namespace."""
    fake = RecordingSyscalls()
    fake.fail_on("setns", errno.EPERM, lambda args: args[1] == k.CLONE_NEWIPC)
    later = join_before_user(_opened("user", "ipc", "network"), fake)
    assert [t for t, _ in later] == ["user", "ipc"]
    for _, fd in later:
        os.fstat(fd)  # still open for the second pass
        os.close(fd)


def test_without_a_user_namespace_eperm_is_an_error_naming_the_namespace() -> None:
    fake = RecordingSyscalls()
    fake.fail_on("setns", errno.EPERM, lambda args: args[1] == k.CLONE_NEWNET)
    with pytest.raises(ContainerError, match="join network namespace"):
        join_before_user(_opened("ipc", "network", "mount"), fake)
