"""Against a real registry (Debian's docker-registry 2.8, TLS with a test CA, htpasswd auth), filled by skopeo."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from ocisupport import REPO, PushedImages, random_layer
from registrylab import LayoutBuilder, Registry, make_pki

from zoneoci.client import RegistryClient
from zoneoci.errors import AuthError, OCIError, RegistryError
from zoneoci.hosts import RegistryHosts
from zoneoci.manifest import Platform
from zoneoci.pull import PullError, local_image, pull
from zoneoci.push import push
from zoneoci.reference import parse_reference
from zoneoci.store import ContentStore

pytestmark = pytest.mark.slow


def _open_with_zonebuild(layout: str, dest: Path) -> Path:
    from host.zonebuild_import import ensure_zonebuild

    ensure_zonebuild()
    from zonebuild.oci import open_image, unpack_image

    return unpack_image(open_image(layout), dest, preserve_owner=False)


@pytest.mark.parametrize("fmt", ["v2s2", "oci"])
def test_pull_then_second_pull_downloads_nothing(fmt: str, registry: Registry, images: PushedImages,
                                                 client: RegistryClient, store: ContentStore, tmp_path: Path) -> None:
    ref = f"{registry.host}/{images.repos[fmt]}"
    image = pull(ref, store, client)
    expected = "application/vnd.docker.distribution.manifest.v2+json" if fmt == "v2s2" else \
        "application/vnd.oci.image.manifest.v1+json"
    assert image.record.target.media_type == expected
    assert image.record.platform == "linux/amd64"
    assert client.stats.blobs == 3 and client.stats.blob_bytes > 500_000
    assert client.stats.requests == 4  # a new name: the manifest GET (no HEAD first), then config and two layers
    assert image.digest == json.loads(subprocess.run(
        ["skopeo", "inspect", "--cert-dir", str(registry.certs_d / registry.host), "--creds",
         "zoneuser:s3cret-pass", f"docker://{ref}"], capture_output=True, text=True, check=True).stdout)["Digest"]
    # the store's one-image layout is what zonebuild's verified reader (root images) opens
    _record, layout = local_image(ref, store, policy="never")
    root = _open_with_zonebuild(layout, tmp_path / "rootfs")
    assert (root / "etc" / "app.conf").read_text() == "answer=42\n" and (root / "bin" / "busybox").is_file()

    before = client.stats.downloaded
    again = pull(ref, store, client)
    assert again.digest == image.digest and client.stats.downloaded == before  # 0 bytes the second time
    pinned = parse_reference(ref).with_digest(image.digest)
    requests = client.stats.requests
    by_digest = pull(pinned, store, client)
    assert client.stats.requests == requests  # pinned and present: not even a HEAD
    assert by_digest.record.name == f"{registry.host}/test/app@{image.digest}"
    # the host's entry point pulls what is missing
    fresh = ContentStore(tmp_path / "fresh")
    record, _ = local_image(str(pinned), fresh, client)
    assert record.target.digest == image.digest


def test_index_platform_selection(registry: Registry, images: PushedImages, client: RegistryClient,
                                  store: ContentStore) -> None:
    ref = f"{registry.host}/{images.repos['index']}"
    amd = pull(ref, store, client)
    assert amd.record.target.media_type == "application/vnd.oci.image.index.v1+json"
    assert amd.record.manifest != amd.digest and amd.record.platform == "linux/amd64"
    arm_store = ContentStore(store.root.parent / "arm")
    arm = pull(ref, arm_store, client, platform=Platform("linux", "arm64"))
    assert arm.digest == amd.digest and arm.record.manifest != amd.record.manifest
    with pytest.raises(PullError, match=r"no manifest for platform linux/s390x in the index \(it offers: "
                                        r"linux/amd64, linux/arm64\)"):
        pull(ref, store, client, platform=Platform("linux", "s390x"))
    with pytest.raises(PullError, match="image is linux/arm64, not linux/amd64"):
        pull(f"{registry.host}/{images.repos['armonly']}", store, client)


def test_auth_and_trust_errors_are_one_line(registry: Registry, images: PushedImages, hosts: RegistryHosts,
                                            store: ContentStore, tmp_path: Path) -> None:
    ref = f"{registry.host}/{images.repos['oci']}"
    with RegistryClient(hosts, auth_paths=[tmp_path / "none.json"]) as anonymous, \
            pytest.raises(PullError) as no_creds:
        pull(ref, store, anonymous)
    assert isinstance(no_creds.value.__cause__, AuthError)
    assert "requires a login and no credentials were found (looked in" in str(no_creds.value)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"auths": {registry.host: {"auth": "em9uZXVzZXI6bm9wZQ=="}}}))  # zoneuser:nope
    with RegistryClient(hosts, auth_paths=[wrong]) as bad, pytest.raises(PullError) as rejected:
        pull(ref, store, bad)
    assert "401 Unauthorized: credentials for user 'zoneuser' were rejected" in str(rejected.value)
    untrusted = RegistryHosts([], (tmp_path / "empty-certs.d",))
    with RegistryClient(untrusted, auth_paths=[registry.authfile]) as c, pytest.raises(PullError) as tls:
        pull(ref, store, c)
    assert "TLS certificate not trusted" in str(tls.value) and "\n" not in str(tls.value)
    with RegistryClient(hosts, auth_paths=[registry.authfile]) as c, pytest.raises(PullError) as missing:
        pull(f"{registry.host}/test/app:no-such-tag", store, c)
    assert "manifest unknown" in str(missing.value)
    assert store.records() == []


def test_certs_d_ca_first_then_the_system_cas(registry: Registry, images: PushedImages, store: ContentStore,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry with a CA of its own in certs.d is first verified against that CA alone (the system bundle is
    not loaded); when that fails the system CAs are added, so trust is certs.d's CAs and the system's, as
    before. SSL_CERT_FILE stands in for the system bundle here."""
    ref = f"{registry.host}/{images.repos['oci']}"
    with RegistryClient(RegistryHosts([], (registry.certs_d,)), auth_paths=[registry.authfile]) as own:
        pull(ref, store, own)
        assert registry.host in own.transport._narrow and not own.transport._widened
    other = tmp_path / "other-certs.d"
    (other / registry.host).mkdir(parents=True)
    (other / registry.host / "ca.crt").write_bytes(make_pki(tmp_path / "other-pki").ca_cert.read_bytes())
    with RegistryClient(RegistryHosts([], (other,)), auth_paths=[registry.authfile]) as wrong_ca, \
            pytest.raises(PullError, match="TLS certificate not trusted"):
        pull(ref, ContentStore(tmp_path / "s1"), wrong_ca)
    monkeypatch.setenv("SSL_CERT_FILE", str(registry.certs_d / registry.host / "ca.crt"))
    with RegistryClient(RegistryHosts([], (other,)), auth_paths=[registry.authfile]) as system:
        pull(ref, ContentStore(tmp_path / "s2"), system)
        assert registry.host in system.transport._widened and registry.host not in system.transport._narrow


def _pull_counting(ref: str, store_root: Path, registry: Registry, out: dict, key: str) -> None:
    hosts = RegistryHosts.load(registry.registries_conf, (registry.certs_d,))
    with RegistryClient(hosts, auth_paths=[registry.authfile]) as c:
        pull(ref, ContentStore(store_root), c)
        out[key] = c.stats.blob_bytes


def test_concurrent_pulls_download_each_blob_once(registry: Registry, images: PushedImages, tmp_path: Path) -> None:
    ref = f"{registry.host}/{images.repos['multi']}"
    # threads of one process
    counts: dict[str, int] = {}
    threads = [threading.Thread(target=_pull_counting, args=(ref, tmp_path / "t", registry, counts, str(i)))
               for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store = ContentStore(tmp_path / "t")
    image = store.manifest(store.lookup(ref).manifest)
    total = image.config.size + sum(layer.size for layer in image.layers)
    assert sorted(counts) == ["0", "1", "2"] and sum(counts.values()) == total
    # separate processes
    code = ("import json, sys; sys.path[:0] = ['tests/oci', 'tests']; from test_oci_registry import _pull_counting;"
            "from registrylab import Registry; from pathlib import Path; out = {};"
            "reg = Registry(sys.argv[2], None, Path(), Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]));"
            "_pull_counting(sys.argv[1], Path(sys.argv[6]), reg, out, 'n'); print(out['n'])")
    args = [ref, registry.host, str(registry.certs_d), str(registry.authfile), str(registry.registries_conf),
            str(tmp_path / "p")]
    procs = [subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert sum(int(o[0]) for o in outputs) == total
    assert not list((tmp_path / "p" / "ingest").glob("*.partial"))


def test_push_mount_chunked_and_by_digest(registry: Registry, images: PushedImages, client: RegistryClient,
                                          store: ContentStore, tmp_path: Path) -> None:
    source = f"{registry.host}/{images.repos['oci']}"
    pulled = pull(source, store, client)
    # from the store to another repository of the same registry: every blob is mounted, none uploaded
    result = push(f"{registry.host}/test/copied:1", client, store=store, image=source)
    assert result.digest == pulled.digest and set(result.blobs.values()) == {"mounted"}
    assert registry.skopeo_inspect("test/copied:1")["layers"] == json.loads(
        store.read_blob(pulled.record.manifest))["layers"]
    # an OCI layout (what zonebuild writes), in 64 KiB chunks, by digest only, then tagged
    layout = LayoutBuilder(tmp_path / "layout")
    desc = layout.image([random_layer("data/x", 300_000, 7), random_layer("data/y", 1000, 8)])
    layout.name(desc, "kernel")
    uploaded = push(f"{registry.host}/test/chunked@{desc['digest']}", client, layout=tmp_path / "layout",
                    chunk_size=64 << 10)
    assert uploaded.digest == desc["digest"] and set(uploaded.blobs.values()) == {"uploaded"}
    assert client.stats.uploaded_bytes >= 300_000
    tagged = push(f"{registry.host}/test/chunked:v1", client, layout=tmp_path / "layout")
    assert set(tagged.blobs.values()) == {"exists"}
    fresh = ContentStore(tmp_path / "fresh")
    again = pull(f"{registry.host}/test/chunked:v1", fresh, client)
    assert again.digest == desc["digest"]
    # an index of which only linux/amd64 was pulled: that manifest is pushed, the rest named as skipped
    pull(f"{registry.host}/{images.repos['index']}", store, client)
    partial = push(f"{registry.host}/test/partial:1", client, store=store,
                   image=f"{registry.host}/{images.repos['index']}")
    assert partial.skipped_platforms == ["linux/arm64"]
    assert partial.digest == store.lookup(f"{registry.host}/{images.repos['index']}").manifest
    with pytest.raises(OCIError, match="no image 'nothing:here' in the content store"):
        push(f"{registry.host}/test/x:1", client, store=store, image="nothing:here")


def test_cli_pull_images_rmi_prune(registry: Registry, images: PushedImages, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "zoneoci"]
    common = ["--store", str(tmp_path / "store"), "--cert-dir", str(registry.certs_d), "--authfile",
              str(registry.authfile), "--registries-conf", str(registry.registries_conf)]

    def cli(*args: str, opts: bool = True) -> subprocess.CompletedProcess:
        verb, rest = args[0], list(args[1:])
        extra = common if opts else ["--store", str(tmp_path / "store")]
        return subprocess.run([*base, verb, *extra, *rest], capture_output=True, text=True, cwd=REPO, timeout=120)

    app = f"{registry.host}/{images.repos['oci']}"
    multi = f"{registry.host}/{images.repos['multi']}"
    first = cli("pull", app)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().startswith("sha256:") and "downloaded" in first.stderr
    assert cli("pull", multi).returncode == 0
    listing = subprocess.run([*base, "--json", "images", "--store", str(tmp_path / "store")], capture_output=True,
                             text=True, cwd=REPO)
    rows = json.loads(listing.stdout)
    assert sorted(r["name"] for r in rows) == sorted([app, multi]) and all(r["size"] > 0 for r in rows)
    table = cli("images", opts=False).stdout.splitlines()
    assert table[0].split()[:3] == ["REPOSITORY", "TAG", "DIGEST"] and len(table) == 3
    blobs_before = len(list((tmp_path / "store" / "blobs" / "sha256").iterdir()))
    removed = cli("rmi", multi, opts=False)
    assert removed.returncode == 0 and f"untagged: {multi}" in removed.stdout and "deleted" in removed.stdout
    blobs_after = len(list((tmp_path / "store" / "blobs" / "sha256").iterdir()))
    assert blobs_after < blobs_before  # multi's own blobs went, the shared busybox layer stayed
    assert (tmp_path / "store" / "blobs" / "sha256" / _busybox_digest(tmp_path / "store", app)).is_file()
    again = cli("rmi", multi, opts=False)
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "no image" in again.stderr
    assert cli("prune", opts=False).stdout.startswith("deleted 0 blobs")
    bad = cli("pull", f"{registry.host}/Test/App")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "lowercase" in bad.stderr
    pushed = cli("push", app, f"{registry.host}/test/cli-pushed:2")
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip() == registry.skopeo_inspect("test/cli-pushed:2", raw=False)["Digest"]
    nowhere = cli("push", "not-in-store:1", f"{registry.host}/test/x:1")
    assert nowhere.returncode == 1 and nowhere.stderr.count("\n") == 1 and "no image" in nowhere.stderr


def _busybox_digest(root: Path, ref: str) -> str:
    store = ContentStore(root)
    return store.manifest(store.lookup(ref).manifest).layers[0].digest.split(":", 1)[1]


def test_unreachable_registry_is_one_line(store: ContentStore, tmp_path: Path) -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        from zoneoci.transport import RetryPolicy
        with RegistryClient(RegistryHosts([], ()), auth_paths=[],
                            retry=RetryPolicy(attempts=2, backoff=0.01)) as c, pytest.raises(PullError) as err:
            pull(f"127.0.0.1:{port}/app:1", store, c)
    assert isinstance(err.value.__cause__, RegistryError)
    assert "connection refused (after 2 attempts)" in str(err.value)


def test_zonebuild_layout_round_trip_to_a_root_image(registry: Registry, client: RegistryClient,
                                                     store: ContentStore, tmp_path: Path) -> None:
    """zonebuild's busybox OCI layout pushed (as zonebuild will push the kernel and extensions), pulled back
    by reference, and turned into a squashfs root image from the store's layout view, as the host will."""
    from host.zonebuild_import import ensure_zonebuild

    ensure_zonebuild()
    from zonebuild.busybox_image import cached_busybox_image
    from zonebuild.rootimage import build_root_image

    ref = f"{registry.host}/zone/busybox:latest"
    pushed = push(ref, client, layout=cached_busybox_image())
    record, layout = local_image(ref, store, client)
    assert record.target.digest == pushed.digest
    root = build_root_image(layout, tmp_path / "root", use_cache=False)
    assert root.path.stat().st_size > 100_000 and root.config.get("Cmd") == ["sh"]
