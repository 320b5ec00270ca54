"""References, digests, manifests, auth files, challenges and registries.conf: parsing untrusted input."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from zoneoci import mediatypes
from zoneoci.auth import find_credentials, parse_challenges
from zoneoci.digest import Verifier, parse_digest
from zoneoci.errors import ConfigFileError, DigestMismatchError, ManifestError, NotFoundError, ReferenceFormatError
from zoneoci.hosts import RegistryHosts, load_registries_conf
from zoneoci.manifest import ImageIndex, ImageManifest, Platform, parse_manifest
from zoneoci.reference import parse_reference

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("text", "registry", "repository", "tag", "digest"), [
    ("busybox", "docker.io", "library/busybox", "latest", None),
    ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
    ("team/app", "docker.io", "team/app", "latest", None),
    ("index.docker.io/library/alpine:3", "docker.io", "library/alpine", "3", None),
    ("127.0.0.1:5000/app:1.0", "127.0.0.1:5000", "app", "1.0", None),
    ("localhost/a/b/c", "localhost", "a/b/c", "latest", None),
    (f"127.0.0.1:5000/app@{D}", "127.0.0.1:5000", "app", None, D),
    (f"host.example:443/ns/app:v1@{D}", "host.example:443", "ns/app", "v1", D),
    ("[::1]:5000/app:x", "[::1]:5000", "app", "x", None),
    ("quay.io/a__b/c-d.e:T_1.2-3", "quay.io", "a__b/c-d.e", "T_1.2-3", None),
])
def test_reference_normalised(text: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert parse_reference(str(ref)) == ref


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"),
    ("Busybox", "lowercase"),
    ("app:", "invalid tag"),
    ("app:-x", "invalid tag"),
    ("app@sha256:1234", "64 hex"),
    ("app@md5:" + "0" * 32, "unsupported digest algorithm"),
    ("a b", "invalid image reference"),
    ("host:99999/app", "invalid port"),
    ("127.0.0.1:5000/", "no repository"),
    ("app/../etc", "invalid repository component"),
    ("a" * 300, "longer than 255"),
])
def test_reference_refused(text: str, message: str) -> None:
    with pytest.raises(ReferenceFormatError, match=message):
        parse_reference(text)


def test_familiar_and_target() -> None:
    assert parse_reference("busybox").familiar() == "busybox:latest"
    assert parse_reference(f"app:1@{D}").target == D
    assert parse_reference("app:1").target == "1"


def test_verifier_catches_truncation_excess_and_mismatch() -> None:
    import hashlib
    data = b"hello"
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    v = Verifier(good, 5)
    v.update(data)
    v.check()
    short = Verifier(good, 5)
    short.update(b"hell")
    with pytest.raises(DigestMismatchError, match="truncated: got 4 of 5"):
        short.check()
    with pytest.raises(DigestMismatchError, match="more than the 5 bytes"):
        Verifier(good, 5).update(b"hello!")
    wrong = Verifier(D, 5)
    wrong.update(data)
    with pytest.raises(DigestMismatchError, match="digest mismatch"):
        wrong.check()
    with pytest.raises(ReferenceFormatError):
        parse_digest("sha256:" + "AB" * 32)


def _manifest(**extra: object) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
           "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": D, "size": 2},
           "layers": [{"mediaType": mediatypes.OCI_LAYER_GZIP, "digest": D, "size": 10}], **extra}
    return json.dumps(doc).encode()


def test_manifest_and_index_parse_and_select() -> None:
    image = parse_manifest(_manifest(), mediatypes.OCI_MANIFEST)
    assert isinstance(image, ImageManifest) and image.layers[0].size == 10
    index = parse_manifest(json.dumps({"schemaVersion": 2, "mediaType": mediatypes.DOCKER_LIST, "manifests": [
        {"mediaType": mediatypes.DOCKER_MANIFEST, "digest": D, "size": 3,
         "platform": {"os": "linux", "architecture": "arm64"}},
        {"mediaType": mediatypes.DOCKER_MANIFEST, "digest": "sha256:" + "cd" * 32, "size": 3,
         "platform": {"os": "linux", "architecture": "amd64"}}]}).encode(), "application/json")
    assert isinstance(index, ImageIndex)
    assert index.select(Platform("linux", "amd64")).digest.startswith("sha256:cd")
    assert index.select(Platform("linux", "arm64", "v8")).digest == D
    with pytest.raises(ManifestError, match=r"no manifest for platform linux/s390x .*offers: linux/amd64, linux/arm64"):
        index.select(Platform("linux", "s390x"))


@pytest.mark.parametrize(("data", "content_type", "message"), [
    (b"not json", None, "not valid JSON"),
    (b"[]", None, "not a JSON object"),
    (_manifest(), "text/html", "Content-Type 'text/html' but the manifest says"),
    (json.dumps({"schemaVersion": 1, "name": "x"}).encode(), None, "schema 1"),
    (_manifest(mediaType="application/vnd.example+json"), None, "unsupported manifest media type"),
    (_manifest(schemaVersion=3), None, "schemaVersion must be 2"),
    (_manifest(config={"mediaType": "x", "digest": "sha256:zz", "size": 1}), None, "malformed digest"),
    (_manifest(layers=[{"mediaType": "x", "digest": D, "size": -1}]), None, "non-negative"),
    (_manifest(manifests=[]), None, "index disguised"),
    (b" " * (4 << 20) + b"{}", None, "exceeds the 4194304-byte limit"),
])
def test_manifest_refused(data: bytes, content_type: str | None, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(data, content_type)


def _auth(entries: dict) -> dict:
    return {"auths": {k: {"auth": base64.b64encode(v.encode()).decode()} for k, v in entries.items()}}


def test_auth_file_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = tmp_path / "run"
    (runtime / "containers").mkdir(parents=True)
    (runtime / "containers" / "auth.json").write_text(json.dumps(_auth({"reg.example/team": "scoped:pw"})))
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    (home / ".docker" / "config.json").write_text(json.dumps(_auth({"https://index.docker.io/v1/": "hub:pw",
                                                                    "reg.example": "plain:pw"})))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("HOME", str(home))
    assert find_credentials("reg.example", "team/app").username == "scoped"   # repository-scoped key first
    assert find_credentials("reg.example", "other/app").username == "plain"   # then ~/.docker/config.json
    assert find_credentials("docker.io", "library/busybox").username == "hub"
    assert find_credentials("nowhere.example", "x") is None
    explicit = tmp_path / "explicit.json"
    explicit.write_text(json.dumps(_auth({"reg.example": "explicit:pw"})))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(explicit))
    assert find_credentials("reg.example", "team/app").username == "explicit"  # only that file
    explicit.write_text("{not json")
    with pytest.raises(ConfigFileError, match=r"explicit.json: not valid JSON"):
        find_credentials("reg.example", "x")
    explicit.write_text(json.dumps({"auths": {"reg.example": {"auth": "!!!"}}}))
    with pytest.raises(ConfigFileError, match="not base64"):
        find_credentials("reg.example", "x")


def test_challenges() -> None:
    found = parse_challenges('Bearer realm="https://auth.example/token",service="registry.example",'
                             'scope="repository:a/b:pull,push", Basic realm="x y"')
    assert [c.scheme for c in found] == ["bearer", "basic"]
    assert found[0].params == {"realm": "https://auth.example/token", "service": "registry.example",
                               "scope": "repository:a/b:pull,push"}
    assert found[1].realm == "x y"


def test_registries_conf(tmp_path: Path) -> None:
    conf = tmp_path / "registries.conf"
    conf.write_text('[[registry]]\nlocation = "127.0.0.1:5000"\ninsecure = true\n'
                    '[[registry]]\nprefix = "evil.example/ns"\nlocation = "evil.example/ns"\nblocked = true\n'
                    '[registries.insecure]\nregistries = ["old.example"]\n')
    (tmp_path / "registries.conf.d").mkdir()
    (tmp_path / "registries.conf.d" / "10-more.conf").write_text('[[registry]]\nlocation = "*.lab.example"\n'
                                                                  'insecure = true\n')
    hosts = RegistryHosts(load_registries_conf(conf), ())
    assert hosts.schemes("127.0.0.1:5000") == ("https", "http")
    assert hosts.schemes("127.0.0.1:5001") == ("https",)
    assert hosts.schemes("old.example") == ("https", "http")
    assert hosts.schemes("reg.lab.example") == ("https", "http")
    assert hosts.is_blocked("evil.example/ns/app") and not hosts.is_blocked("evil.example/other")
    conf.write_text("[[registry]]\nlocation = 5\n")
    with pytest.raises(ConfigFileError, match="needs a location"):
        load_registries_conf(conf)
    conf.write_text("[[registry\n")
    with pytest.raises(ConfigFileError, match="not valid TOML"):
        load_registries_conf(conf)
    assert load_registries_conf(tmp_path / "missing.conf") == []


def test_store_lookup_by_name_digest_and_pinned_reference(tmp_path: Path) -> None:
    from zoneoci.manifest import Descriptor
    from zoneoci.store import ContentStore

    store = ContentStore(tmp_path / "store")
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": "sha256:" + "0" * 64, "size": 2}, "layers": []}).encode()
    digest = store.put_bytes(manifest)
    target = Descriptor("application/vnd.oci.image.manifest.v1+json", digest, len(manifest))
    store.set_ref(f"127.0.0.1:5000/zone/kernel@{digest}", target, digest, "linux/amd64")
    store.set_ref("127.0.0.1:5000/app:1", target, digest, "linux/amd64")
    # a pinned reference finds the image pulled by digest whatever tag it also carries
    assert store.lookup(f"127.0.0.1:5000/zone/kernel:6.1@{digest}").name == f"127.0.0.1:5000/zone/kernel@{digest}"
    assert store.lookup("127.0.0.1:5000/app:1").name == "127.0.0.1:5000/app:1"
    assert store.lookup(digest[7:19]).target.digest == digest
    with pytest.raises(NotFoundError):
        store.lookup(f"127.0.0.1:5000/other:1@{digest}")


def test_store_blob_renames_are_durable_before_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each blob's data is fsynced before its rename; the blob directory once, before index.json names it."""
    import os

    from zoneoci import store as store_module
    from zoneoci.manifest import Descriptor
    from zoneoci.store import ContentStore

    store = ContentStore(tmp_path / "store")
    events: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def rename(source: Path, target: Path) -> None:
        events.append(f"rename {Path(target).name}")
        real_rename(source, target)

    def fsync_dir(path: Path) -> None:
        events.append(f"dirsync {path.name}")
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            real_fsync(fd)
        finally:
            os.close(fd)

    monkeypatch.setattr(store_module.os, "fsync", fsync)
    monkeypatch.setattr(store_module.os, "rename", rename)
    monkeypatch.setattr(store_module, "_fsync_dir", fsync_dir)
    blobs = [store.put_bytes(data) for data in (b"one", b"two")]
    assert events == ["fsync", f"rename {blobs[0][7:]}", "fsync", f"rename {blobs[1][7:]}"]
    events.clear()
    store.set_ref("127.0.0.1:5000/app:1", Descriptor(mediatypes.OCI_MANIFEST, blobs[0], 3), blobs[0], "linux/amd64")
    assert events == ["dirsync sha256", "fsync", "rename index.json", "dirsync store"]
