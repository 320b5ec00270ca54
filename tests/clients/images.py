"""The busybox test image for the real clients, built locally (no registry, no network).

``zonebuild.busybox_image`` writes an OCI image layout; docker 20.10 and ``ctr image import`` want a
docker-archive (``docker save`` format), which podman loads too, so that is what the clients get.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

TAG = "busybox:latest"


def _blob(layout: Path, digest: str) -> Path:
    algorithm, hex_digest = digest.split(":", 1)
    return layout / "blobs" / algorithm / hex_digest


def docker_archive(layout: Path, out: Path, tag: str = TAG) -> Path:
    """Repack the single-manifest OCI layout ``layout`` as the docker-archive ``out`` named ``tag``."""
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]).read_text())
    config_digest = manifest["config"]["digest"]
    layers = [layer["digest"] for layer in manifest["layers"]]
    if any(not layer["mediaType"].endswith("tar") for layer in manifest["layers"]):
        raise ValueError("only uncompressed layers are repacked")
    entry = {"Config": config_digest.split(":", 1)[1] + ".json", "RepoTags": [tag],
             "Layers": [f"{digest.split(':', 1)[1]}/layer.tar" for digest in layers]}
    with tarfile.open(out, "w") as archive:
        archive.add(_blob(layout, config_digest), arcname=entry["Config"])
        for digest, name in zip(layers, entry["Layers"], strict=True):
            archive.add(_blob(layout, digest), arcname=name)
        manifest_file = out.with_suffix(".manifest.json")
        manifest_file.write_text(json.dumps([entry]))
        archive.add(manifest_file, arcname="manifest.json")
    manifest_file.unlink()
    return out
