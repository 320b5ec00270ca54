"""A minimal Xen dom0, built from Debian packages, to run PV zones inside QEMU (the PV boot test, issue 5).

What it is made of (Debian packages through zonebuild.debs: downloaded once, each .deb unpacked once, keyed by
its sha256):

* ``xen-hypervisor-4.17-amd64``: ``/boot/xen-4.17-amd64.gz`` gunzipped (QEMU's multiboot loader wants the ELF);
* the generic ``linux-image-amd64`` kernel (the cloud flavour has no dom0 support) and the few modules dom0
  needs (``DOM0_MODULES`` + their ``depends``, insmod'ed in order by /init);
* ``xen-utils-4.17`` (xl, xenstored, xenconsoled, xen-init-dom0, libxl-save-helper), ``xenstore-utils``,
  ``libxenmisc4.17`` and the libxen* libraries, glibc, libgcc-s1 (xl aborts without libgcc_s.so.1),
  ``busybox-static`` (the shell, mount, insmod, reboot);
* our host side: a PyInstaller onedir bundle of a driver script (``--driver``, e.g. qemu-tests/pv/dom0_zone.py)
  importing ``host`` and ``idm``: Python, cffi, msgpack and only the modules it imports (~15 MB),
  cached by the digest of its sources;
* a payload directory copied to ``/zone`` (the zone's kernel, initrd, disks, plan).

The initramfs is an uncompressed newc cpio: under TCG, decompressing costs more than copying. /init (busybox
sh) mounts the pseudo file systems, loads the modules, mounts xenfs, starts xenstored, xen-init-dom0 and
xenconsoled, runs ``/opt/zonehost/<driver> /zone/plan.json``, then ``reboot -f`` (with QEMU's -no-reboot
and without Xen's ``noreboot``, that ends QEMU).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .buildlog import logger
from .cachedir import cache_dir
from .cpio import CpioArchive
from .debs import download, unpacked
from .digests import sha256_hex
from .errors import BuildError
from .kernel_image import download_package

log = logger("dom0")

XEN_VERSION = "4.17"
XEN_BIN = f"usr/lib/xen-{XEN_VERSION}/bin"
LIBRARY_PACKAGES = (
    "libc6", "libgcc-s1", "libxenmisc4.17", "libxencall1", "libxendevicemodel1", "libxenevtchn1",
    "libxenforeignmemory1", "libxengnttab1", "libxenhypfs1", "libxenstore4", "libxentoollog1", "libxentoolcore1",
    "libyajl2", "libzstd1", "zlib1g", "liblzma5", "libuuid1", "libext2fs2", "libcom-err2", "libncurses6",
    "libtinfo6",
)
XEN_TOOLS = ("xl", "xenstored", "xenconsoled", "xen-init-dom0", "libxl-save-helper", "xenconsole",
             "vchan-socket-proxy")
DOM0_MODULES = ("xen-privcmd", "xenfs", "xen-evtchn", "xen-gntdev", "xen-gntalloc", "xen-blkback", "loop")
LIBRARY_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64")
SKIP_LIBRARY_PARTS = ("gconv", "audit", "perl")
XEN_CMDLINE = "console=com1 dom0_mem=512M,max:512M"
DOM0_CMDLINE = "console=hvc0 earlyprintk=xen panic=-1"

XL_CONF = 'autoballoon="off"\n'
# libxl runs this for every backendtype=phy disk (Debian's "block" needs bash): publish the block device's
# major:minor for blkback. host.backends.xen hands xl block devices only (it attaches regular files to loop devices).
BLOCK_SCRIPT = """#!/bin/sh
[ "$1" = add ] || exit 0
dev=$(xenstore-read "$XENBUS_PATH/params")
xenstore-write "$XENBUS_PATH/physical-device" "$(stat -L -c %t:%T "$dev")" \\
    "$XENBUS_PATH/physical-device-path" "$dev" "$XENBUS_PATH/hotplug-status" connected
"""
INIT = """#!/bin/sh
export PATH=/{xen_bin}:/usr/bin:/usr/sbin:/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mkdir -p /run/xen /run/xenstored /var/lib/xen /var/lib/xenstored /var/log/xen/console /tmp
echo "PV-STEP dom0-up \\"$(cat /proc/uptime)\\""
while read -r module; do
    insmod "/lib/modules/{version}/$module" || echo "PV-STEP dom0-failed \\"insmod $module\\""
done < /etc/dom0-modules
mount -t xenfs xenfs /proc/xen
xenstored --pid-file /run/xenstored.pid
xen-init-dom0 >/dev/null
xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
echo "PV-STEP dom0-ready \\"$(cat /proc/uptime)\\""
/opt/zonehost/{driver} /zone/plan.json
echo "PV-STEP dom0-done \\"driver exit $?\\""
reboot -f
"""


class Dom0Error(BuildError):
    """The dom0 image cannot be built."""


def dom0_cache() -> Path:
    return cache_dir() / "dom0"


def _add_path(archive: CpioArchive, root: Path, relative: str) -> None:
    path = root / relative
    if path.is_symlink():
        archive.add_symlink(relative, os.readlink(path))
    elif path.is_dir():
        archive.add_dir(relative)
    elif path.is_file():
        archive.add_file(relative, source=path, mode=path.stat().st_mode & 0o7777)


def _add_tree(archive: CpioArchive, root: Path, subdir: str, skip: tuple[str, ...] = ()) -> None:
    base = root / subdir
    if not base.exists():
        return
    for directory, dirs, files in os.walk(base):
        rel_dir = Path(directory).relative_to(root)
        dirs[:] = [d for d in dirs if d not in skip and not (Path(directory) / d).is_symlink()]
        for name in files + [d for d in os.listdir(directory) if (Path(directory) / d).is_symlink()
                             and (Path(directory) / d).is_dir()]:
            if name not in skip:
                _add_path(archive, root, str(rel_dir / name))


@dataclass(frozen=True)
class Dom0Kernel:
    vmlinuz: Path
    version: str
    modules: list[tuple[str, Path]]   # (path under /lib/modules/<version>/, file), load order


def module_order(modules_dir: Path, wanted: tuple[str, ...] = DOM0_MODULES) -> list[str]:
    """Paths (relative to modules_dir) of the wanted modules and their ``depends``, dependencies first."""
    by_name: dict[str, str] = {}
    for path in modules_dir.rglob("*.ko*"):
        by_name[path.name.split(".ko")[0].replace("-", "_")] = str(path.relative_to(modules_dir))
    order: list[str] = []

    def visit(name: str) -> None:
        path = by_name.get(name.replace("-", "_"))
        if path is None:
            return   # built in
        if path in order:
            return
        depends = subprocess.run(["modinfo", "-F", "depends", str(modules_dir / path)], capture_output=True,
                                 text=True, check=True).stdout.strip()
        for dep in filter(None, depends.split(",")):
            visit(dep)
        order.append(path)

    for name in wanted:
        visit(name)
    return order


def dom0_kernel() -> Dom0Kernel:
    tree = unpacked(download_package("linux-image-amd64"))
    vmlinuz = sorted((tree / "boot").glob("vmlinuz-*"))
    if not vmlinuz:
        raise Dom0Error("linux-image-amd64: no /boot/vmlinuz-*")
    version = vmlinuz[-1].name.removeprefix("vmlinuz-")
    modules_dir = tree / "lib" / "modules" / version
    order = module_order(modules_dir)
    return Dom0Kernel(vmlinuz[-1], version, [(p, modules_dir / p) for p in order])


def hypervisor() -> Path:
    """xen-4.17-amd64 (gunzipped), cached by the .deb's content."""
    deb = download(f"xen-hypervisor-{XEN_VERSION}-amd64")
    out = dom0_cache() / f"xen-{sha256_hex(deb)[:16]}"
    if not out.exists():
        gz = sorted((unpacked(deb) / "boot").glob("xen-*.gz"))
        if not gz:
            raise Dom0Error(f"{deb.name}: no /boot/xen-*.gz")
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(gzip.decompress(gz[-1].read_bytes()))
        os.replace(tmp, out)
    return out


def host_bundle(driver: Path, repo: Path) -> Path:
    """PyInstaller onedir of ``driver`` (with ``repo`` on its path), cached by the digest of our sources."""
    digest = hashlib.sha256(driver.read_bytes())
    for package in ("host", "idm", "zoneinit", "styrolite"):
        for source in sorted((repo / package).rglob("*.py")):
            digest.update(str(source.relative_to(repo)).encode() + b"\0" + source.read_bytes())
    out = dom0_cache() / "bundle" / digest.hexdigest()[:16]
    if not (out / driver.stem).exists():
        work = Path(tempfile.mkdtemp(prefix="pyi-"))
        try:
            log(f"pyinstaller {driver.name} (onedir)")
            result = subprocess.run(
                [sys.executable, "-m", "PyInstaller", "--onedir", "--noconfirm", "--log-level", "WARN",
                 "--name", driver.stem, "--paths", str(repo), "--distpath", str(work / "dist"),
                 "--workpath", str(work / "build"), "--specpath", str(work), str(driver)],
                capture_output=True, text=True)
            if result.returncode != 0:
                raise Dom0Error(f"pyinstaller {driver.name} failed: {result.stderr.strip()[-500:]}")
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(out, ignore_errors=True)
            shutil.move(str(work / "dist" / driver.stem), out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        # ~40 MB per source change: keep this bundle and the previous one
        for old in sorted(out.parent.iterdir(), key=lambda d: d.stat().st_mtime, reverse=True)[2:]:
            shutil.rmtree(old, ignore_errors=True)
    return out


@dataclass(frozen=True)
class Dom0Image:
    xen: Path          # QEMU -kernel
    vmlinuz: Path      # first multiboot module
    initrd: Path       # second multiboot module (uncompressed cpio)

    def qemu_args(self, memory_mib: int = 1536) -> list[str]:
        return ["-accel", "tcg", "-m", str(memory_mib), "-nographic", "-no-reboot", "-kernel", str(self.xen),
                "-append", XEN_CMDLINE,
                "-initrd", f"{self.vmlinuz} {DOM0_CMDLINE},{self.initrd}"]


def base_archive(kernel: Dom0Kernel, bundle: Path, driver_name: str) -> CpioArchive:
    archive = CpioArchive()
    for name in ("proc", "sys", "dev", "run", "tmp", "etc", "var/lib", "var/log", "zone", "root"):
        archive.add_dir(name)
    archive.add_symlink("var/run", "/run")
    for package in LIBRARY_PACKAGES:
        root = unpacked(download(package))
        for subdir in LIBRARY_DIRS:
            _add_tree(archive, root, subdir, SKIP_LIBRARY_PARTS)
    utils = unpacked(download(f"xen-utils-{XEN_VERSION}"))
    for tool in XEN_TOOLS:
        _add_path(archive, utils, f"{XEN_BIN}/{tool}")
    _add_tree(archive, unpacked(download("xenstore-utils")), "usr/bin")
    busybox_root = unpacked(download("busybox-static"))
    busybox = busybox_root / "bin" / "busybox"
    archive.add_file("bin/busybox", source=busybox, mode=0o755)
    applets = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True).stdout
    for applet in applets.split():
        if not applet.endswith("/busybox") and applet.split("/")[-1] not in ("xl",):
            archive.add_symlink(applet, "/bin/busybox")
    for path, source in kernel.modules:
        archive.add_file(f"lib/modules/{kernel.version}/{path}", source=source)
    archive.add_file("etc/dom0-modules", "".join(f"{p}\n" for p, _ in kernel.modules).encode())
    archive.add_file("etc/xen/xl.conf", XL_CONF.encode())
    archive.add_file("etc/xen/scripts/block", BLOCK_SCRIPT.encode(), mode=0o755)
    archive.add_file("init", INIT.format(xen_bin=XEN_BIN, version=kernel.version, driver=driver_name).encode(),
                     mode=0o755)
    archive.add_tree(bundle, "opt/zonehost")
    return archive


def build_dom0(payload: Path, driver: Path, out_dir: Path, repo: Path | None = None) -> Dom0Image:
    """The dom0 image booting ``driver`` (bundled) with ``payload``'s files under /zone."""
    repo = repo or Path(__file__).resolve().parent.parent
    kernel = dom0_kernel()
    archive = base_archive(kernel, host_bundle(driver, repo), driver.stem)
    archive.add_tree(payload, "zone")
    out_dir.mkdir(parents=True, exist_ok=True)
    initrd = out_dir / "dom0.cpio"
    archive.write(initrd, compression="none")
    return Dom0Image(hypervisor(), kernel.vmlinuz, initrd)
