"""Write OCI image layouts (oci-layout, index.json, blobs/sha256/...) with reproducible bytes.

Used for the kernel image and the built-in busybox image. Layers are uncompressed tars whose entries are
sorted, owned by 0:0 and stamped with one mtime, so the same input tree gives the same digests.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .digests import sha256_file, sha256_hex

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def canonical_json(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def write_tree_tar(root: str | Path, out: str | Path, *, mtime: int = 0, keep_owner: bool = False) -> Path:
    """A deterministic tar of ``root`` (entries relative, sorted; hard links kept; devices kept)."""
    root, out = Path(root), Path(out)
    seen: dict[tuple[int, int], str] = {}
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                full = Path(dirpath) / name
                rel = full.relative_to(root).as_posix()
                info = tar.gettarinfo(str(full), arcname=rel)
                info.mtime = mtime
                if not keep_owner:
                    info.uid = info.gid = 0
                info.uname = info.gname = ""
                st = full.lstat()
                if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        info.type, info.linkname, info.size = tarfile.LNKTYPE, seen[key], 0
                    else:
                        seen[key] = rel
                if info.isreg():
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return out


class LayoutWriter:
    """Builds one OCI image layout directory, blob by blob."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.blobs = self.directory / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        (self.directory / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))

    def add_bytes(self, data: bytes, media_type: str) -> Descriptor:
        digest = hashlib.sha256(data).hexdigest()
        (self.blobs / digest).write_bytes(data)
        return Descriptor(media_type, f"sha256:{digest}", len(data))

    def add_file(self, path: str | Path, media_type: str) -> Descriptor:
        """Move ``path`` into the blob store under its digest."""
        path = Path(path)
        digest = sha256_hex(path)
        size = path.stat().st_size
        os.replace(path, self.blobs / digest)
        return Descriptor(media_type, f"sha256:{digest}", size)

    def add_image(self, config: dict[str, object], layers: list[Descriptor], ref_name: str | None = None,
                  annotations: dict[str, str] | None = None) -> Descriptor:
        """Write config + manifest and point index.json at the manifest; returns the manifest's descriptor."""
        config_desc = self.add_bytes(canonical_json(config), MEDIA_CONFIG)
        manifest: dict[str, object] = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config_desc.to_json(),
            "layers": [layer.to_json() for layer in layers],
        }
        if annotations:
            manifest["annotations"] = dict(annotations)
        manifest_desc = self.add_bytes(canonical_json(manifest), MEDIA_MANIFEST)
        entry = manifest_desc.to_json()
        entry["platform"] = {"architecture": config.get("architecture", "amd64"), "os": config.get("os", "linux")}
        if ref_name:
            entry["annotations"] = {REF_NAME_ANNOTATION: ref_name}
        index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [entry]}
        (self.directory / "index.json").write_bytes(canonical_json(index))
        return manifest_desc


def tar_diff_id(path: str | Path) -> str:
    return sha256_file(path)


def write_tree_image(root: str | Path, out: str | Path, work: str | Path, runtime_config: dict[str, object], *,
                     ref_name: str | None = None, annotations: dict[str, str] | None = None) -> Descriptor:
    """An OCI layout at ``out`` (replaced if present) of one linux/amd64 image: ``root`` as one uncompressed,
    reproducible layer, ``runtime_config`` as the config's ``config``. Returns the manifest's descriptor."""
    import shutil

    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    writer = LayoutWriter(out)
    layer_tar = write_tree_tar(root, Path(work) / "layer.tar")
    diff_id = tar_diff_id(layer_tar)
    layer = writer.add_file(layer_tar, MEDIA_LAYER_TAR)
    config = {"architecture": "amd64", "os": "linux", "config": runtime_config,
              "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    return writer.add_image(config, [layer], ref_name=ref_name, annotations=annotations)
