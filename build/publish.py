"""Publish what zones are composed from to a registry: the kernel image and the system extensions.

    python -m zonebuild.publish REGISTRY[/PREFIX] [--only kernel,debug-tools,fs-extra] [--json]
                                [--authfile F] [--cert-dir D] [--registries-conf F]

Each is built (or found in the cache) and pushed from its OCI layout with zoneoci's client (the same trust,
credentials and insecure-registry rules as podman and skopeo):

    kernel        PREFIX/zone/kernel:<release>          /kernel/image, metadata, addons.squashfs, config.gz,
                                                       boot-modules.cpio (zonebuild.kernel_image)
    debug-tools   PREFIX/zone/debug-tools:<version>     (zonebuild.sysext)
    fs-extra      PREFIX/zone/fs-extra:<release>        the kernel-modules extension for that release

One line per image on stdout: ``NAME REF@DIGEST`` (pinned: what ``zonehost run --kernel/--extension`` take),
or a JSON object with ``--json``. Errors are one line and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from styrolite.errors import StyroliteError, describe
from zoneoci.commands import add_registry_options, client_from_args
from zoneoci.errors import OCIError
from zoneoci.push import push
from zoneoci.reference import parse_reference

from . import kernel_image, sysext
from .oci import open_image

IMAGES = ("kernel", "debug-tools", "fs-extra")


def _kernel() -> Path:
    return kernel_image.cached_kernel_image()


BUILD: dict[str, Callable[[], Path]] = {
    "kernel": _kernel,
    "debug-tools": lambda: sysext.cached_extension("debug-tools"),
    "fs-extra": lambda: sysext.cached_extension("fs-extra"),
}


def tag_of(name: str, layout: Path) -> str:
    """The tag an image is published under: the kernel release, or the extension's version."""
    labels = (open_image(layout).runtime_config.get("Labels") or {})
    key = "dev.zone.kernel.kernel_version" if name == "kernel" else "dev.zone.extension.version"
    value = labels.get(key)
    if not isinstance(value, str) or not value:
        raise OCIError(f"{name} image {layout}: no {key} label to tag it with")
    return value.replace("+", "_")[:128]


def publish(destination: str, names: list[str], args: argparse.Namespace,
            progress: Callable[[str], None] | None = None) -> dict[str, str]:
    """Build and push each image; name -> pinned reference."""
    prefix = destination.rstrip("/")
    pushed: dict[str, str] = {}
    with client_from_args(args) as client:
        for name in names:
            layout = BUILD[name]()
            ref = parse_reference(f"{prefix}/zone/{name}:{tag_of(name, layout)}")
            if progress:
                progress(f"push {name} ({layout}) to {ref}")
            result = push(ref, client, layout=layout, progress=progress)
            pushed[name] = f"{ref.name}:{ref.tag}@{result.digest}"
    return pushed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zonebuild.publish", description=__doc__.split("\n")[0])
    parser.add_argument("destination", metavar="REGISTRY[/PREFIX]", help="e.g. 127.0.0.1:5000 or registry/team")
    parser.add_argument("--only", default=",".join(IMAGES), help=f"comma-separated subset of {', '.join(IMAGES)}")
    parser.add_argument("--json", action="store_true", help="print {name: pinned reference}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    add_registry_options(parser)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in IMAGES]
    if unknown or not names:
        parser.error(f"--only: {', '.join(unknown) or 'nothing'}: choose from {', '.join(IMAGES)}")
    progress = None if args.quiet else (lambda line: print(f"publish: {line}", file=sys.stderr, flush=True))
    try:
        pushed = publish(args.destination, names, args, progress)
    except (StyroliteError, OCIError, OSError) as e:
        print(f"publish: {describe(e) if isinstance(e, StyroliteError) else e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(pushed, indent=1, sort_keys=True))
    else:
        for name, ref in pushed.items():
            print(f"{name} {ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
