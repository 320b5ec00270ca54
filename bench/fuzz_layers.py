"""Fuzz the image readers: the layer applier (``LayerApplier.apply``: whiteouts, links, devices, xattrs, hostile
names) and the image opener (``open_image`` + ``unpack_image`` on an OCI layout tar whose index, manifest and
config are structure-mutated and re-digested, so the mutations get past digest verification).

Besides "only typed errors (LayerError, ImageError)", every input checks containment: nothing may appear or
change outside the output root (a sentinel directory beside it is compared after each input).

    python3 bench/fuzz_layers.py [--runs 1000000] [--engine atheris|mutate] [--seed N]
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fuzz_common import main, mutate_tree, stages

from build.layers import LayerApplier
from build.oci import open_image, unpack_image

WORK = tempfile.mkdtemp(prefix="fuzz-layers-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
OUTSIDE = os.path.join(WORK, "outside")
os.makedirs(os.path.join(OUTSIDE, "etc"))
with open(os.path.join(OUTSIDE, "etc", "passwd"), "w") as f:
    f.write("sentinel\n")
SENTINEL = sorted(os.walk(OUTSIDE))


def _tar(entries: list[tuple[str, str, bytes | str]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1
            if kind == "file":
                assert isinstance(data, bytes)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, str(data)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, str(data)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "xattr":
                info.size = 1
                info.pax_headers = {"SCHILY.xattr.user.fuzz": str(data)}
                tar.addfile(info, io.BytesIO(b"x"))
                continue
            tar.addfile(info)
    return buf.getvalue()


LAYER_SEEDS = [
    _tar([("etc", "dir", b""), ("etc/passwd", "file", b"root:x:0:0\n"), ("bin", "dir", b""),
          ("bin/sh", "file", b"\x7fELF"), ("bin/ls", "hard", "bin/sh"), ("usr/bin/env", "sym", "../../bin/sh"),
          ("abs", "sym", "/etc/passwd"), ("dev/null", "chr", b""), ("run/fifo", "fifo", b""),
          ("x", "xattr", "v")]),
    _tar([("etc/.wh.passwd", "file", b""), ("bin/.wh..wh..opq", "file", b""), ("bin/new", "file", b"n")]),
    _tar([("link", "sym", "/"), ("link/escape", "file", b"x"), ("up", "sym", "../../.."), ("h", "hard", "../x")]),
    _tar([("a" * 150 + "/" + "b" * 150, "file", b"long"), ("./././c", "file", b"c")], tarfile.GNU_FORMAT),
    _tar([("d", "file", b"file first"), ("d", "dir", b""), ("d/e", "file", b"e"), ("d", "sym", "x")],
         tarfile.USTAR_FORMAT),
]
LAYER = LAYER_SEEDS[0]


def _check_contained() -> None:
    if sorted(os.listdir(WORK)) != sorted(n for n in os.listdir(WORK) if n in ("outside", "root", "image.tar")) \
            or sorted(os.walk(OUTSIDE)) != SENTINEL:
        raise AssertionError(f"something was written outside the root: {sorted(os.walk(WORK))[:5]}")


def _fresh_root() -> str:
    root = os.path.join(WORK, "root")
    if os.path.lexists(root):
        shutil.rmtree(root) if os.path.isdir(root) and not os.path.islink(root) else os.unlink(root)
    return root


def _apply_layer(data: bytes) -> None:
    root = _fresh_root()
    try:
        applier = LayerApplier(root, preserve_owner=True)
        applier.apply(io.BytesIO(data), "fuzz")
        applier.finish()
    finally:
        _check_contained()


def _blob(files: dict[str, bytes], doc: object) -> dict:
    raw = json.dumps(doc).encode() if not isinstance(doc, bytes) else doc
    digest = hashlib.sha256(raw).hexdigest()
    files[f"blobs/sha256/{digest}"] = raw
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{digest}", "size": len(raw)}


def _image(data: bytes) -> None:
    rng = random.Random(data)
    files: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}'}
    layer = LAYER if rng.random() < 0.5 else rng.choice(LAYER_SEEDS)
    layer_desc = _blob(files, layer)
    layer_desc["mediaType"] = "application/vnd.oci.image.layer.v1.tar"
    config = {"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]}}
    config_desc = _blob(files, mutate_tree(config, rng) if rng.random() < 0.3 else config)
    config_desc["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": [layer_desc]}
    manifest_desc = _blob(files, mutate_tree(manifest, rng) if rng.random() < 0.6 else manifest)
    index = {"schemaVersion": 2, "manifests": [{**manifest_desc, "annotations":
                                                {"org.opencontainers.image.ref.name": "latest"}}]}
    files["index.json"] = json.dumps(mutate_tree(index, rng) if rng.random() < 0.4 else index).encode()
    path = os.path.join(WORK, "image.tar")
    with open(path, "wb") as f:
        f.write(_tar([(name, "file", raw) for name, raw in files.items()]))
    root = _fresh_root()
    try:
        unpack_image(open_image(path), root, preserve_owner=True)
    finally:
        _check_contained()


def target(data: bytes) -> None:
    stages(lambda: _apply_layer(data), lambda: _image(data) if data[:1] and data[0] < 24 else None)


def seeds() -> list[bytes]:
    return list(LAYER_SEEDS)


if __name__ == "__main__":
    try:
        sys.exit(main("layers", target, seeds(), tokens=[b"ustar", b"../", b".wh.", b".wh..wh..opq", b"/etc/passwd"],
                      max_len=65536))
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
