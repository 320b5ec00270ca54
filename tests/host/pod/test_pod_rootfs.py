"""host.pod.snapshot + host.pod.rootfs: overlayfs snapshot layers laid out as containerd's overlayfs
snapshotter does (snapshots/<id>/fs, whiteouts as 0/0 character devices, opaque directories as
trusted.overlay.opaque=y) -> an erofs/squashfs image, mounted back through a loop device and checked."""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from host.pod.errors import RootfsError
from host.pod.rootfs import RootfsImage, cache_key, prune_cache, rootfs_image
from host.pod.snapshot import Mount, snapshot_chain

pytestmark = pytest.mark.root
SHIFT = 65536
MTIME = 1_600_000_000
CAP_V2 = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)   # cap_net_bind_service, effective


def _snapshot(root: Path, number: int) -> Path:
    fs = root / "snapshots" / str(number) / "fs"
    fs.mkdir(parents=True)
    return fs


def _file(path: Path, data: str, mode: int = 0o644, owner: tuple[int, int] = (0, 0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    os.chown(path, *owner)
    os.chmod(path, mode)
    os.utime(path, (MTIME, MTIME))
    return path


@pytest.fixture
def layers(tmp_path: Path) -> dict[str, Path]:
    """Three committed layers and an empty active snapshot, as containerd's overlayfs snapshotter makes them."""
    root = tmp_path / "io.containerd.snapshotter.v1.overlayfs"
    base, middle, top = _snapshot(root, 1), _snapshot(root, 2), _snapshot(root, 3)
    _file(base / "etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    _file(base / "etc/removed", "gone in layer 2\n")
    _file(base / "opaque/old", "hidden by an opaque dir\n")
    _file(base / "home/user/notes", "mine\n", 0o600, (1000, 1000))
    _file(base / "bin/suid", "#!/bin/sh\n", 0o4755)
    ping = _file(base / "bin/ping", "ELF\n", 0o755)
    os.setxattr(ping, "security.capability", CAP_V2)
    os.link(base / "bin/suid", base / "bin/suid-link")
    os.symlink("../etc/passwd", base / "bin/passwd-link")
    os.mkfifo(base / "fifo")
    os.mknod(base / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (base / "tmp").mkdir(mode=0o1777)
    os.chmod(base / "tmp", 0o1777)
    os.mknod(_dir(middle / "etc") / "removed", stat.S_IFCHR, os.makedev(0, 0))
    _dir(middle / "opaque")
    os.setxattr(middle / "opaque", "trusted.overlay.opaque", b"y")
    _file(middle / "opaque/new", "the only file in /opaque\n")
    # a whiteout in a directory no lower layer has: overlayfs lists it but it does not exist
    os.mknod(_dir(middle / "fresh") / "ghost", stat.S_IFCHR, os.makedev(0, 0))
    _file(middle / "fresh/real", "here\n")
    _file(top / "etc/passwd", "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
    active = root / "snapshots" / "4"
    (active / "fs").mkdir(parents=True)
    (active / "work").mkdir()
    return {"base": base, "middle": middle, "top": top, "upper": active / "fs", "work": active / "work",
            "root": root}


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _overlay(layers: dict[str, Path]) -> list[dict]:
    """The mount list Task Create carries for a container over these layers (containerd's shape)."""
    lower = ":".join(str(layers[name]) for name in ("top", "middle", "base"))
    return [{"type": "overlay", "source": "overlay", "target": "",
             "options": ["index=off", "workdir=" + str(layers["work"]), "upperdir=" + str(layers["upper"]),
                         "lowerdir=" + lower]}]


LISTING = textwrap.dedent("""
    import json, os, sys
    root = sys.argv[1]
    out = {}
    for d, dirs, files in os.walk(root):
        for name in [*dirs, *files, *([""] if d == root else [])]:
            p = os.path.join(d, name) if name else d
            st = os.lstat(p)
            rel = "/" + os.path.relpath(p, root) if p != root else "/"
            row = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid, "ino": st.st_ino, "mtime": int(st.st_mtime),
                   "rdev": st.st_rdev}
            if os.path.isfile(p) and not os.path.islink(p):
                row["data"] = open(p).read()
                try:
                    row["cap"] = os.getxattr(p, "security.capability").hex()
                except OSError:
                    pass
            if os.path.islink(p):
                row["link"] = os.readlink(p)
            out[rel] = row
    print(json.dumps(out))
""")


def listing(image: Path, fstype: str) -> dict[str, dict]:
    """Mount ``image`` read-only through a loop device in a private mount namespace and list it."""
    mnt = image.parent.parent / f"mnt-{os.getpid()}-{time.monotonic_ns()}"
    mnt.mkdir()
    try:
        script = 'mount -t "$1" -o ro,loop "$2" "$3" && exec "$4" -c "$5" "$3"'
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                                 fstype, str(image), str(mnt), sys.executable, LISTING],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)
    finally:
        mnt.rmdir()


@pytest.mark.parametrize(("fstype", "compression"), [("erofs", None), ("erofs", "none"), ("squashfs", None)])
def test_layers_become_one_shifted_image(layers: dict[str, Path], tmp_path: Path, fstype: str,
                                         compression: str | None) -> None:
    image = rootfs_image(_overlay(layers), fstype=fstype, compression=compression, owner_shift=SHIFT,
                         cache_dir=tmp_path / "cache")
    assert not image.cached and image.fstype == fstype and image.owner_shift == SHIFT
    assert image.compression == (compression or {"erofs": "lz4", "squashfs": "zstd"}[fstype])
    assert image.size == image.path.stat().st_size
    from zonebuild.oci import sha256_file
    assert image.sha256 == sha256_file(image.path)
    tree = listing(image.path, fstype)
    # overlay semantics: the top layer wins, whiteouts remove, opaque directories hide what is below
    assert tree["/etc/passwd"]["data"].count("\n") == 2
    assert "/etc/removed" not in tree
    assert "/opaque/old" not in tree and tree["/opaque/new"]["data"] == "the only file in /opaque\n"
    assert "/fresh/ghost" not in tree and tree["/fresh/real"]["data"] == "here\n"
    # owners shifted into the zone's user-namespace range, everything else kept
    assert (tree["/"]["uid"], tree["/etc/passwd"]["uid"]) == (SHIFT, SHIFT)
    assert (tree["/home/user/notes"]["uid"], tree["/home/user/notes"]["gid"]) == (SHIFT + 1000, SHIFT + 1000)
    assert stat.S_IMODE(tree["/home/user/notes"]["mode"]) == 0o600
    assert stat.S_IMODE(tree["/bin/suid"]["mode"]) == 0o4755            # chown cleared it; idshift restored it
    assert tree["/bin/suid"]["ino"] == tree["/bin/suid-link"]["ino"]    # hard link kept
    assert tree["/bin/passwd-link"]["link"] == "../etc/passwd"
    assert stat.S_ISFIFO(tree["/fifo"]["mode"])
    assert stat.S_ISCHR(tree["/null"]["mode"]) and tree["/null"]["rdev"] == os.makedev(1, 3)
    assert stat.S_IMODE(tree["/tmp"]["mode"]) == 0o1777
    assert tree["/home/user/notes"]["mtime"] == MTIME                   # per-file mtimes kept
    capability = bytes.fromhex(tree["/bin/ping"]["cap"])                # v3, root = the shifted root
    assert struct.unpack("<IIIIII", capability)[0] >> 24 == 3 and struct.unpack("<IIIIII", capability)[5] == SHIFT
    assert not any("overlay" in json.dumps(row) for row in tree.values())
    # what the zone config pins
    entry = image.disk_entry("root0", "/dev/vdc")
    assert entry == {"name": "root0", "role": "root", "device": "/dev/vdc", "sha256": image.sha256,
                     "size": image.size, "fstype": fstype, "owner_shift": SHIFT}
    from zoneinit.config.parser import parse_zone_config
    parse_zone_config({"version": 1, "name": "pod", "disks": [entry],
                       "containers": [{"name": "c", "image": "root0", "args": ["/bin/sh"]}]})


def test_second_pod_pays_nothing_and_identity_changes_the_key(layers: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = rootfs_image(_overlay(layers), owner_shift=SHIFT, cache_dir=cache)
    started = time.monotonic()
    second = rootfs_image(_overlay(layers), owner_shift=SHIFT, cache_dir=cache)
    hit_seconds = time.monotonic() - started
    assert second.cached and second.path == first.path and second.sha256 == first.sha256
    assert hit_seconds < 0.5, f"a cache hit took {hit_seconds:.2f} s"
    unshifted = rootfs_image(_overlay(layers), owner_shift=0, cache_dir=cache)
    assert not unshifted.cached and unshifted.key != first.key
    assert listing(unshifted.path, "erofs")["/home/user/notes"]["uid"] == 1000
    # the same ids over a different snapshot directory (containerd state wiped and rebuilt): a new key
    chain = snapshot_chain(_overlay(layers))
    before = cache_key(chain, "erofs", SHIFT)
    os.rename(layers["base"], layers["base"].with_name("fs.old"))
    layers["base"].mkdir()
    subprocess.run(["cp", "-a", f"{layers['base'].with_name('fs.old')}/.", str(layers["base"])], check=True)
    assert cache_key(snapshot_chain(_overlay(layers)), "erofs", SHIFT) != before


def test_reproducible(layers: dict[str, Path], tmp_path: Path) -> None:
    one = rootfs_image(_overlay(layers), cache_dir=tmp_path / "a")
    two = rootfs_image(_overlay(layers), cache_dir=tmp_path / "b")
    assert one.sha256 == two.sha256 and one.size == two.size


def test_concurrent_builders_share_one_build(layers: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    code = ("import json, sys; from host.pod.rootfs import rootfs_image; "
            "r = rootfs_image(json.loads(sys.argv[1]), cache_dir=__import__('pathlib').Path(sys.argv[2])); "
            "print(json.dumps([r.cached, r.sha256, str(r.path)]))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    procs = [subprocess.Popen([sys.executable, "-c", code, json.dumps(_overlay(layers)), str(cache)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(3)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(cached for cached, _, _ in results) == [False, True, True]   # one build, two waited
    assert len({(sha, path) for _, sha, path in results}) == 1
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []  # no scratch left


def test_single_layer_view(layers: dict[str, Path], tmp_path: Path) -> None:
    """A read-only bind of one committed snapshot; a stray whiteout in it is not content."""
    os.mknod(layers["middle"] / "stray", stat.S_IFCHR, os.makedev(0, 0))
    mounts = [Mount("bind", str(layers["middle"]), ("rbind", "ro"))]
    image = rootfs_image(mounts, cache_dir=tmp_path / "cache")
    tree = listing(image.path, "erofs")
    assert sorted(tree) == ["/", "/etc", "/fresh", "/fresh/real", "/opaque", "/opaque/new"]


def test_many_layers_use_relative_lowerdirs(tmp_path: Path) -> None:
    root = tmp_path / ("x" * 60) / "snapshots"
    lowers = []
    for number in range(1, 81):
        fs = root / str(number) / "fs"
        _file(fs / f"layer{number}", str(number))
        lowers.append(str(fs))
    mounts = [{"type": "overlay", "source": "overlay", "options": ["lowerdir=" + ":".join(reversed(lowers))]}]
    assert len(mounts[0]["options"][0]) > 3800
    tree = listing(rootfs_image(mounts, cache_dir=tmp_path / "cache").path, "erofs")
    assert len([name for name in tree if name.startswith("/layer")]) == 80


def test_bad_input_is_named(layers: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (layers["upper"] / "written-before-start").write_text("x")
    with pytest.raises(RootfsError, match=r"upperdir .*/snapshots/4/fs is not empty \(written-before-start"):
        rootfs_image(_overlay(layers), cache_dir=cache)
    (layers["upper"] / "written-before-start").unlink()
    with pytest.raises(RootfsError, match="rootfs mount type 'ext4' from /dev/dm-3"):
        rootfs_image([Mount("ext4", "/dev/dm-3", ("rw",))], cache_dir=cache)
    with pytest.raises(RootfsError, match="2 rootfs mounts"):
        rootfs_image(_overlay(layers) * 2, cache_dir=cache)
    with pytest.raises(RootfsError, match="no rootfs mounts"):
        rootfs_image([], cache_dir=cache)
    with pytest.raises(RootfsError, match=r"lowerdir /nonexistent/fs: no such directory"):
        rootfs_image([Mount("overlay", "overlay", ("lowerdir=/nonexistent/fs",))], cache_dir=cache)
    with pytest.raises(RootfsError, match="option 'bogus=1' is not understood"):
        rootfs_image([Mount("overlay", "overlay", (f"lowerdir={layers['base']}", "bogus=1"))], cache_dir=cache)
    with pytest.raises(RootfsError, match="needs a 'type' and a 'source'"):
        rootfs_image([{"options": []}], cache_dir=cache)
    with pytest.raises(RootfsError, match="erofs compression 'zstd': choose lz4, none, lz4hc"):
        rootfs_image(_overlay(layers), compression="zstd", cache_dir=cache)
    with pytest.raises(RootfsError, match="image type 'ext4'"):
        rootfs_image(_overlay(layers), fstype="ext4", cache_dir=cache)
    with pytest.raises(RootfsError, match="owner shift 1000"):
        rootfs_image(_overlay(layers), owner_shift=1000, cache_dir=cache)
    _file(layers["top"] / "etc/outside", "x", owner=(70000, 0))
    with pytest.raises(RootfsError, match=r"shift the owners") as caught:
        rootfs_image(_overlay(layers), cache_dir=cache)
    from styrolite.errors import describe
    assert "etc/outside: uid 70000 is outside the container's id range" in describe(caught.value)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []   # nothing half-built


def test_a_writable_bind_without_layers(tmp_path: Path) -> None:
    empty = tmp_path / "snapshots" / "9" / "fs"
    empty.mkdir(parents=True)
    image = rootfs_image([Mount("bind", str(empty), ("rbind", "rw"))], cache_dir=tmp_path / "cache")
    assert sorted(listing(image.path, "erofs")) == ["/"]


def test_prune_keeps_the_recently_used(layers: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    old = rootfs_image(_overlay(layers), owner_shift=0, cache_dir=cache)
    os.utime(old.path.parent, (1, 1))
    new = rootfs_image(_overlay(layers), cache_dir=cache)
    assert prune_cache(cache, keep_bytes=new.size + 4096) == [old.key]
    assert new.path.exists() and not old.path.exists()
    assert isinstance(rootfs_image(_overlay(layers), cache_dir=cache), RootfsImage)
