"""The built-in default app image: Debian's busybox-static as a proper OCI image layout, so no registry is needed.

Contents: /bin/busybox, one symlink per applet at the path ``busybox --list-full`` gives, /etc/passwd and
/etc/group, and empty /tmp /proc /sys /dev /root /home mount points. Config: Cmd ["sh"], a PATH. Built
reproducibly (sorted entries, fixed mtimes) and cached by the busybox binary's digest.

The binary comes from the busybox-static .deb (``apt-get download``, cached: zonebuild.debs) or, when apt is
unavailable, from the installed /bin/busybox if it is the static build. Every mode is set explicitly, so the
umask of the building process does not reach the image.
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

from . import debs
from .cachedir import cache_dir, cached_layout
from .digests import sha256_hex
from .elfdeps import ldd
from .errors import BuildError
from .ocilayout import write_tree_image

REF_NAME = "busybox:latest"
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class BusyboxImageError(BuildError):
    """No static busybox to build the default image from."""


def fetch_busybox() -> Path:
    """The static busybox binary: from the busybox-static .deb (downloaded and unpacked once), else the
    installed one."""
    try:
        binary = debs.unpacked(debs.download("busybox-static")) / "bin" / "busybox"
    except debs.DebError:
        binary = None
    if binary is not None and binary.is_file():
        return binary
    installed = Path("/bin/busybox")
    if installed.is_file() and not ldd(installed):
        return installed
    raise BusyboxImageError("no static busybox: install busybox-static or make apt-get download work")


def applet_paths(busybox: Path) -> list[str]:
    """'bin/ls', 'usr/bin/awk', ... as this busybox build installs them."""
    output = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True).stdout
    return sorted({line.strip().lstrip("/") for line in output.splitlines() if line.strip()} - {"bin/busybox"})


DIRECTORIES = {name: 0o755 for name in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev",
                                         "home", "var")} | {"root": 0o700, "tmp": 0o1777}


def stage_rootfs(busybox: Path, root: Path) -> None:
    for name, mode in DIRECTORIES.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name).chmod(mode)
    shutil.copyfile(busybox, root / "bin" / "busybox")
    (root / "bin" / "busybox").chmod(0o755)
    for rel in applet_paths(busybox):
        link = root / rel
        if not link.parent.is_dir():
            link.parent.mkdir(parents=True)
            link.parent.chmod(0o755)
        if not link.exists():
            link.symlink_to("/bin/busybox")
    for name, text in (("passwd", PASSWD), ("group", GROUP), ("hostname", "zone\n")):
        (root / "etc" / name).write_text(text)
        (root / "etc" / name).chmod(0o644)


def build_busybox_image(out: str | Path) -> Path:
    """Write the OCI layout to ``out`` (replaced if present); returns ``out``."""
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="busybox-image-") as tmp:
        work = Path(tmp)
        busybox = fetch_busybox()
        root = work / "rootfs"
        stage_rootfs(busybox, root)
        write_tree_image(root, out, work, {"Cmd": ["sh"], "Env": [DEFAULT_PATH], "WorkingDir": "/"},
                         ref_name=REF_NAME)
    return out


def cached_busybox_image() -> Path:
    """The default image layout under the cache, rebuilt only when the busybox binary changes."""
    key = sha256_hex(fetch_busybox())[:16]
    return cached_layout(cache_dir() / "images" / f"busybox-{key}", build_busybox_image)

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
