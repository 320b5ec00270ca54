"""The mount options table (runc's), folded in order."""

from __future__ import annotations

import pytest

from styrolite.errors import ConfigError
from styrolite.rootfs.options import parse_options, propagation_flags
from styrolite.syscalls import constants as k


@pytest.mark.parametrize(("option", "flag"), [
    ("ro", k.MS_RDONLY), ("nosuid", k.MS_NOSUID), ("nodev", k.MS_NODEV), ("noexec", k.MS_NOEXEC),
    ("sync", k.MS_SYNCHRONOUS), ("dirsync", k.MS_DIRSYNC), ("remount", k.MS_REMOUNT), ("mand", k.MS_MANDLOCK),
    ("noatime", k.MS_NOATIME), ("nodiratime", k.MS_NODIRATIME), ("relatime", k.MS_RELATIME),
    ("strictatime", k.MS_STRICTATIME), ("nosymfollow", k.MS_NOSYMFOLLOW), ("bind", k.MS_BIND),
    ("rbind", k.MS_BIND | k.MS_REC),
])  # fmt: skip
def test_setting_options(option: str, flag: int) -> None:
    parsed = parse_options([option])
    assert parsed.flags == flag
    assert parsed.data == [] and parsed.propagation == []


@pytest.mark.parametrize(("set_option", "clear_option"), [
    ("ro", "rw"), ("nosuid", "suid"), ("nodev", "dev"), ("noexec", "exec"), ("sync", "async"),
    ("mand", "nomand"), ("noatime", "atime"), ("nodiratime", "diratime"), ("relatime", "norelatime"),
    ("strictatime", "nostrictatime"), ("nosymfollow", "symfollow"),
])  # fmt: skip
def test_later_options_win(set_option: str, clear_option: str) -> None:
    assert parse_options([set_option, clear_option]).flags == 0
    assert parse_options([set_option, clear_option]).cleared != 0  # remembered: a bind remount must not re-add it
    assert parse_options([clear_option, set_option]).flags != 0
    assert parse_options([clear_option, set_option]).cleared == 0


def test_propagation_is_a_list_of_separate_changes() -> None:
    parsed = parse_options(["rbind", "rslave", "private", "shared", "rshared", "unbindable", "runbindable",
                            "rprivate", "slave"])
    assert parsed.flags == k.MS_BIND | k.MS_REC
    assert parsed.propagation == [
        k.MS_SLAVE | k.MS_REC, k.MS_PRIVATE, k.MS_SHARED, k.MS_SHARED | k.MS_REC, k.MS_UNBINDABLE,
        k.MS_UNBINDABLE | k.MS_REC, k.MS_PRIVATE | k.MS_REC, k.MS_SLAVE,
    ]


def test_recursive_attributes_go_to_mount_setattr() -> None:
    parsed = parse_options(["rbind", "rro", "rnosuid", "rnodev", "rnoexec", "rnodiratime", "rnosymfollow"])
    assert parsed.flags == k.MS_BIND | k.MS_REC
    assert parsed.attr_set == (k.MOUNT_ATTR_RDONLY | k.MOUNT_ATTR_NOSUID | k.MOUNT_ATTR_NODEV
                               | k.MOUNT_ATTR_NOEXEC | k.MOUNT_ATTR_NODIRATIME | k.MOUNT_ATTR_NOSYMFOLLOW)
    assert parsed.attr_clr == 0
    assert parse_options(["rro", "rrw"]).attr_set == 0
    assert parse_options(["rro", "rrw"]).attr_clr == k.MOUNT_ATTR_RDONLY


@pytest.mark.parametrize(("option", "value"), [
    ("rnoatime", k.MOUNT_ATTR_NOATIME), ("rrelatime", k.MOUNT_ATTR_RELATIME),
    ("rstrictatime", k.MOUNT_ATTR_STRICTATIME),
])  # fmt: skip
def test_recursive_atime_replaces_the_atime_field(option: str, value: int) -> None:
    parsed = parse_options(["rnoatime", option])
    assert parsed.attr_clr & k.MOUNT_ATTR__ATIME == k.MOUNT_ATTR__ATIME
    assert parsed.attr_set & k.MOUNT_ATTR__ATIME == value
    assert parsed.has_recursive_attrs


def test_everything_else_is_filesystem_data_in_order() -> None:
    parsed = parse_options(["nosuid", "mode=755", "size=65536k", "newinstance", "ptmxmode=0666"])
    assert parsed.flags == k.MS_NOSUID
    assert parsed.data_string() == "mode=755,size=65536k,newinstance,ptmxmode=0666"
    assert parse_options(["ro"]).data_string() is None
    assert parse_options(["defaults"]).flags == 0


def test_atime_awareness() -> None:
    assert parse_options(["noatime"]).sets_atime
    assert parse_options(["norelatime"]).sets_atime
    assert not parse_options(["ro", "nosuid"]).sets_atime


def test_rootfs_propagation_names() -> None:
    assert propagation_flags("rslave", "linux.rootfsPropagation") == k.MS_SLAVE | k.MS_REC
    with pytest.raises(ConfigError) as info:
        propagation_flags("sideways", "linux.rootfsPropagation")
    assert info.value.path == "linux.rootfsPropagation"
    assert "sideways" in str(info.value)
