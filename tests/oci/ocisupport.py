"""What the registry tests share beyond the registry itself (tests/registrylab.py): the session's pushed images,
the busybox layer, incompressible layers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from registrylab import Registry, tar_of

REPO = Path(__file__).resolve().parents[2]


@dataclass
class PushedImages:
    """The session's images in the test registry (pushed by skopeo)."""

    busybox_tar: bytes
    layout: Path
    repos: dict[str, str]          # what -> "repo:tag" in the registry


def busybox_layer() -> bytes:
    """The busybox root filesystem (Debian's busybox-static, staged by zonebuild) as an uncompressed tar."""
    from host.zonebuild_import import ensure_zonebuild

    ensure_zonebuild()
    import tempfile

    from zonebuild.busybox_image import fetch_busybox, stage_rootfs
    from zonebuild.ocilayout import write_tree_tar

    with tempfile.TemporaryDirectory(prefix="oci-busybox-") as tmp:
        work = Path(tmp)
        stage_rootfs(fetch_busybox(), work / "rootfs")
        return write_tree_tar(work / "rootfs", work / "layer.tar").read_bytes()


def random_layer(name: str, size: int, seed: int) -> bytes:
    """A layer of one file of incompressible bytes (reproducible from ``seed``)."""
    import random

    return tar_of({name: random.Random(seed).randbytes(size)})


def env_for(registry: Registry) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "REGISTRY_AUTH_FILE": str(registry.authfile)}
