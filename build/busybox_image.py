"""The built-in default app image: Debian's busybox-static as a proper OCI image layout, so no registry is needed.

Contents: /bin/busybox, one symlink per applet at the path ``busybox --list-full`` gives, /etc/passwd and
/etc/group, and empty /tmp /proc /sys /dev /root /home mount points. Config: Cmd ["sh"], a PATH. Built
reproducibly (sorted entries, fixed mtimes) and cached by the busybox binary's digest.

The binary comes from the busybox-static .deb (``apt-get download``, cached under .cache/debs) or, when apt is
unavailable, from the installed /bin/busybox if it is the static build.
Usage: ``python -m zonebuild.busybox_image --out DIR``
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from styrolite.errors import StyroliteError, describe
from zonebuild.cachedir import cache_dir

from .elfdeps import ldd
from .oci import sha256_file
from .ocilayout import MEDIA_LAYER_TAR, LayoutWriter, tar_diff_id, write_tree_tar

REF_NAME = "busybox:latest"
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class BusyboxImageError(StyroliteError):
    """No static busybox to build the default image from."""


def fetch_busybox(work: Path) -> Path:
    """The static busybox binary: from the busybox-static .deb (cached), else the installed one."""
    debs = cache_dir() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob("busybox-static_*.deb"))
    if not found and shutil.which("apt-get"):
        subprocess.run(["apt-get", "download", "busybox-static"], cwd=debs, capture_output=True)
        found = sorted(debs.glob("busybox-static_*.deb"))
    if found:
        subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(work / "deb")], check=True)
        binary = work / "deb" / "bin" / "busybox"
        if binary.is_file():
            return binary
    installed = Path("/bin/busybox")
    if installed.is_file() and not ldd(installed):
        return installed
    raise BusyboxImageError("no static busybox: install busybox-static or make apt-get download work")


def applet_paths(busybox: Path) -> list[str]:
    """'bin/ls', 'usr/bin/awk', ... as this busybox build installs them."""
    output = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True).stdout
    return sorted({line.strip().lstrip("/") for line in output.splitlines() if line.strip()} - {"bin/busybox"})


def stage_rootfs(busybox: Path, root: Path) -> None:
    for name in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "root", "home", "tmp", "var"):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "root").chmod(0o700)
    shutil.copyfile(busybox, root / "bin" / "busybox")
    (root / "bin" / "busybox").chmod(0o755)
    for rel in applet_paths(busybox):
        link = root / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to("/bin/busybox")
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    (root / "etc" / "hostname").write_text("zone\n")


def build_busybox_image(out: str | Path) -> Path:
    """Write the OCI layout to ``out`` (replaced if present); returns ``out``."""
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="busybox-image-") as tmp:
        work = Path(tmp)
        busybox = fetch_busybox(work)
        root = work / "rootfs"
        stage_rootfs(busybox, root)
        layer_tar = write_tree_tar(root, work / "layer.tar")
        if out.exists():
            shutil.rmtree(out)
        writer = LayoutWriter(out)
        diff_id = tar_diff_id(layer_tar)
        layer = writer.add_file(layer_tar, MEDIA_LAYER_TAR)
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["sh"], "Env": [DEFAULT_PATH], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
        writer.add_image(config, [layer], ref_name=REF_NAME)
    return out


def cached_busybox_image() -> Path:
    """The default image layout under the cache, rebuilt only when the busybox binary changes."""
    with tempfile.TemporaryDirectory(prefix="busybox-probe-") as tmp:
        key = sha256_file(fetch_busybox(Path(tmp))).split(":", 1)[1][:16]
    out = cache_dir() / "images" / f"busybox-{key}"
    if not (out / "index.json").is_file():
        partial = out.with_name(out.name + ".partial")
        build_busybox_image(partial)
        if out.exists():
            shutil.rmtree(out)
        partial.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zonebuild.busybox_image", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="OCI layout directory (default: the cached one)")
    args = parser.parse_args(argv)
    try:
        print(build_busybox_image(args.out) if args.out else cached_busybox_image())
    except (StyroliteError, subprocess.CalledProcessError, OSError) as e:
        print(f"busybox-image: {describe(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
