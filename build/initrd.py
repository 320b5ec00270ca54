"""The zone initramfs: stage-0 /init, the Nuitka-compiled multi-call program, its libraries, /dev and /etc.

Layout of the archive::

    /init                        stage-0 (build/stage0/init.c, static): mounts /proc + /dev, execs /lib/zone/init
    /lib/zone/zone-init          zoneinit.multicall (entry build/entry/multicall.py), Nuitka --standalone
    /lib/zone/init               symlink to zone-init (argv[0] "init" selects PID 1)
    /lib/zone/*.so, ...          the extension modules and data Nuitka put next to it
    /bin/styrolite, /bin/zone    symlinks to /lib/zone/zone-init (argv[0] picks the applet)
    /lib/x86_64-linux-gnu/...    the ELF closure (ldd) + dlopen()ed libraries, at the paths ldd reports
    /dev/console, /dev/urandom   device nodes (before devtmpfs is mounted the kernel needs /dev/console)
    /etc/passwd, group, hosts, nsswitch.conf
    /proc /sys /run /tmp /mnt    empty mount points

Why symlinks and not hard links for /bin/*: a Nuitka standalone program finds its extension modules next to
/proc/self/exe; a hard link in /bin would make it look for them in /bin. A symlink keeps argv[0] (the applet
name) while /proc/self/exe resolves to /lib/zone.

This module is the entry point; the compile (Nuitka, stage-0, cached by content) is
:mod:`zonebuild.initrd_compile`, the tree is staged by :mod:`zonebuild.initrd_stage`, and the archive is
written by :mod:`zonebuild.cpio`. The same sources give the same bytes: docs/images.md, "Reproducible".
``--dev`` skips Nuitka: the plain interpreter, a trimmed stdlib and our packages as .pyc, for quick iteration.

Usage: ``python -m zonebuild.initrd --out DIR [--dev] [--compression zstd|gzip|none]``
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from styrolite.errors import StyroliteError, describe

from .buildlog import logger
from .cpio import CpioArchive, compress, concat_for_boot
from .initrd_compile import InitrdError, compile_key, compile_zone_init
from .initrd_stage import add_devices, normalize_modes, stage_common, stage_dev, stage_nuitka

__all__ = ["InitrdError", "InitrdResult", "boot_initrd", "build_initrd", "main", "source_digest"]

log = logger("initrd")
BUILDER = Path(__file__).resolve().parent


def source_digest() -> str:
    """What decides the initrd's bytes: the compiled program's key plus the builder's own code (staging and
    packing change the archive too). The host caches built initrds under this key."""
    digest = hashlib.sha256(compile_key().encode())
    for path in sorted(BUILDER.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:24]


@dataclass(frozen=True)
class InitrdResult:
    path: Path
    size: int
    files: int
    uncompressed: int
    seconds: float
    cache_hit: bool


def build_initrd(out_dir: str | Path, *, dev: bool = False, compression: str = "zstd") -> InitrdResult:
    """Build the initramfs into ``out_dir``/initrd.cpio.<ext>; the same tree gives the same bytes."""
    started = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_hit = False
    with tempfile.TemporaryDirectory(prefix="initrd-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        stage_common(root)
        if dev:
            stage_dev(root)
        else:
            dist, cache_hit = compile_zone_init()  # once: the key must not be recomputed mid-build
            stage_nuitka(root, dist)
        normalize_modes(root)
        archive = CpioArchive()
        archive.add_tree(root)
        add_devices(archive)
        log("packing cpio")
        raw = archive.to_bytes()
        data = compress(raw, compression, level=3 if dev else 19)  # dev: pack fast, it is rebuilt often
    suffix = {"zstd": ".zst", "gzip": ".gz", "none": ""}[compression]
    path = out_dir / f"initrd{'-dev' if dev else ''}.cpio{suffix}"
    path.write_bytes(data)
    result = InitrdResult(path, len(data), len(archive.paths()), len(raw), time.monotonic() - started, cache_hit)
    log(f"{path}: {result.size / 1e6:.2f} MB {compression} ({result.uncompressed / 1e6:.1f} MB raw), "
        f"{result.files} entries, {result.seconds:.1f} s{' (compile cached)' if cache_hit else ''}")
    return result


def boot_initrd(initrd: str | Path, boot_modules: str | Path, out: str | Path) -> Path:
    """Concatenate our initrd and the kernel image's boot-modules cpio into the file QEMU/Xen loads."""
    out = Path(out)
    out.write_bytes(concat_for_boot(Path(initrd).read_bytes(), Path(boot_modules).read_bytes()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zonebuild.initrd", description="Build the zone initramfs.")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--dev", action="store_true", help="plain interpreter + .pyc instead of Nuitka (fast)")
    parser.add_argument("--compression", choices=("zstd", "gzip", "none"), default="zstd")
    args = parser.parse_args(argv)
    try:
        result = build_initrd(args.out, dev=args.dev, compression=args.compression)
    except (StyroliteError, subprocess.CalledProcessError, OSError) as e:
        print(f"initrd: {describe(e)}", file=sys.stderr)
        return 1
    print(result.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
