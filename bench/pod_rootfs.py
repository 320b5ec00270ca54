"""Benchmark (not a test): how a container's rootfs should reach a zone -- a hot-plugged erofs or squashfs
image (host.pod.rootfs + host.backends.hotplug) or QEMU's built-in virtio-9p share of the snapshot directory.

Workload: a three-layer overlayfs snapshot laid out as containerd's overlayfs snapshotter does, from this
machine's files: Python's stdlib (layer 1), dist-packages + Perl's library (layer 2), and a top layer with a
32 MiB file, whiteouts and an opaque directory (~150 MB, ~6k files; ``--small`` for ~60 MB).

Host side, median of ``--rounds`` (alternating variants so all see the same load):
  merge + shift   overlay mount + ``cp -a`` + zonebuild.idshift (shared by every image variant)
  mkfs            per variant, and the image size
  loop mount      mount through a loop device + first file read, on the host
  pipeline        host.pod.rootfs.rootfs_image cold (cache miss) and warm (cache hit: the second pod)
Guest side, one QEMU TCG guest per kernel (the zone's cloud kernel; Debian's generic kernel, the only one
with 9p modules), per variant: time to first file access (block: QMP attach -> device found by serial ->
sha256 verified as PID 1 does (OpenSSL) -> mounted -> first read; 9p: mount -> first read; the share must exist at
boot, QEMU 7.2 has no fsdev hot-add), then with cold caches: read every file, and a 32 MiB sequential read.

Ratios are against erofs (uncompressed), the default, measured in the same run.

    python3 bench/pod_rootfs.py [--rounds 3] [--small] [--no-guest] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "host" / "pod"))

from podtest_guest import Guest, build_initrd, zone_kernel  # noqa: E402

from host.backends.hotplug import qemu_attach_disk, qemu_detach_disk  # noqa: E402
from host.pod.rootfs import FIXED_UUID, merge_layers, newest_mtime, rootfs_image, shift_owners  # noqa: E402
from host.pod.snapshot import snapshot_chain  # noqa: E402
from host.zonebuild_import import ensure_zonebuild  # noqa: E402

SHIFT = 65536
BLOB_MIB = 32
OPENSSL = Path("/usr/bin/openssl")


def erofs(extra: list[str]) -> Callable[[Path, Path], list[str]]:
    return lambda tree, out: ["mkfs.erofs", *extra, "--preserve-mtime", f"-U{FIXED_UUID}", "--quiet", str(out),
                              str(tree)]


def squashfs(extra: list[str]) -> Callable[[Path, Path], list[str]]:
    return lambda tree, out: ["mksquashfs", str(tree), str(out), "-noappend", *extra, "-mkfs-time", "0", "-quiet",
                              "-no-progress"]


VARIANTS: dict[str, tuple[str, Callable[[Path, Path], list[str]]]] = {
    "erofs": ("erofs", erofs([])),                       # the default (baseline)
    "erofs-lz4": ("erofs", erofs(["-zlz4"])),
    "erofs-lz4hc": ("erofs", erofs(["-zlz4hc"])),
    "squashfs-zstd": ("squashfs", squashfs(["-comp", "zstd"])),   # zonebuild.rootimage's choice
    "squashfs-lz4": ("squashfs", squashfs(["-comp", "lz4"])),
    "squashfs-none": ("squashfs", squashfs(["-noI", "-noD", "-noF", "-noX"])),
}
GUEST_VARIANTS = ("erofs", "erofs-lz4", "squashfs-zstd", "squashfs-lz4")   # lz4hc builds too slowly to matter
GENERIC_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "erofs", "squashfs", "9pnet_virtio", "9p")


def log(message: str) -> None:
    print(f"[pod_rootfs] {message}", file=sys.stderr, flush=True)


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


# --- the workload ---------------------------------------------------------------------------------------------

def copy_into(source: str, layer: Path) -> None:
    target = layer / source.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", source, str(target)], check=True)


def make_layers(root: Path, small: bool) -> list[dict[str, Any]]:
    snapshots = root / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
    layers = [snapshots / str(n) / "fs" for n in (1, 2, 3, 4)]
    for layer in layers:
        layer.mkdir(parents=True)
    (snapshots / "4" / "work").mkdir()
    copy_into("/usr/lib/python3.11", layers[0])
    if not small:
        copy_into("/usr/lib/python3/dist-packages", layers[1])
        copy_into("/usr/share/perl", layers[1])
    blob = layers[2] / "usr/share/blob.bin"
    blob.parent.mkdir(parents=True, exist_ok=True)
    with open(blob, "wb") as f:
        f.write(os.urandom(BLOB_MIB << 20))
    stdlib = layers[2] / "usr/lib/python3.11"
    stdlib.mkdir(parents=True, exist_ok=True)
    for name in ("unittest", "idlelib", "turtledemo"):   # deleted in the top layer
        if (layers[0] / "usr/lib/python3.11" / name).exists():
            os.mknod(stdlib / name, 0o600 | 0o020000, 0)
    (stdlib / "email").mkdir()
    os.setxattr(stdlib / "email", "trusted.overlay.opaque", b"y")
    (stdlib / "email" / "README").write_text("replaced\n")
    lower = ":".join(str(layer) for layer in reversed(layers[:3]))
    return [{"type": "overlay", "source": "overlay",
             "options": [f"upperdir={layers[3]}", f"workdir={snapshots / '4' / 'work'}", f"lowerdir={lower}"]}]


def tree_stats(tree: Path) -> tuple[int, int]:
    files = size = 0
    for directory, _, names in os.walk(tree):
        for name in names:
            st = os.lstat(os.path.join(directory, name))
            files += 1
            size += st.st_size
    return files, size


# --- host side ------------------------------------------------------------------------------------------------

def build_variant(name: str, tree: Path, out: Path) -> float:
    command = VARIANTS[name][1](tree, out)
    env = {key: value for key, value in os.environ.items() if key != "SOURCE_DATE_EPOCH"}
    if VARIANTS[name][0] == "erofs":
        env["SOURCE_DATE_EPOCH"] = str(newest_mtime(tree) + 1)   # as host.pod.rootfs.make_image does
    out.unlink(missing_ok=True)
    seconds, _ = timed(lambda: subprocess.run(command, check=True, capture_output=True, env=env))
    return seconds


def loop_mount_first_read(image: Path, fstype: str, mnt: Path) -> float:
    script = ('s=$(date +%s%N); mount -t "$1" -o ro,loop "$2" "$3" && head -c 1 "$3/usr/lib/python3.11/os.py" '
              '>/dev/null && e=$(date +%s%N) && echo $((e - s))')
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", fstype,
                          str(image), str(mnt)], check=True, capture_output=True, text=True).stdout
    return int(out.strip()) / 1e9


def host_side(mounts: list[dict[str, Any]], work: Path, rounds: int) -> dict[str, Any]:
    chain = snapshot_chain(mounts)
    results: dict[str, Any] = {"merge_shift": [], "variants": {name: {"mkfs": [], "mount": []} for name in VARIANTS}}
    tree = work / "tree"
    for round_number in range(rounds):
        log(f"host round {round_number + 1}/{rounds}")
        shutil.rmtree(tree, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(dir=work))
        tree.mkdir()
        started = time.perf_counter()
        merge_layers(chain, tree, scratch)
        shift_owners(tree, SHIFT, chain)
        seconds = time.perf_counter() - started
        shutil.rmtree(scratch)
        results["merge_shift"].append(seconds)
        order = list(VARIANTS) if round_number % 2 == 0 else list(reversed(VARIANTS))
        for name in order:
            image = work / f"{name}.img"
            results["variants"][name]["mkfs"].append(build_variant(name, tree, image))
            results["variants"][name]["size"] = image.stat().st_size
            mnt = work / "mnt"
            mnt.mkdir(exist_ok=True)
            results["variants"][name]["mount"].append(loop_mount_first_read(image, VARIANTS[name][0], mnt))
    results["files"], results["bytes"] = tree_stats(tree)
    cache = work / "cache"
    cold, image = timed(lambda: rootfs_image(mounts, cache_dir=cache))
    warm, again = timed(lambda: rootfs_image(mounts, cache_dir=cache))
    assert again.cached and not image.cached
    results["pipeline"] = {"cold": cold, "warm": warm, "sha256": image.sha256, "size": image.size,
                           "image": f"{image.fstype}-{image.compression}"}
    return results


# --- guest side -----------------------------------------------------------------------------------------------

def resolve_modules(modules_dir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """The .ko files for ``wanted`` and their dependencies (modinfo), dependencies first. Soft dependencies
    are not followed: name them in ``wanted`` (erofs -> libcrc32c needs the crc32c algorithm first)."""
    files = {p.name.split(".ko")[0].replace("-", "_"): p for p in modules_dir.rglob("*.ko*")}
    ordered: list[Path] = []

    def visit(name: str) -> None:
        key = name.replace("-", "_")
        path = files.get(key)
        if path is None or path in ordered:
            return   # built in, or already there
        depends = subprocess.run(["modinfo", "-F", "depends", str(path)], capture_output=True, text=True).stdout
        for dependency in filter(None, depends.strip().split(",")):
            visit(dependency)
        ordered.append(path)

    for name in wanted:
        visit(name)
    return ordered


def generic_kernel(work: Path) -> tuple[Path, list[Path]]:
    ensure_zonebuild()
    from zonebuild.kernel_image import download_package, extract_deb

    tree = extract_deb(download_package("linux-image-amd64"), work / "generic")
    return tree.vmlinuz, resolve_modules(tree.modules, GENERIC_MODULES)


def first_access_block(guest: Guest, image: Path, fstype: str, name: str, size: int) -> dict[str, float]:
    times: dict[str, float] = {}
    serial = f"b-{name}"[:20]
    started = time.perf_counter()
    disk = qemu_attach_disk(guest.qmp, image, name=f"d{abs(hash(name)) % 10**6}", serial=serial)
    times["attach"] = time.perf_counter() - started
    device = guest.check(f"for i in $(seq 500); do for b in /sys/block/vd*; do [ \"$(cat $b/serial 2>/dev/null)\""
                         f" = {serial} ] && echo ${{b##*/}} && break 2; done; sleep 0.02; done").strip()
    times["found"] = time.perf_counter() - started
    # PID 1 hashes the first `size` bytes with OpenSSL's libcrypto (hashlib, 1 MiB reads, in a forked child):
    # the same code as the openssl CLI. The images are 4 KiB multiples, so the device is exactly `size` long.
    assert size % 4096 == 0, f"{name}: {size} bytes"
    device_bytes = int(guest.check(f"cat /sys/block/{device}/size")) * 512
    assert device_bytes == size, f"{name}: device {device_bytes} bytes, image {size}"
    guest.check(f"/usr/bin/openssl dgst -sha256 /dev/{device} >/dev/null", timeout=600)
    times["verified"] = time.perf_counter() - started
    guest.check(f"mount -t {fstype} -o ro /dev/{device} /mnt && head -c 1 /mnt/usr/lib/python3.11/os.py >/dev/null")
    times["first_read"] = time.perf_counter() - started
    times.update(read_all(guest))
    guest.check("umount /mnt")
    qemu_detach_disk(guest.qmp, disk)
    return times


def first_access_9p(guest: Guest, options: str) -> dict[str, float]:
    started = time.perf_counter()
    guest.check(f"mount -t 9p -o ro,trans=virtio,version=9p2000.L,{options} rootfs /mnt && "
                "head -c 1 /mnt/usr/lib/python3.11/os.py >/dev/null")
    times = {"first_read": time.perf_counter() - started}
    times.update(read_all(guest))
    guest.check("umount /mnt")
    return times


def read_all(guest: Guest) -> dict[str, float]:
    times = {}
    guest.check("sync; echo 3 > /proc/sys/vm/drop_caches")
    seconds, _ = timed(lambda: guest.check("find /mnt -type f -exec cat {} + >/dev/null", timeout=1200))
    times["read_all"] = seconds
    guest.check("sync; echo 3 > /proc/sys/vm/drop_caches")
    seconds, _ = timed(lambda: guest.check("dd if=/mnt/usr/share/blob.bin of=/dev/null bs=1M 2>/dev/null",
                                           timeout=600))
    times["sequential"] = seconds
    return times


def guest_side(kind: str, tree: Path, images: dict[str, Path], sizes: dict[str, int], work: Path) -> dict[str, Any]:
    log(f"guest: {kind} kernel")
    guestdir = work / f"guest-{kind}"
    guestdir.mkdir()
    if kind == "cloud":
        kernel = zone_kernel()
        image, initrd = kernel.image, build_initrd(guestdir / "initrd", boot_modules=kernel.boot_modules,
                                                   programs=[OPENSSL])
        extra: list[str] = []
    else:
        image, modules = generic_kernel(work)
        initrd = build_initrd(guestdir / "initrd", extra_modules=modules, programs=[OPENSSL])
        extra = ["-fsdev", f"local,id=fs0,path={tree},security_model=passthrough,readonly=on",
                 "-device", "virtio-9p-pci,fsdev=fs0,mount_tag=rootfs"]
    guest = Guest(image, initrd, guestdir, extra_args=extra, memory_mib=512)
    try:
        guest.boot()
        rtt, _ = timed(lambda: guest.check("true"))
        results: dict[str, Any] = {"console_rtt": rtt}
        for name in GUEST_VARIANTS:
            log(f"guest {kind}: {name}")
            results[name] = first_access_block(guest, images[name], VARIANTS[name][0], name, sizes[name])
        if kind == "generic":
            for label, options in (("9p", "msize=524288,cache=none"), ("9p-loose", "msize=524288,cache=loose")):
                log(f"guest {kind}: {label}")
                results[label] = first_access_9p(guest, options)
        return results
    finally:
        guest.stop()


# --- report ---------------------------------------------------------------------------------------------------

def report(host: dict[str, Any], guests: dict[str, dict[str, Any]]) -> None:
    median = statistics.median
    print(f"workload: {host['files']} files, {host['bytes'] / 1e6:.1f} MB merged; "
          f"merge + shift (overlay + cp -a + idshift) median {median(host['merge_shift']):.2f} s")
    base = host["variants"]["erofs"]
    print(f"\n{'variant':15} {'mkfs s':>8} {'x erofs':>8} {'size MB':>8} {'x erofs':>8} {'host mount+read ms':>19}")
    for name, row in host["variants"].items():
        print(f"{name:15} {median(row['mkfs']):8.2f} {median(row['mkfs']) / median(base['mkfs']):8.2f} "
              f"{row['size'] / 1e6:8.1f} {row['size'] / base['size']:8.2f} {median(row['mount']) * 1e3:19.1f}")
    pipeline = host["pipeline"]
    print(f"\nrootfs_image (default: {pipeline['image']}): cold {pipeline['cold']:.2f} s, warm (cache hit) "
          f"{pipeline['warm'] * 1e3:.1f} ms, image {pipeline['size'] / 1e6:.1f} MB")
    merge = median(host["merge_shift"])
    for kind, rows in guests.items():
        print(f"\nguest ({kind} kernel, TCG; console round trip {rows['console_rtt'] * 1e3:.0f} ms), seconds:")
        print(f"{'variant':15} {'attach':>6} {'found':>6} {'verify':>7} {'MB/s':>5} {'mount+read':>10} "
              f"{'1st access':>10} {'x erofs':>7} {'read all':>8} {'x erofs':>7} {'32MiB':>6} "
              f"{'1st pod':>7} {'next pod':>8}")
        base_row = rows["erofs"]
        for name, row in rows.items():
            if name == "console_rtt":
                continue
            verify = row.get("verified", 0) - row.get("found", 0)
            size = host["variants"].get(name, {}).get("size", 0)
            rate = f"{size / 1e6 / verify:5.1f}" if verify > 0 else f"{'-':>5}"
            build = merge + median(host["variants"][name]["mkfs"]) if name in host["variants"] else 0.0
            print(f"{name:15} {row.get('attach', 0):6.2f} {row.get('found', 0) - row.get('attach', 0):6.2f} "
                  f"{verify:7.2f} {rate} {row['first_read'] - row.get('verified', 0):10.2f} "
                  f"{row['first_read']:10.2f} {row['first_read'] / base_row['first_read']:7.2f} "
                  f"{row['read_all']:8.2f} {row['read_all'] / base_row['read_all']:7.2f} {row['sequential']:6.2f} "
                  f"{build + row['first_read']:7.2f} {row['first_read']:8.2f}")
    print("\n1st pod = merge+shift + mkfs + 1st access (a cache miss); next pod = 1st access (cache hit: "
          "the image exists). 9p needs no image, but serves the tree unshifted unless it is copied and shifted too.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="only Python's stdlib + the 32 MiB file")
    parser.add_argument("--no-guest", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("pod_rootfs: needs root (mounts, loop devices)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="pod-rootfs-bench-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        log("making the snapshot layers")
        mounts = make_layers(work / "containerd", args.small)
        host = host_side(mounts, work, args.rounds)
        guests: dict[str, dict[str, Any]] = {}
        if not args.no_guest:
            images = {name: work / f"{name}.img" for name in VARIANTS}
            sizes = {name: path.stat().st_size for name, path in images.items()}
            for kind in ("cloud", "generic"):
                guests[kind] = guest_side(kind, work / "tree", images, sizes, work)
        if args.json:
            print(json.dumps({"host": host, "guests": guests}, indent=1))
        else:
            report(host, guests)
    return 0


if __name__ == "__main__":
    sys.exit(main())
