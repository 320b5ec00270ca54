"""System extension images: the manifest format and its checks, writing and reading an image, the disk (cached,
reproducible), the kernel release check, the addons/fs-extra split, and the two real extensions built from
Debian packages, whose tools run with nothing of the build host (a private mount namespace, an empty env)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from styrolite.errors import describe
from zonebuild.extension import (
    ExtensionError,
    ExtensionManifest,
    check_fits,
    extension_disk,
    parse_manifest,
    unpack_extension,
    write_extension_image,
)
from zonebuild.kernel_image import extension_only, module_closure

RELEASE = "6.1.0-57-cloud-amd64"
VALID = {"schemaVersion": 1, "name": "fs-extra", "version": RELEASE, "kernel": {"releases": [RELEASE]},
         "provides": {"modules": ["zfakefs"], "tools": ["mkfs.zfake"], "firmware": False}, "load": ["zfakefs"],
         "tools": {"scope": "zone"}, "sources": {"linux-image": "6.1"}}


def test_a_manifest_round_trips() -> None:
    manifest = parse_manifest(VALID)
    assert manifest.kernel_releases == (RELEASE,) and manifest.load == ("zfakefs",)
    assert parse_manifest(manifest.to_json()) == manifest
    assert manifest.fits(RELEASE) and not manifest.fits("5.10.0-bogus")
    assert ExtensionManifest("tools-only", "1", tools=("x",)).fits("anything")


@pytest.mark.parametrize(("change", "reason"), [
    ({"schemaVersion": 2}, "schemaVersion: 2, this host reads 1"),
    ({"name": "Fs Extra"}, "name: 'Fs Extra' is not an extension name"),
    ({"kernel": {"releases": []}}, "kernel.releases: the extension provides modules"),
    ({"load": ["other"]}, "load: other not among provides.modules"),
    ({"tools": {"scope": "containers"}}, "never to containers"),
    ({"provides": {"modules": ["a b"]}}, "provides.modules[0]: 'a b' is not a module name"),
    ({"provides": {"modules": ["zfakefs"], "extra": 1}}, "provides.extra: unknown field"),
    ({"colour": "blue"}, "colour: unknown field"),
])
def test_bad_manifests_name_the_field(change: dict, reason: str) -> None:
    with pytest.raises(ExtensionError) as info:
        parse_manifest({**VALID, **change})
    assert reason in str(info.value)


def _tree(root: Path, release: str = RELEASE) -> Path:
    modules = root / "modules" / release / "kernel" / "fs"
    modules.mkdir(parents=True)
    (modules / "zfakefs.ko").write_bytes(b"\0module")
    (root / "modules" / release / "modules.dep").write_text("kernel/fs/zfakefs.ko:\n")
    (root / "bin").mkdir()
    (root / "bin" / "mkfs.zfake").write_text("#!/bin/sh\necho made\n")
    (root / "bin" / "mkfs.zfake").chmod(0o755)
    return root


def test_write_read_and_make_a_disk(tmp_path: Path) -> None:
    manifest = parse_manifest(VALID)
    layout = write_extension_image(_tree(tmp_path / "tree"), manifest, tmp_path / "layout", tmp_path / "w1")
    again = write_extension_image(_tree(tmp_path / "tree2"), manifest, tmp_path / "layout2", tmp_path / "w2")
    assert (layout / "index.json").read_bytes() == (again / "index.json").read_bytes()   # reproducible
    read, tree, digest = unpack_extension(layout, tmp_path / "unpacked")
    assert read == manifest and (tree / "bin" / "mkfs.zfake").is_file()
    assert json.loads((tree / "manifest.json").read_text())["name"] == "fs-extra"
    disk = extension_disk(layout, tmp_path / "disks")
    assert disk.digest == digest and disk.manifest == manifest
    listing = subprocess.run(["unsquashfs", "-lls", str(disk.path)], capture_output=True, text=True,
                             check=True).stdout
    assert "squashfs-root/manifest.json" in listing and f"modules/{RELEASE}/kernel/fs/zfakefs.ko" in listing
    assert "root/root" in listing and "squashfs-root/extension" not in listing
    first = disk.path.read_bytes()
    disk.path.unlink()
    assert extension_disk(layout, tmp_path / "disks").path.read_bytes() == first   # rebuilt: the same bytes


def test_an_image_that_does_not_match_its_manifest_is_refused(tmp_path: Path) -> None:
    manifest = parse_manifest(VALID)
    tree = _tree(tmp_path / "tree")
    (tree / "bin" / "mkfs.zfake").unlink()
    with pytest.raises(ExtensionError, match=r"tool .mkfs\.zfake. is not an executable in bin/"):
        write_extension_image(tree, manifest, tmp_path / "layout", tmp_path / "w")
    other = _tree(tmp_path / "other", release="5.10.0-bogus")
    with pytest.raises(ExtensionError, match=f"no modules/{RELEASE}/modules.dep"):
        write_extension_image(other, manifest, tmp_path / "layout", tmp_path / "w2")


def test_a_tampered_or_plain_image_is_refused(tmp_path: Path) -> None:
    layout = write_extension_image(_tree(tmp_path / "tree"), parse_manifest(VALID), tmp_path / "layout",
                                   tmp_path / "w")
    biggest = max((layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    biggest.write_bytes(bytes(data))
    with pytest.raises(ExtensionError) as info:
        extension_disk(layout, tmp_path / "disks")
    assert "digest mismatch" in describe(info.value)
    from zonebuild.busybox_image import cached_busybox_image

    with pytest.raises(ExtensionError, match=r"no /extension/manifest\.json"):
        extension_disk(cached_busybox_image(), tmp_path / "disks")


def test_the_kernel_release_check() -> None:
    manifest = parse_manifest({**VALID, "kernel": {"releases": ["5.10.0-bogus"]}})
    with pytest.raises(ExtensionError, match=f"is built for kernel 5.10.0-bogus; the zone's kernel is {RELEASE}"):
        check_fits(manifest, RELEASE, "registry/fs-extra:1")
    check_fits(parse_manifest(VALID), RELEASE, "ok")


def test_addons_leave_out_only_what_nothing_else_needs() -> None:
    deps = {"kernel/fs/btrfs/btrfs.ko": ["kernel/lib/libcrc32c.ko", "kernel/crypto/xor.ko"],
            "kernel/lib/libcrc32c.ko": [], "kernel/crypto/xor.ko": [],
            "kernel/fs/nfs/nfs.ko": ["kernel/net/sunrpc/sunrpc.ko"], "kernel/net/sunrpc/sunrpc.ko": [],
            "kernel/fs/xfs/xfs.ko": [], "kernel/drivers/md/raid456.ko": ["kernel/crypto/xor.ko"],
            "kernel/fs/udf/udf.ko": [], "kernel/drivers/needs_udf.ko": ["kernel/fs/udf/udf.ko"]}
    left_out = extension_only(deps)
    assert left_out == {"kernel/fs/btrfs/btrfs.ko", "kernel/fs/nfs/nfs.ko", "kernel/fs/xfs/xfs.ko"}
    assert module_closure(deps, left_out) == sorted(
        {*left_out, "kernel/lib/libcrc32c.ko", "kernel/crypto/xor.ko", "kernel/net/sunrpc/sunrpc.ko"})


# --- the real ones, from Debian packages ----------------------------------------------------------------------

def _unpacked(name: str, tmp_path: Path) -> tuple[ExtensionManifest, Path]:
    from zonebuild.sysext import cached_extension

    try:
        layout = cached_extension(name)
    except Exception as e:  # no apt index or no network here
        if "apt-get" in describe(e):
            pytest.skip(f"{name}: packages unavailable: {describe(e)}")
        raise
    manifest, tree, _digest = unpack_extension(layout, tmp_path / name)
    return manifest, tree


def _in_private_mount(tree: Path, name: str, script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with the extension at /run/zone/extensions/<name>, in a mount namespace of its own (a
    tmpfs over /run: the host's /run is untouched) and with an empty environment."""
    mount = f"/run/zone/extensions/{name}"
    setup = (f"mount --make-rprivate / && mount -t tmpfs none /run && mkdir -p {mount} && "
             f"mount --bind {tree} {mount} && cd / && exec env -i sh -c '{script}'")
    return subprocess.run(["unshare", "-m", "sh", "-c", setup], capture_output=True, text=True, timeout=120)


@pytest.mark.root
@pytest.mark.slow
def test_debug_tools_run_with_their_own_loader_and_libraries(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    manifest, tree = _unpacked("debug-tools", tmp_path)
    assert {"strace", "ip", "ss", "tc", "tcpdump", "busybox", "sh"} <= set(manifest.tools)
    assert not manifest.kernel_releases and manifest.tool_scope == "zone"
    interp = subprocess.run(["readelf", "-l", str(tree / "bin" / "strace")], capture_output=True, text=True).stdout
    assert "[Requesting program interpreter: /run/zone/extensions/debug-tools/lib/ld-linux-x86-64.so.2]" in interp
    assert (tree / "lib" / "libc.so.6").is_file() and (tree / "lib" / "libpcap.so.0.8").is_file()
    base = "/run/zone/extensions/debug-tools/bin"
    done = _in_private_mount(tree, "debug-tools",
                             f"{base}/strace -f -e trace=uname {base}/uname -s && {base}/ip -br link show lo && "
                             f"{base}/tcpdump --version && {base}/ss -H -l -x | {base}/head -1 >/dev/null")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Linux\n") and "lo " in done.stdout and "tcpdump version" in done.stdout
    assert 'uname({sysname="Linux"' in done.stderr


@pytest.mark.root
@pytest.mark.slow
def test_fs_extra_carries_what_the_addons_leave_out(tmp_path: Path) -> None:
    manifest, tree = _unpacked("fs-extra", tmp_path)
    from zonebuild.kernel_image import cached_kernel_image, unpack_kernel_image

    kernel = unpack_kernel_image(cached_kernel_image(), tmp_path / "kernel")
    release = kernel.metadata["KERNEL_VERSION"]
    assert manifest.kernel_releases == (release,)
    assert {"btrfs", "xfs", "exfat", "nfs", "nfsv4"} <= set(manifest.modules)
    dep = (tree / "modules" / release / "modules.dep").read_text()
    btrfs_line = next(line for line in dep.splitlines() if line.startswith("kernel/fs/btrfs/btrfs.ko"))
    for needed in btrfs_line.split(":", 1)[1].split():   # its dependencies travel with it
        assert (tree / "modules" / release / needed).is_file()
    addons = subprocess.run(["unsquashfs", "-l", str(kernel.addons)], capture_output=True, text=True,
                            check=True).stdout
    assert "btrfs.ko" not in addons and "xfs.ko" not in addons        # not in the addons image
    assert "/kernel/fs/squashfs/squashfs.ko" in addons and "/kernel/fs/fat/vfat.ko" in addons
    assert "libcrc32c.ko" in addons                                     # still needed by others there
    done = _in_private_mount(tree, "fs-extra", "/run/zone/extensions/fs-extra/bin/mkfs.btrfs --version")
    assert done.returncode == 0 and "btrfs-progs" in done.stdout, done.stderr
