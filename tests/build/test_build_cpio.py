"""The newc writer: reproducible bytes, accepted by GNU cpio, hard links and devices kept."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from zonebuild.cpio import CpioArchive, CpioError, compress, concat_for_boot


def _sample_tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(b"\x7fELF fake" * 100)
    (root / "bin" / "tool").chmod(0o755)
    os.link(root / "bin" / "tool", root / "bin" / "alias")
    (root / "etc").mkdir()
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    os.symlink("tool", root / "bin" / "link")
    return root


def _archive(tree: Path) -> CpioArchive:
    archive = CpioArchive()
    archive.add_tree(tree)
    archive.add_device("dev/console", "c", 5, 1, 0o600)
    archive.add_device("dev/urandom", "c", 1, 9, 0o666)
    return archive


def test_two_builds_give_the_same_bytes(tmp_path: Path) -> None:
    tree_a = _sample_tree(tmp_path / "a")
    tree_b = _sample_tree(tmp_path / "b")
    os.utime(tree_b / "etc" / "hosts", (1, 1))  # different mtimes on disk must not matter
    digests = set()
    for tree, name in ((tree_a, "a.cpio.zst"), (tree_b, "b.cpio.zst")):
        out = _archive(tree).write(tmp_path / name)
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1


@pytest.mark.root
@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio missing")
def test_gnu_cpio_lists_and_extracts_it(tmp_path: Path) -> None:
    raw = _archive(_sample_tree(tmp_path / "t")).to_bytes()
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=raw, capture_output=True, check=True).stdout.decode()
    assert listing.split() == sorted(listing.split())
    assert {"bin/tool", "bin/alias", "bin/link", "dev/console", "etc/hosts"} <= set(listing.split())
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=raw, cwd=out, check=True)
    tool, alias = out / "bin" / "tool", out / "bin" / "alias"
    assert tool.read_bytes() == alias.read_bytes() == b"\x7fELF fake" * 100
    assert tool.stat().st_ino == alias.stat().st_ino
    assert stat.S_IMODE(tool.stat().st_mode) == 0o755
    assert os.readlink(out / "bin" / "link") == "tool"
    console = (out / "dev" / "console").lstat()
    assert stat.S_ISCHR(console.st_mode) and os.major(console.st_rdev) == 5 and os.minor(console.st_rdev) == 1


def test_header_fields_are_fixed(tmp_path: Path) -> None:
    archive = CpioArchive()
    archive.add_file("init", b"#!/bin/sh\n", mode=0o755)
    raw = archive.to_bytes()
    assert raw.startswith(b"070701")
    # ino, mode, uid, gid, nlink, mtime: first entry is the file, numbered 1, owned by root, mtime 0
    fields = [int(raw[6 + 8 * i: 14 + 8 * i], 16) for i in range(13)]
    assert fields[0] == 1 and fields[1] == 0o100755 and fields[2:4] == [0, 0] and fields[5] == 0
    assert len(raw) % 512 == 0


def test_gzip_on_request_and_zstd_by_default(tmp_path: Path) -> None:
    archive = CpioArchive()
    archive.add_file("a", b"x")
    assert archive.write(tmp_path / "a.gz", "gzip").read_bytes()[:2] == b"\x1f\x8b"
    assert archive.write(tmp_path / "a.zst").read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    with pytest.raises(CpioError, match="unknown compression"):
        compress(b"", "lz4")


def test_refuses_dotdot_and_dangling_links() -> None:
    archive = CpioArchive()
    with pytest.raises(CpioError, match=r"'\.\.'"):
        archive.add_file("../etc/passwd", b"")
    with pytest.raises(CpioError, match="not a regular file"):
        archive.add_hardlink("bin/b", "bin/missing")


def test_concat_pads_to_alignment() -> None:
    joined = concat_for_boot(b"abc", b"070701")
    assert joined.index(b"070701") % 4 == 0
