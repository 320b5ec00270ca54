"""App images -> root images: the busybox default image, multi-layer whiteouts, both fs types, reproducibility."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from styrolite.errors import describe
from zonebuild.busybox_image import build_busybox_image
from zonebuild.oci import open_image
from zonebuild.ocilayout import MEDIA_LAYER_TAR, LayoutWriter
from zonebuild.rootimage import RootImageError, build_root_image

pytestmark = pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="needs squashfs-tools")


def _squashfs_listing(path: Path) -> str:
    return subprocess.run(["unsquashfs", "-lln", str(path)], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def busybox_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return build_busybox_image(tmp_path_factory.mktemp("bb") / "layout")
    except Exception as e:
        pytest.skip(f"no static busybox here: {e}")


def test_busybox_image_is_a_valid_layout(busybox_layout: Path, tmp_path: Path) -> None:
    image = open_image(busybox_layout, "busybox:latest")
    assert image.runtime_config["Cmd"] == ["sh"]
    again = build_busybox_image(tmp_path / "again")
    assert (again / "index.json").read_bytes() == (busybox_layout / "index.json").read_bytes()


def test_root_image_from_busybox(busybox_layout: Path, tmp_path: Path) -> None:
    first = build_root_image(busybox_layout, tmp_path / "a", use_cache=False)
    listing = _squashfs_listing(first.path)
    assert "squashfs-root/bin/busybox" in listing
    assert "squashfs-root/bin/sh -> /bin/busybox" in listing
    assert first.config["Cmd"] == ["sh"]
    second = build_root_image(busybox_layout, tmp_path / "b", use_cache=False)
    assert first.sha256 == second.sha256 == f"sha256:{hashlib.sha256(first.path.read_bytes()).hexdigest()}"


@pytest.mark.skipif(shutil.which("mkfs.erofs") is None, reason="needs erofs-utils")
def test_erofs_is_reproducible(busybox_layout: Path, tmp_path: Path) -> None:
    first = build_root_image(busybox_layout, tmp_path / "a", fstype="erofs", use_cache=False)
    second = build_root_image(busybox_layout, tmp_path / "b", fstype="erofs", use_cache=False)
    assert first.path.read_bytes()[1024:1028] == b"\xe2\xe1\xf5\xe0"  # erofs superblock magic
    assert first.sha256 == second.sha256


def _layer(entries: list[tuple[str, bytes | None, str | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, link in entries:
            info = tarfile.TarInfo(name)
            if name.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif link is not None:
                info.type, info.linkname = tarfile.LNKTYPE, link
                tar.addfile(info)
            else:
                info.size, info.uid, info.gid = len(data or b""), 1000, 1000
                tar.addfile(info, io.BytesIO(data or b""))
    return buf.getvalue()


@pytest.mark.root
def test_layers_whiteouts_and_hardlinks_land_in_the_image(tmp_path: Path) -> None:
    writer = LayoutWriter(tmp_path / "layout")
    layers = [
        _layer([("app/", None, None), ("app/keep", b"k", None), ("app/gone", b"g", None),
                ("data/", None, None), ("data/old", b"o", None)]),
        _layer([("app/.wh.gone", b"", None), ("app/link", None, "app/keep"), ("data/.wh..wh..opq", b"", None),
                ("data/new", b"n", None)]),
    ]
    descriptors = [writer.add_bytes(layer, MEDIA_LAYER_TAR) for layer in layers]
    diff_ids = [d.digest for d in descriptors]
    writer.add_image({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/app/keep"], "User": "1000"},
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}}, descriptors)
    result = build_root_image(tmp_path / "layout", tmp_path / "out", use_cache=False)
    listing = _squashfs_listing(result.path)
    assert "squashfs-root/app/keep" in listing and "squashfs-root/app/link" in listing
    assert "app/gone" not in listing and "data/old" not in listing and ".wh." not in listing
    assert "squashfs-root/data/new" in listing
    keep_line = next(line for line in listing.splitlines() if line.endswith("app/keep"))
    assert "1000/1000" in keep_line  # ownership kept
    assert result.config == {"Cmd": ["/app/keep"], "User": "1000"}


def test_bad_image_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RootImageError, match="open image"):
        build_root_image(tmp_path / "empty", tmp_path / "out")


@pytest.mark.root
def test_shifted_root_image_for_a_user_namespace(busybox_layout: Path, tmp_path: Path) -> None:
    plain = build_root_image(busybox_layout, tmp_path / "a", use_cache=False)
    shifted = build_root_image(busybox_layout, tmp_path / "b", use_cache=False, owner_shift=131072)
    assert shifted.owner_shift == 131072 and shifted.sha256 != plain.sha256
    listing = _squashfs_listing(shifted.path)
    assert "131072/131072" in listing and " root/root " not in listing
    with pytest.raises(RootImageError) as failed:
        build_root_image(busybox_layout, tmp_path / "c", use_cache=False, owner_shift=5)
    assert "owner shift 5: must be a multiple of 65536" in describe(failed.value)
