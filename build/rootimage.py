"""App OCI image -> a read-only root image for a zone + the image's runtime config as JSON.

The layers are verified and applied in order (whiteouts, owners, modes, xattrs, devices, links: see
zonebuild.layers) into a scratch directory, which becomes one read-only file system image:

* squashfs (default, zstd): smallest output in our measurements (docs/images.md), and the zone already
  loads squashfs.ko for addons.squashfs, so root images need no extra module before they mount;
* erofs (``fs="erofs"``, lz4hc): faster random reads, larger here; kept as an option.

Both are built reproducibly (fixed fs timestamp, fixed UUID for erofs). With ``owner_shift`` every owner is
shifted into a user namespace's range first (zonebuild.idshift), for containers whose root is not the
zone's root. Results are cached by the image's config digest, the fs type and the shift.
Usage: ``python -m zonebuild.rootimage IMAGE --out DIR [--fs erofs] [--owner-shift N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from styrolite.errors import StyroliteError, describe

from .cachedir import cache_dir
from .digests import sha256_file
from .errors import BuildError
from .fsimage import FSTYPES, FsImageError, make_fs
from .idshift import check_shift, shift_ownership
from .oci import Image, open_image, unpack_image

RUNTIME_KEYS = ("Entrypoint", "Cmd", "Env", "WorkingDir", "User", "ExposedPorts", "Labels", "StopSignal")


class RootImageError(BuildError):
    """The app image could not be turned into a root image."""


@dataclass(frozen=True)
class RootImage:
    path: Path          # the file system image
    config_path: Path   # runtime config JSON
    config: dict[str, Any]
    fstype: str
    sha256: str
    size: int
    owner_shift: int = 0  # every owner was shifted by this much (0: as in the image)


def runtime_config(image: Image) -> dict[str, Any]:
    """The fields a zone needs to run the image (Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts...)."""
    source = image.runtime_config
    return {key: source[key] for key in RUNTIME_KEYS if source.get(key) not in (None, [], {}, "")}


def build_root_image(image_path: str | Path, out_dir: str | Path, *, fstype: str = "squashfs",
                     ref: str | None = None, name: str | None = None, use_cache: bool = True,
                     owner_shift: int = 0) -> RootImage:
    """Verify, flatten and pack ``image_path`` (OCI layout dir or docker-archive/OCI tar) into ``out_dir``;
    with ``owner_shift``, every file's owner and group are shifted by it (see zonebuild.idshift)."""
    if fstype not in FSTYPES:
        raise RootImageError(f"unknown root image type {fstype!r}; choose {' or '.join(FSTYPES)}")
    if owner_shift:
        try:
            check_shift(owner_shift)
        except StyroliteError as e:
            raise RootImageError("root image") from e
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        image = open_image(image_path, ref)
    except StyroliteError as e:
        raise RootImageError(f"open image {image_path}") from e
    key = image.config_digest.split(":", 1)[1][:24] + (f"-shift{owner_shift}" if owner_shift else "")
    name = name or f"root-{key}"
    target = out_dir / f"{name}.{fstype}"
    config = runtime_config(image)
    cached = cache_dir() / "rootimages" / f"{key}.{fstype}"
    if use_cache and cached.is_file():
        shutil.copyfile(cached, target)
    else:
        with tempfile.TemporaryDirectory(prefix="rootimage-", dir=out_dir) as tmp:
            tree = Path(tmp) / "rootfs"
            try:
                unpack_image(image, tree)
            except StyroliteError as e:
                raise RootImageError(f"unpack image {image_path}") from e
            if owner_shift:
                try:
                    shift_ownership(tree, owner_shift)
                except (StyroliteError, OSError) as e:
                    raise RootImageError(f"shift the owners of {image_path} by {owner_shift}") from e
            try:
                make_fs(tree, target, fstype)
            except FsImageError as e:
                raise RootImageError(f"root image of {image_path}") from e
        if use_cache:
            cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(target, f"{cached}.tmp")
            os.replace(f"{cached}.tmp", cached)
    config_path = out_dir / f"{name}.json"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return RootImage(target, config_path, config, fstype, sha256_file(target), target.stat().st_size, owner_shift)


def measure(image_path: str | Path, work: str | Path) -> dict[str, dict[str, float]]:
    """Size and build time of both file system types for one image (figures for docs/images.md)."""
    figures = {}
    for fstype in FSTYPES:
        started = time.monotonic()
        result = build_root_image(image_path, work, fstype=fstype, use_cache=False, name=f"measure-{fstype}")
        figures[fstype] = {"bytes": result.size, "seconds": round(time.monotonic() - started, 2)}
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zonebuild.rootimage", description="OCI image -> root image")
    parser.add_argument("image", type=Path, help="OCI layout directory, OCI layout tar or docker-archive tar")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fs", choices=FSTYPES, default="squashfs")
    parser.add_argument("--ref", help="manifest ref name in an OCI layout index")
    parser.add_argument("--owner-shift", type=int, default=0, metavar="N",
                        help="shift every owner by N (for containers in a user namespace; e.g. 100000)")
    parser.add_argument("--measure", action="store_true", help="build both types and print size/time")
    args = parser.parse_args(argv)
    try:
        if args.measure:
            print(json.dumps(measure(args.image, args.out), indent=2))
            return 0
        result = build_root_image(args.image, args.out, fstype=args.fs, ref=args.ref, owner_shift=args.owner_shift)
    except (StyroliteError, OSError) as e:
        print(f"rootimage: {describe(e)}", file=sys.stderr)
        return 1
    print(json.dumps({"image": str(result.path), "config": str(result.config_path), "sha256": result.sha256,
                      "size": result.size, "fstype": result.fstype, "owner_shift": result.owner_shift}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
