"""Prove the images are reproducible: build each one twice, from two cold caches, in two differently disturbed
processes, and compare the sha256 of what came out.

Build A runs in a plain process (umask 022, PYTHONHASHSEED=0) in the order initrd, kernel image, busybox
image, root images, config disk. Build B runs with umask 077, another hash seed, ``SOURCE_DATE_EPOCH`` set,
256 more interned strings and a dozen unrelated modules imported, in the order ``zonehost run`` uses (kernel
image first, initrd last). Each build has its own ``ZONE_CACHE`` (created empty unless ``--warm``), so the
Nuitka compile, stage-0, the .deb downloads and every cached step run again.

    python -m zonebuild.reproduce --cache-a /var/tmp/repro-a --cache-b /var/tmp/repro-b [--dev] \\
        [--artefacts initrd,kernel,busybox,rootimage,configdisk] [--kernel-deb F | --vmlinuz F --modules D]

A cold Nuitka initrd takes minutes per build. The caches are removed afterwards unless ``--keep``.
Exit status 0 when every artefact has one digest, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ARTEFACTS = ("initrd", "kernel", "busybox", "rootimage", "configdisk")
REPO = Path(__file__).resolve().parent.parent
# The child imports this package from where the parent found it (a checkout or an installed wheel).
CHILD = """
import importlib.util, sys
folder = sys.argv.pop(1)
spec = importlib.util.spec_from_file_location("zonebuild", folder + "/__init__.py", submodule_search_locations=[folder])
sys.modules["zonebuild"] = module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from zonebuild.reproduce import main
sys.exit(main(sys.argv[1:]))
"""
UNRELATED_MODULES = ("decimal", "email.message", "http.client", "json", "xml.dom.minidom", "asyncio", "sqlite3",
                     "unittest.mock", "argparse", "statistics", "fractions", "tarfile")


def tree_digest(root: Path) -> str:
    """sha256 over every file of a directory (an OCI layout): sorted relative paths and contents. The layout
    files' own modes are not part of the image (its layers carry the modes that matter)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root)}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _disturb() -> None:
    """What the building process may have done before: interned strings, other modules and their objects."""
    import importlib

    [sys.intern(chr(i)) for i in range(256)]
    for name in UNRELATED_MODULES:
        importlib.import_module(name)


def build_all(out: Path, artefacts: list[str], args: argparse.Namespace) -> dict[str, str]:
    """Build the requested artefacts into ``out`` (in the given order); artefact name -> sha256."""
    from .busybox_image import build_busybox_image
    from .configdisk import container_from_image, disk_entry, write_config_disk
    from .initrd import build_initrd
    from .kernel_image import build_from_sources
    from .rootimage import build_root_image

    digests: dict[str, str] = {}
    out.mkdir(parents=True, exist_ok=True)
    for artefact in artefacts:
        started = time.monotonic()
        if artefact == "initrd":
            digests["initrd"] = file_digest(build_initrd(out / "initrd", dev=args.dev).path)
        elif artefact == "kernel":
            layout = build_from_sources(out / "kernel", deb=args.kernel_deb, vmlinuz=args.vmlinuz,
                                        modules=args.modules)
            digests["kernel"] = tree_digest(layout)
        elif artefact == "busybox":
            digests["busybox"] = tree_digest(build_busybox_image(out / "busybox"))
        elif artefact == "rootimage":
            image = out / "busybox" if (out / "busybox").is_dir() else build_busybox_image(out / "busybox")
            for fstype, shift in (("squashfs", 0), ("erofs", 0), ("squashfs", 65536)):
                name = f"root-{fstype}{'-shifted' if shift else ''}"
                built = build_root_image(image, out / "root", fstype=fstype, use_cache=False, name=name,
                                         owner_shift=shift)
                digests[name] = built.sha256.removeprefix("sha256:")
        elif artefact == "configdisk":
            image = out / "busybox" if (out / "busybox").is_dir() else build_busybox_image(out / "busybox")
            root = build_root_image(image, out / "config-root", use_cache=False, name="root")
            document = {
                "version": 1,
                "name": "repro",
                "disks": [disk_entry("root0", "root", "/dev/vdb", root.path)],
                "containers": [container_from_image("app", "root0", root.config, command=["sh", "-c", "echo hi"],
                                                    env={"A": "1"})],
            }
            digests["configdisk"] = file_digest(write_config_disk(document, out / "config.img"))
        else:
            raise SystemExit(f"unknown artefact {artefact!r}; choose from {', '.join(ARTEFACTS)}")
        print(f"[reproduce] {artefact}: {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return digests


def _child(args: argparse.Namespace) -> int:
    if args.child == "b":
        os.umask(0o077)
        _disturb()
    else:
        os.umask(0o022)
    artefacts = args.artefacts.split(",")
    if args.child == "b" and "initrd" in artefacts:  # zonehost run builds the kernel image first
        artefacts = [a for a in artefacts if a != "initrd"] + ["initrd"]
    print(json.dumps(build_all(Path(args.out), artefacts, args)))
    return 0


def _run_build(which: str, cache: Path, out: Path, args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ, ZONE_CACHE=str(cache), PYTHONHASHSEED="0" if which == "a" else "4242")
    env.pop("CCACHE_DIR", None)      # the compiler cache must be the cold one under ZONE_CACHE
    env.pop("NUITKA_CACHE_DIR", None)
    if which == "b":
        env["SOURCE_DATE_EPOCH"] = "1700000000"
    else:
        env.pop("SOURCE_DATE_EPOCH", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [sys.executable, "-c", CHILD, str(Path(__file__).resolve().parent), "--child", which,
               "--out", str(out), "--artefacts", args.artefacts]
    for flag in ("kernel_deb", "vmlinuz", "modules"):
        if getattr(args, flag):
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.dev:
        command.append("--dev")
    started = time.monotonic()
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, cwd="/")
    if result.returncode != 0:
        raise SystemExit(f"build {which} failed (exit {result.returncode})")
    print(f"[reproduce] build {which}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _fresh(cache: Path, warm: bool) -> None:
    if cache.exists() and not warm:
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zonebuild.reproduce", description=__doc__.split("\n")[0])
    parser.add_argument("--artefacts", default=",".join(ARTEFACTS), help=f"comma-separated: {', '.join(ARTEFACTS)}")
    parser.add_argument("--cache-a", type=Path, default=Path("/var/tmp/repro-a"))
    parser.add_argument("--cache-b", type=Path, default=Path("/var/tmp/repro-b"))
    parser.add_argument("--dev", action="store_true", help="the developer initrd (no Nuitka)")
    parser.add_argument("--warm", action="store_true", help="keep what the caches hold (default: start cold)")
    parser.add_argument("--keep", action="store_true", help="keep the caches and outputs afterwards")
    parser.add_argument("--parallel", action="store_true", help="run both builds at once (each loads the other)")
    parser.add_argument("--kernel-deb", type=Path, help="build the kernel image from this .deb")
    parser.add_argument("--vmlinuz", type=Path, help="build the kernel image from this kernel (with --modules)")
    parser.add_argument("--modules", type=Path, help="lib/modules/<version> for --vmlinuz")
    parser.add_argument("--child", choices=("a", "b"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)

    caches = {"a": args.cache_a, "b": args.cache_b}
    for cache in caches.values():
        _fresh(cache, args.warm)
    try:
        if args.parallel:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(2) as pool:
                futures = {w: pool.submit(_run_build, w, c, c / "out", args) for w, c in caches.items()}
                results = {w: f.result() for w, f in futures.items()}
        else:
            results = {w: _run_build(w, c, c / "out", args) for w, c in caches.items()}
    finally:
        if not args.keep:
            for cache in caches.values():
                shutil.rmtree(cache, ignore_errors=True)
    same = True
    for name in sorted(set(results["a"]) | set(results["b"])):
        a, b = results["a"].get(name), results["b"].get(name)
        same &= a == b
        print(f"{name:24} {'same' if a == b else 'DIFFERENT':9} A {a}  B {b}")
    print(json.dumps({"reproducible": same, "digests": results}))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
