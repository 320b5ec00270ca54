"""Layer application: whiteouts, opaque dirs, hard links, metadata, and hostile tarballs."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from styrolite.errors import describe
from zonebuild.layers import LayerApplier, LayerError
from zonebuild.oci import ImageError, open_image, unpack_image


def _tar(entries: list[tuple]) -> bytes:
    """entries: (name, kind, payload) with kind in file/dir/sym/hard/chr; payload = data or link target."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload, *extra in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == "dir" else 0o644
            if extra:
                info.pax_headers = extra[0]
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, payload
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, payload
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tar.addfile(info)
    return buf.getvalue()


def _apply(root: Path, *layers: bytes) -> None:
    applier = LayerApplier(root)
    for i, layer in enumerate(layers):
        applier.apply(io.BytesIO(layer), f"layer {i}")
    applier.finish()


def test_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    lower = _tar([("etc/", "dir", b""), ("etc/a", "file", b"a"), ("etc/b", "file", b"b"),
                  ("var/", "dir", b""), ("var/old", "file", b"old"), ("var/sub/", "dir", b""),
                  ("var/sub/deep", "file", b"deep")])
    upper = _tar([("etc/.wh.a", "file", b""), ("var/new", "file", b"new"), ("var/.wh..wh..opq", "file", b"")])
    root = tmp_path / "root"
    _apply(root, lower, upper)
    assert sorted(os.listdir(root / "etc")) == ["b"]
    assert sorted(os.listdir(root / "var")) == ["new"]  # opaque: lower content hidden, this layer's kept


@pytest.mark.root
def test_hard_links_symlinks_devices_and_xattrs(tmp_path: Path) -> None:
    layer = _tar([("bin/", "dir", b""), ("bin/busybox", "file", b"BB"), ("bin/sh", "hard", "bin/busybox"),
                  ("bin/ls", "sym", "/bin/busybox"), ("dev/", "dir", b""), ("dev/null", "chr", b""),
                  ("bin/cap", "file", b"x", {"SCHILY.xattr.user.test": "hello"})])
    root = tmp_path / "root"
    _apply(root, layer)
    assert (root / "bin" / "sh").stat().st_ino == (root / "bin" / "busybox").stat().st_ino
    assert os.readlink(root / "bin" / "ls") == "/bin/busybox"
    null = (root / "dev" / "null").lstat()
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    assert os.getxattr(root / "bin" / "cap", "user.test") == b"hello"
    assert stat.S_IMODE((root / "bin" / "busybox").stat().st_mode) == 0o644


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("../evil", "file", b"x")], "'..'"),
        ([("/etc/evil", "file", b"x")], "absolute path"),
        ([("a/../../evil", "file", b"x")], "'..'"),
        ([("link", "sym", "../../../../etc"), ("link/passwd", "file", b"x")], "outside the root"),
        ([("link", "sym", "/tmp"), ("link/evil", "file", b"x")], "is a symlink"),
        ([("hl", "hard", "../../etc/passwd")], "'..'"),
        ([("hl", "hard", "nothing")], "does not exist"),
    ],
)
def test_hostile_entries_are_refused(tmp_path: Path, entries: list[tuple], message: str) -> None:
    outside_before = set(os.listdir(tmp_path))
    with pytest.raises(LayerError, match=message):
        _apply(tmp_path / "out" / "root", _tar(entries))
    assert set(os.listdir(tmp_path)) == outside_before | {"out"}
    assert not Path("/tmp/evil").exists()


def test_truncated_and_corrupt_layers(tmp_path: Path) -> None:
    good = _tar([("f", "file", b"x" * 5000)])
    with pytest.raises(LayerError, match="corrupt or truncated"):
        _apply(tmp_path / "a", good[:3000])
    with pytest.raises(LayerError, match="corrupt or truncated"):
        _apply(tmp_path / "b", b"\x01" * 1024)


def _docker_archive(path: Path, layers: list[bytes], diff_ids: list[str] | None = None) -> Path:
    import hashlib

    diff_ids = diff_ids or [f"sha256:{hashlib.sha256(layer).hexdigest()}" for layer in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    files = {config_name: config}
    for i, layer in enumerate(layers):
        files[f"l{i}/layer.tar"] = layer
    files["manifest.json"] = json.dumps([{"Config": config_name, "RepoTags": ["t:latest"],
                                          "Layers": [f"l{i}/layer.tar" for i in range(len(layers))]}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_docker_archive_roundtrip_and_digest_mismatch(tmp_path: Path) -> None:
    layer = _tar([("hello", "file", b"hi")])
    image = open_image(_docker_archive(tmp_path / "ok.tar", [layer]))
    assert image.runtime_config["Cmd"] == ["/bin/sh"]
    unpack_image(image, tmp_path / "root")
    assert (tmp_path / "root" / "hello").read_bytes() == b"hi"

    bad = open_image(_docker_archive(tmp_path / "bad.tar", [layer], ["sha256:" + "0" * 64]))
    with pytest.raises(ImageError, match="digest mismatch"):
        unpack_image(bad, tmp_path / "root2")
    assert not (tmp_path / "root2" / "hello").exists()


def test_truncated_archive_and_garbage(tmp_path: Path) -> None:
    archive = _docker_archive(tmp_path / "ok.tar", [_tar([("hello", "file", b"hi" * 4000)])])
    data = archive.read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as info:
        unpack_image(open_image(tmp_path / "cut.tar"), tmp_path / "r")
    assert describe(info.value)
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ImageError, match="not a readable tar"):
        open_image(tmp_path / "junk.tar")


def _layout_with_layer(root: Path, layer: bytes) -> Path:
    from zonebuild.ocilayout import MEDIA_LAYER_TAR, LayoutWriter

    writer = LayoutWriter(root)
    descriptor = writer.add_bytes(layer, MEDIA_LAYER_TAR)
    writer.add_image({"architecture": "amd64", "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": [descriptor.digest]}}, [descriptor])
    return root


def test_oci_layout_with_escaping_layer_writes_nothing_outside(tmp_path: Path) -> None:
    layout = _layout_with_layer(tmp_path / "layout", _tar([("ok", "file", b"1"), ("../../escaped", "file", b"x")]))
    with pytest.raises(ImageError) as info:
        unpack_image(open_image(layout), tmp_path / "out" / "root")
    assert "'..'" in describe(info.value)
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "out" / "escaped").exists()


def test_oci_layout_missing_or_tampered_blobs(tmp_path: Path) -> None:
    layout = _layout_with_layer(tmp_path / "layout", _tar([("f", "file", b"data")]))
    index = json.loads((layout / "index.json").read_text())
    manifest_blob = layout / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads(manifest_blob.read_text())
    config_blob = layout / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]
    config_blob.write_text(config_blob.read_text().replace("amd64", "arm64"))  # same size, other bytes
    with pytest.raises(ImageError, match="digest mismatch"):
        open_image(layout)
    config_blob.unlink()
    with pytest.raises(ImageError, match="missing blob"):
        open_image(layout)
    with pytest.raises(ImageError, match="not an OCI image layout"):
        open_image(tmp_path)
