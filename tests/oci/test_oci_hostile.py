"""A hostile or broken registry: each failure is one clear line and nothing half-written becomes visible."""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hostile import OCI_INDEX, Content, Handler, HostileServer, sha
from registrylab import make_pki

from zoneoci.client import RegistryClient
from zoneoci.errors import OCIError
from zoneoci.hosts import RegistryHosts, RegistryRule
from zoneoci.manifest import Platform
from zoneoci.pull import PullError, pull
from zoneoci.store import BlobBusy, ContentStore
from zoneoci.transport import RetryPolicy

BIG = random.Random(1).randbytes(300_000)
SMALL = b"small layer" * 10


@pytest.fixture
def content() -> Content:
    c = Content()
    c.add_image([BIG, SMALL], tag="1")
    return c


@pytest.fixture
def server(content: Content) -> Iterator[HostileServer]:
    srv = HostileServer(content)
    yield srv
    srv.stop()


def make_client(*insecure: str, auth: Path | None = None, certs: tuple[Path, ...] = (),
                attempts: int = 3) -> RegistryClient:
    hosts = RegistryHosts([RegistryRule(h, insecure=True) for h in insecure], certs)
    return RegistryClient(hosts, auth_paths=[auth] if auth else [],
                          retry=RetryPolicy(attempts=attempts, backoff=0.01, max_wait=0.05))


@pytest.fixture
def client(server: HostileServer) -> Iterator[RegistryClient]:
    with make_client(server.host) as c:
        yield c


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "store")


def assert_refused(store: ContentStore, client: RegistryClient, ref: str, *needles: str) -> str:
    """The pull fails with one line containing ``needles``; the store names nothing, holds no partial file, and
    every blob in it hashes to its name."""
    with pytest.raises(PullError) as err:
        pull(ref, store, client)
    line = str(err.value)
    assert "\n" not in line and len(line) < 600, line
    for needle in needles:
        assert needle in line, line
    assert store.records() == []
    assert not list(store.ingest_dir.glob("*.partial"))
    for blob in (store.blobs / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    return line


def blob_hook(digest: str, answer: object) -> object:
    def hook(h: Handler) -> bool:
        if h.command == "GET" and h.path.endswith(f"/blobs/{digest}"):
            answer(h)  # type: ignore[operator]
            return True
        return False
    return hook


def test_baseline_pull_works(server: HostileServer, client: RegistryClient, store: ContentStore) -> None:
    image = pull(f"{server.host}/app:1", store, client)
    assert image.digest == server.content.tags["1"]


def test_wrong_digest(server: HostileServer, client: RegistryClient, store: ContentStore) -> None:
    evil = bytes(reversed(BIG))
    server.hooks.append(blob_hook(sha(BIG), lambda h: h.send(200, evil)))
    assert_refused(store, client, f"{server.host}/app:1", "layer 0 sha256:", "digest mismatch: content hashes to")
    assert not store.has(sha(BIG))


def test_truncated_blob_connection_drop_after_retries(server: HostileServer, client: RegistryClient,
                                                      store: ContentStore) -> None:
    def drop(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(BIG)))
        h.end_headers()
        h.wfile.write(BIG[:1000])
        h.wfile.flush()
        h.close_connection = True
    server.hooks.append(blob_hook(sha(BIG), drop))
    assert_refused(store, client, f"{server.host}/app:1", "connection lost after 1000 of 300000 bytes",
                   "3 attempts")


def test_truncated_once_resumes_with_range(server: HostileServer, client: RegistryClient,
                                           store: ContentStore) -> None:
    calls = []

    def flaky(h: Handler) -> None:
        calls.append(h.headers.get("Range"))
        if len(calls) == 1:
            h.send_response(200)
            h.send_header("Content-Length", str(len(BIG)))
            h.end_headers()
            h.wfile.write(BIG[:100_000])
            h.close_connection = True
        else:
            start = int(h.headers["Range"].split("=")[1].rstrip("-"))
            h.send(206, BIG[start:], {"Content-Range": f"bytes {start}-{len(BIG) - 1}/{len(BIG)}"})
    server.hooks.append(blob_hook(sha(BIG), flaky))
    pull(f"{server.host}/app:1", store, client)
    assert calls == [None, "bytes=100000-"] and store.has(sha(BIG))
    assert client.stats.blob_bytes == len(BIG) + len(SMALL) + store.size(
        store.manifest(server.content.tags["1"]).config.digest)  # nothing downloaded twice


def test_short_body(server: HostileServer, client: RegistryClient, store: ContentStore) -> None:
    server.hooks.append(blob_hook(sha(BIG), lambda h: h.send(200, BIG[:5000])))
    assert_refused(store, client, f"{server.host}/app:1", "truncated: got 5000 of 300000 bytes")


def test_blob_longer_than_its_descriptor_is_cut_off(server: HostileServer, client: RegistryClient,
                                                    store: ContentStore) -> None:
    server.hooks.append(blob_hook(sha(SMALL), lambda h: h.send(200, SMALL + b"x" * 1_000_000)))
    assert_refused(store, client, f"{server.host}/app:1", f"more than the {len(SMALL)} bytes its descriptor says")


@pytest.mark.parametrize("with_length", [True, False])
def test_oversized_manifest(with_length: bool, server: HostileServer, client: RegistryClient,
                            store: ContentStore) -> None:
    def huge(h: Handler) -> bool:
        if h.command != "GET" or "/manifests/" not in h.path:
            return False
        h.send_response(200)
        h.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        if with_length:
            h.send_header("Content-Length", str(5 << 20))
        else:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        with contextlib.suppress(OSError):  # the client stopped reading: good
            h.wfile.write(b" " * (5 << 20))
        return True
    server.hooks.append(huge)
    assert_refused(store, client, f"{server.host}/app:1", "exceeds the 4194304-byte limit")


def test_wrong_media_type(server: HostileServer, content: Content, client: RegistryClient,
                          store: ContentStore) -> None:
    digest = content.tags["1"]
    content.manifests[digest] = ("text/html", content.manifests[digest][1])
    assert_refused(store, client, f"{server.host}/app:1", "registry says Content-Type 'text/html' but the manifest "
                   "says mediaType 'application/vnd.oci.image.manifest.v1+json'")
    content.add_manifest({"schemaVersion": 2, "mediaType": "application/vnd.example.artifact+json"}, tag="art")
    assert_refused(store, client, f"{server.host}/app:art", "unsupported manifest media type")
    config = content.add_blob(b"{}")
    content.add_manifest({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "config": {"mediaType": "application/vnd.example.config", **config}, "layers": []},
                         tag="notimage")
    assert_refused(store, client, f"{server.host}/app:notimage", "not a container image: config media type")


def test_redirect_elsewhere(content: Content, store: ContentStore, tmp_path: Path) -> None:
    """A blob redirected to another server: followed (object storage does this) without our credentials, and
    the bytes it serves are still checked against the digest; loops, file: URLs and https->http are refused."""
    main, other = HostileServer(content), HostileServer(Content())
    main.token = "tok"
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {main.host: {"auth": "YWxpY2U6d29uZGVy"}}}))  # alice:wonder
    try:
        def to_other(h: Handler) -> None:
            h.send(307, b"", {"Location": f"http://{other.host}/storage/big"})
        main.hooks.append(blob_hook(sha(BIG), to_other))
        other.hooks.append(lambda h: h.send(200, BIG) or True)
        with make_client(main.host, other.host, auth=auth) as c:
            pull(f"{main.host}/app:1", store, c)  # legitimate redirect: works
        assert any(r.path == "/storage/big" for r in other.requests)
        assert all("Authorization" not in r.headers for r in other.requests)
        assert any("Authorization" in r.headers for r in main.requests)
        fresh = ContentStore(tmp_path / "fresh")
        other.hooks.insert(0, lambda h: h.send(200, BIG[::-1]) or True)
        with make_client(main.host, other.host, auth=auth) as c:
            assert_refused(fresh, c, f"{main.host}/app:1", "digest mismatch")
        main.hooks[:] = [blob_hook(sha(BIG), lambda h: h.send(302, b"", {"Location": h.path}))]
        with make_client(main.host, auth=auth) as c:
            assert_refused(fresh, c, f"{main.host}/app:1", "more than 5 redirects")
        main.hooks[:] = [blob_hook(sha(BIG), lambda h: h.send(302, b"", {"Location": "file:///etc/passwd"}))]
        with make_client(main.host, auth=auth) as c:
            assert_refused(fresh, c, f"{main.host}/app:1", "refusing redirect to 'file:///etc/passwd'")
    finally:
        main.stop()
        other.stop()


def test_redirect_from_https_to_http_refused(content: Content, store: ContentStore, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    secure = HostileServer(content, tls=(pki.server_cert, pki.server_key))
    plain = HostileServer(content)
    try:
        (tmp_path / "certs.d" / secure.host).mkdir(parents=True)
        (tmp_path / "certs.d" / secure.host / "ca.crt").write_bytes(pki.ca_cert.read_bytes())
        secure.hooks.append(blob_hook(sha(BIG), lambda h: h.send(307, b"", {
            "Location": f"http://{plain.host}{h.path}"})))
        with make_client(certs=(tmp_path / "certs.d",)) as c:
            assert_refused(store, c, f"{secure.host}/app:1", "refusing redirect from https to plain http",
                           "not marked insecure")
        with make_client(certs=()) as c:  # and without the CA, TLS itself fails, clearly
            assert_refused(store, c, f"{secure.host}/app:1", "TLS certificate not trusted")
    finally:
        secure.stop()
        plain.stop()


def test_tag_moves_during_pull(server: HostileServer, content: Content, client: RegistryClient,
                               store: ContentStore) -> None:
    first = content.tags["1"]
    second = content.add_image([b"another image"])
    older = content.add_image([b"an older image"])
    ref = f"{server.host}/app:1"

    def move_after(method: str) -> Callable[[Handler], bool]:
        def hook(h: Handler) -> bool:
            if h.command == method and h.path.endswith("/manifests/1"):
                digest = content.tags["1"]
                media_type, data = content.manifests[digest]
                h.send(200, data, {"Content-Type": media_type, "Docker-Content-Digest": digest}, length=len(data))
                content.tags["1"] = second  # moved right after we resolved it
                return True
            return False
        return hook

    # a new name is resolved by GETting its manifest: one consistent image, the one the tag named then
    server.hooks.append(move_after("GET"))
    assert pull(ref, store, client).digest == first
    assert not store.has(sha(b"another image"))
    # a name the store has is resolved with a HEAD, then fetched by digest: the same holds
    server.hooks.clear()
    known, deleted = (ContentStore(store.root.parent / name) for name in ("known", "deleted"))
    content.tags["1"] = older
    pull(ref, known, client)
    pull(ref, deleted, client)
    content.tags["1"] = first
    server.hooks.append(move_after("HEAD"))
    assert pull(ref, known, client).digest == first
    assert not known.has(sha(b"another image"))
    # moved and the manifest the HEAD named deleted: a clear error; the name keeps what it named before
    content.tags["1"] = first

    def move_and_delete(h: Handler) -> bool:
        answered = move_after("HEAD")(h)
        if answered:
            content.manifests.pop(first, None)
        return answered
    server.hooks[:] = [move_and_delete]
    with pytest.raises(PullError, match=rf"manifests/{first}: 404 Not Found \(MANIFEST_UNKNOWN"):
        pull(ref, deleted, client)
    assert deleted.lookup(ref).target.digest == older


def test_index_without_our_platform(server: HostileServer, content: Content, client: RegistryClient,
                                    store: ContentStore) -> None:
    arm = content.add_image([b"arm"], arch="arm64")
    _, data = content.manifests[arm]
    content.add_manifest({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "size": len(data),
         "platform": {"os": "linux", "architecture": "arm64"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "size": len(data),
         "platform": {"os": "windows", "architecture": "amd64"}}]}, tag="multi")
    assert_refused(store, client, f"{server.host}/app:multi",
                   "no manifest for platform linux/amd64 in the index (it offers: linux/arm64, windows/amd64)")


def test_bearer_token_auth(content: Content, store: ContentStore, tmp_path: Path) -> None:
    srv = HostileServer(content)
    srv.token = "secret-token"
    try:
        good = tmp_path / "good.json"
        good.write_text(json.dumps({"auths": {srv.host: {"auth": "YWxpY2U6d29uZGVy"}}}))     # alice:wonder
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"auths": {srv.host: {"auth": "YWxpY2U6bm9wZQ=="}}}))      # alice:nope
        with make_client(srv.host, auth=good) as c:
            pull(f"{srv.host}/app:1", store, c)
        token_requests = [r for r in srv.requests if r.path.startswith("/token")]
        assert len(token_requests) == 1 and "scope=repository%3Aapp%3Apull" in token_requests[0].path
        fresh = ContentStore(tmp_path / "fresh")
        with make_client(srv.host, auth=bad) as c:
            assert_refused(fresh, c, f"{srv.host}/app:1", "token server refused the credentials for user 'alice'")
        with make_client(srv.host) as c:
            assert_refused(fresh, c, f"{srv.host}/app:1", "requires a login and no credentials were found")
    finally:
        srv.stop()


def test_403_429_500(server: HostileServer, client: RegistryClient, store: ContentStore) -> None:
    server.hooks[:] = [blob_hook(sha(BIG), lambda h: h.error_json(403, "DENIED", "requested access to the "
                                                                 "resource is denied"))]
    assert_refused(store, client, f"{server.host}/app:1", "access denied: 403 Forbidden (DENIED: requested access")
    # 429 twice, then served: the pull succeeds after backing off
    budget = [2]

    def limited(h: Handler) -> bool:
        if "/manifests/" in h.path and budget[0] > 0:
            budget[0] -= 1
            h.error_json(429, "TOOMANYREQUESTS", "slow down", {"Retry-After": "0"})
            return True
        return False
    server.hooks[:] = [limited]
    pull(f"{server.host}/app:1", store, client)
    assert client.transport.retries >= 2
    fresh = ContentStore(store.root.parent / "fresh")
    server.hooks[:] = [lambda h: "/manifests/" in h.path and (h.error_json(429, "TOOMANYREQUESTS", "slow down",
                                                                            {"Retry-After": "0"}) or True)]
    assert_refused(fresh, client, f"{server.host}/app:1", "GET", "manifests/1: 429 Too Many Requests "
                   "(TOOMANYREQUESTS: slow down) after 3 attempts")  # a new name: its manifest GET, with the reason
    server.hooks[:] = [lambda h: "/blobs/" in h.path and (h.error_json(500, "UNKNOWN", "boom") or True)]
    assert_refused(fresh, client, f"{server.host}/app:1", "500 Internal Server Error (UNKNOWN: boom) after 3 attempts")
    server.hooks[:] = [lambda h: h.path == "/v2/" and (h.send(401, b"", {"WWW-Authenticate": "Negotiate"}) or True)]
    with make_client(server.host) as c:
        assert_refused(fresh, c, f"{server.host}/app:1", "401 without a Bearer or Basic challenge")


def test_failed_pull_keeps_verified_blobs_for_the_next(server: HostileServer, client: RegistryClient,
                                                       store: ContentStore) -> None:
    server.hooks.append(blob_hook(sha(BIG), lambda h: h.error_json(500, "UNKNOWN", "disk on fire")))
    assert_refused(store, client, f"{server.host}/app:1", "disk on fire")
    server.hooks.clear()
    before = client.stats.blob_bytes
    pull(f"{server.host}/app:1", store, client)
    assert client.stats.blob_bytes - before == len(BIG)  # the small layer and config were already verified


def test_gc_never_removes_what_a_running_pull_holds(server: HostileServer, client: RegistryClient,
                                                    store: ContentStore) -> None:
    release = threading.Event()
    started = threading.Event()

    def slow(h: Handler) -> None:
        started.set()
        release.wait(30)
        h.send(200, BIG)
    server.hooks.append(blob_hook(sha(BIG), slow))
    result: list[object] = []
    puller = threading.Thread(target=lambda: result.append(pull(f"{server.host}/app:1", store, client)))
    puller.start()
    assert started.wait(10)
    with pytest.raises(BlobBusy):
        store.gc(wait=False)  # the pull holds its lease: GC does not run
    gc_done: list[object] = []
    collector = threading.Thread(target=lambda: gc_done.append(store.gc()))
    collector.start()
    release.set()
    puller.join(30)
    collector.join(30)
    assert result and gc_done and gc_done[0].blobs_removed == 0  # type: ignore[attr-defined]
    store.image_layout(store.lookup(f"{server.host}/app:1").manifest)


def test_corrupt_blob_in_store_is_caught_on_use(server: HostileServer, client: RegistryClient,
                                                store: ContentStore) -> None:
    image = pull(f"{server.host}/app:1", store, client)
    config = image.manifest.config.digest
    path = store.blob_path(config)
    path.chmod(0o644)
    path.write_bytes(b'{"tampered": true}')
    with pytest.raises(OCIError, match=r"is corrupt .* it was removed: pull the image again"):
        store.image_layout(image.record.manifest)
    assert not store.has(config)
    pull(f"{server.host}/app:1", store, client)
    assert store.image_layout(image.record.manifest).is_dir()


def test_platform_option_parsing() -> None:
    assert str(Platform.parse("linux/arm64/v8")) == "linux/arm64/v8"
    with pytest.raises(OCIError, match="invalid platform"):
        Platform.parse("amd64")
