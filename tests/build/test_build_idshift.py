"""Ownership shifting for user-namespace containers: owners, setuid bits, file capabilities, hard links."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from zonebuild.idshift import (
    CAPABILITY_XATTR,
    IdShiftError,
    check_shift,
    shift_ownership,
    shifted_capability,
)

SHIFT = 100_000 // 65536 * 65536 + 65536  # 131072: a multiple of the range


def test_shift_must_be_a_whole_range_above_the_zone_ids() -> None:
    assert check_shift(131072) == 131072
    for bad in (0, 1000, 65535, 100_000, 2**32 - 65536, True, "131072"):
        with pytest.raises(IdShiftError, match="owner shift"):
            check_shift(bad)  # type: ignore[arg-type]


def test_capability_becomes_revision_3_owned_by_the_shifted_root() -> None:
    v2 = (0x02000001).to_bytes(4, "little") + (1 << 13).to_bytes(4, "little") + bytes(12)  # cap_net_raw+ep
    v3 = shifted_capability(v2, SHIFT)
    assert len(v3) == 24 and v3[:4] == (0x03000001).to_bytes(4, "little")
    assert v3[4:8] == (1 << 13).to_bytes(4, "little") and int.from_bytes(v3[20:], "little") == SHIFT
    with pytest.raises(IdShiftError, match="revision"):
        shifted_capability(bytes(20), SHIFT)
    with pytest.raises(IdShiftError, match="bytes"):
        shifted_capability(b"\x00", SHIFT)


@pytest.mark.root
def test_a_tree_is_shifted_once_with_its_special_bits(tmp_path: Path) -> None:
    tree = tmp_path / "rootfs"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    os.chown(tree / "etc" / "passwd", 0, 42)
    tool = tree / "su"
    tool.write_bytes(b"\x7fELF")
    os.chmod(tool, 0o4755)
    os.link(tool, tree / "su-again")
    os.symlink("/etc/passwd", tree / "link")
    os.lchown(tree / "link", 1000, 1000)
    ping = tree / "ping"
    ping.write_bytes(b"")
    if shutil.which("setcap"):
        subprocess.run(["setcap", "cap_net_raw+ep", str(ping)], check=True)
    assert shift_ownership(tree, SHIFT) == 6  # root, etc, passwd, su (its second name skipped), link, ping
    owners = {p.name: (p.lstat().st_uid, p.lstat().st_gid) for p in tree.rglob("*")}
    assert owners["passwd"] == (SHIFT, SHIFT + 42) and owners["link"] == (SHIFT + 1000, SHIFT + 1000)
    assert owners["su"] == owners["su-again"] == (SHIFT, SHIFT)
    assert (tree.stat().st_uid, tree.stat().st_gid) == (SHIFT, SHIFT)
    assert tool.stat().st_mode & 0o7777 == 0o4755
    if shutil.which("setcap"):
        raw = os.getxattr(ping, CAPABILITY_XATTR)
        assert raw[:1] == b"\x01" and raw[3:4] == b"\x03" and int.from_bytes(raw[20:24], "little") == SHIFT


@pytest.mark.root
def test_an_owner_outside_the_range_is_named(tmp_path: Path) -> None:
    (tmp_path / "big").write_text("")
    os.chown(tmp_path / "big", 70000, 0)
    with pytest.raises(IdShiftError, match=r"big: uid 70000 is outside"):
        shift_ownership(tmp_path, SHIFT)
