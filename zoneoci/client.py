"""A client for the OCI distribution API (``/v2/``): manifests, blobs, tags, push.

One :class:`RegistryClient` serves any number of registries and threads. Per registry it pings ``/v2/`` once
(choosing https, or plain http for a registry marked insecure whose TLS fails), learns the authentication
challenge, and keeps bearer tokens per scope. Every byte that comes back is checked against the digest that
named it; blobs stream to a file object in 64 KiB reads and a lost connection resumes with a ``Range``
request. Counters in :class:`TransferStats` say what crossed the network.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlencode, urljoin

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from zoneoci import mediatypes
from zoneoci.auth import Challenge, Credentials, basic_header, find_credentials, parse_challenges
from zoneoci.digest import Verifier, digest_bytes, parse_digest, short
from zoneoci.errors import AuthError, DigestMismatchError, ManifestError, OCIError, RegistryError
from zoneoci.hosts import RegistryHosts
from zoneoci.manifest import MAX_MANIFEST_BYTES, Descriptor
from zoneoci.reference import Reference, endpoint_host
from zoneoci.transport import RETRY_STATUSES, RetryPolicy, Transport, finish

CHUNK = 1 << 20
READ_SIZE = 64 << 10  # below glibc's mmap threshold: buffers are reused instead of page-faulted in afresh
WRITE_SIZE = 256 << 10  # blob bytes are hashed and written in batches of this (see fetch_blob)
MAX_ERROR_BODY = 64 << 10
MAX_TOKEN_BODY = 1 << 20
DEFAULT_CHUNKED_THRESHOLD = 512 << 20  # blobs above this are uploaded in chunks of DEFAULT_UPLOAD_CHUNK
DEFAULT_UPLOAD_CHUNK = 64 << 20


@dataclass
class TransferStats:
    """What crossed the network (thread-safe): body bytes of blobs and manifests down, blob bytes up."""

    blob_bytes: int = 0
    blobs: int = 0
    manifest_bytes: int = 0
    manifests: int = 0
    uploaded_bytes: int = 0
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    @property
    def downloaded(self) -> int:
        return self.blob_bytes + self.manifest_bytes


@dataclass(frozen=True)
class FetchedManifest:
    descriptor: Descriptor   # media type, digest (verified) and size of ``data``
    data: bytes


class _HashingReader:
    """A file wrapper that hashes what the upload reads, so a corrupt local blob is caught on our side too."""

    def __init__(self, stream: IO[bytes], verifier: Verifier, limit: int | None = None) -> None:
        self.stream, self.verifier, self.left = stream, verifier, limit

    def read(self, size: int = -1) -> bytes:
        if self.left is not None:
            size = self.left if size < 0 else min(size, self.left)
        data = self.stream.read(size)
        if self.left is not None:
            self.left -= len(data)
        self.verifier.update(data)
        return data

    def close(self) -> None:
        self.stream.close()


def _registry_errors(response: urllib3.BaseHTTPResponse) -> str:
    """The registry's own words ({"errors": [{"code", "message"}]}), one line, or the HTTP reason."""
    try:
        data = response.read(MAX_ERROR_BODY, decode_content=True) or b""
    except (Urllib3Error, OSError):
        data = b""
    finally:
        finish(response)
    text = ""
    try:
        errors = json.loads(data).get("errors") or []
        text = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors
                         if isinstance(e, dict))
    except (ValueError, AttributeError):
        pass
    reason = response.reason or ""
    text = " ".join(text.split())[:300]
    return f"{response.status} {reason}".strip() + (f" ({text})" if text else "")


class RegistryClient:
    def __init__(self, hosts: RegistryHosts | None = None, *, auth_paths: list[Path] | None = None,
                 credentials: dict[str, Credentials] | None = None, timeout: float = 30.0,
                 retry: RetryPolicy | None = None, parallel: int = 6) -> None:
        self.hosts = hosts if hosts is not None else RegistryHosts.load()
        self.auth_paths = auth_paths
        self.explicit_credentials = dict(credentials or {})
        self.parallel = max(1, parallel)
        self.transport = Transport(self.hosts, timeout=timeout, retry=retry, pool_size=self.parallel + 4)
        self.stats = TransferStats()
        self._lock = threading.Lock()
        self._bases: dict[str, str] = {}
        self._challenges: dict[str, Challenge | None] = {}
        self._tokens: dict[tuple[str, frozenset[str]], tuple[str, float]] = {}
        self._found_credentials: dict[tuple[str, str], Credentials | None] = {}

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---- connection and authentication -------------------------------------------------------------------

    def _base(self, registry: str) -> str:
        """``https://host[:port]`` (or ``http://`` for an insecure registry without TLS), pinged once."""
        with self._lock:
            if registry in self._bases:
                return self._bases[registry]
        if self.hosts.is_blocked(registry):
            raise RegistryError(f"registry {registry} is blocked in registries.conf")
        host = endpoint_host(registry)
        failure: RegistryError | None = None
        for scheme in self.hosts.schemes(host):
            base = f"{scheme}://{host}"
            try:
                response, _ = self.transport.request("GET", f"{base}/v2/")
            except RegistryError as e:
                failure = failure or e
                continue
            challenge = None
            if response.status == 401:
                offered = parse_challenges(response.headers.get("WWW-Authenticate", ""))
                challenge = next((c for c in offered if c.scheme == "bearer"), None) or \
                    next((c for c in offered if c.scheme == "basic"), None)
                if challenge is None:
                    raise AuthError(f"registry {registry}: 401 without a Bearer or Basic challenge", 401)
            elif response.status not in (200, 404):  # 404: not a v2 registry, but some proxies answer so
                raise RegistryError(f"registry {registry}: GET /v2/: {_registry_errors(response)}",
                                    response.status)
            finish(response)
            with self._lock:
                self._bases[registry] = base
                self._challenges[registry] = challenge
            return base
        assert failure is not None
        raise failure

    def _credentials(self, registry: str, repository: str) -> Credentials | None:
        """From the explicit map, else the auth files (read once per registry and repository)."""
        if registry in self.explicit_credentials:
            return self.explicit_credentials[registry]
        key = (registry, repository)
        with self._lock:
            if key in self._found_credentials:
                return self._found_credentials[key]
        found = find_credentials(registry, repository, self.auth_paths)
        with self._lock:
            self._found_credentials[key] = found
        return found

    def _authorization(self, registry: str, repository: str, scopes: frozenset[str],
                       challenge: Challenge | None) -> str | None:
        if challenge is None:
            return None
        credentials = self._credentials(registry, repository)
        if challenge.scheme == "basic":
            if credentials is None or not credentials.username:
                raise AuthError(f"registry {registry} requires a login and no credentials were found "
                                f"({self._auth_hint()})", 401)
            return basic_header(credentials)
        key = (registry, scopes)
        with self._lock:
            cached = self._tokens.get(key)
        if cached and cached[1] > time.monotonic():
            return f"Bearer {cached[0]}"
        token, lifetime = self._fetch_token(registry, challenge, scopes, credentials)
        with self._lock:
            self._tokens[key] = (token, time.monotonic() + max(10.0, lifetime - 10.0))
        return f"Bearer {token}"

    def _auth_hint(self) -> str:
        from zoneoci.auth import auth_file_paths
        paths = self.auth_paths if self.auth_paths is not None else auth_file_paths()
        return "looked in " + ", ".join(str(p) for p in paths) if paths else "no auth file configured"

    def _fetch_token(self, registry: str, challenge: Challenge, scopes: frozenset[str],
                     credentials: Credentials | None) -> tuple[str, float]:
        realm = challenge.realm
        if not realm.startswith(("https://", "http://")):
            raise AuthError(f"registry {registry}: bearer challenge without a usable realm ({realm[:100]!r})", 401)
        realm_host = realm.split("/", 3)[2]
        if realm.startswith("http://") and not self.hosts.is_insecure(realm_host):
            raise AuthError(f"registry {registry}: refusing to fetch a token over plain http from {realm_host} "
                            "(not marked insecure in registries.conf)", 401)
        params = [("service", challenge.params.get("service", ""))] + [("scope", s) for s in sorted(scopes)]
        headers: dict[str, str] = {}
        body: bytes | None = None
        method = "GET"
        if credentials is not None and credentials.identity_token:
            method, body = "POST", urlencode([("grant_type", "refresh_token"), ("client_id", "zoneoci"),
                                              ("refresh_token", credentials.identity_token), *params]).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            url = realm
        else:
            url = realm + ("&" if "?" in realm else "?") + urlencode(params)
            if credentials is not None and credentials.username:
                headers["Authorization"] = basic_header(credentials)
        response, _ = self.transport.request(method, url, headers, body)
        self.stats.add(requests=1)
        if response.status in (401, 403):
            if credentials is None:
                finish(response)
                raise AuthError(f"registry {registry} requires a login and no credentials were found "
                                f"({self._auth_hint()})", response.status)
            who = f" for user {credentials.username!r}" if credentials.username else " (identity token)"
            raise AuthError(f"registry {registry}: token server refused the credentials{who}: "
                            f"{_registry_errors(response)}", response.status)
        if response.status != 200:
            raise RegistryError(f"registry {registry}: token server {realm_host}: {_registry_errors(response)}",
                                response.status)
        try:
            data = response.read(MAX_TOKEN_BODY + 1, decode_content=True)
            answer = json.loads(data)
            token = answer.get("token") or answer.get("access_token")
            lifetime = float(answer.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError, Urllib3Error):
            raise AuthError(f"registry {registry}: token server sent no usable token", 200) from None
        finally:
            finish(response)
        if not isinstance(token, str) or not token:
            raise AuthError(f"registry {registry}: token server sent no token", 200)
        return token, lifetime

    def request(self, method: str, ref: Reference, path: str, *, actions: str = "pull",
                headers: dict[str, str] | None = None, body: bytes | Callable[[], IO[bytes]] | None = None,
                extra_scopes: tuple[str, ...] = (), absolute: str | None = None,
                ok: tuple[int, ...] = (200,)) -> tuple[urllib3.BaseHTTPResponse, str]:
        """``method /v2/<repository>/<path>`` (or ``absolute``, an upload Location) with authentication; the
        response (body unread) when its status is in ``ok``, else a RegistryError naming the registry's reason."""
        base = self._base(ref.registry)
        url = urljoin(base + "/", absolute) if absolute else f"{base}/v2/{ref.repository}/{path}"
        scopes = frozenset({f"repository:{ref.repository}:{actions}", *extra_scopes})
        with self._lock:
            challenge = self._challenges.get(ref.registry)
        for attempt in range(2):
            send = dict(headers or {})
            authorization = self._authorization(ref.registry, ref.repository, scopes, challenge)
            if authorization:
                send["Authorization"] = authorization
            response, final_url = self.transport.request(method, url, send, body)
            self.stats.add(requests=1)
            if response.status == 401 and attempt == 0:
                offered = parse_challenges(response.headers.get("WWW-Authenticate", ""))
                fresh = next((c for c in offered if c.scheme in ("bearer", "basic")), None)
                finish(response)
                if fresh is None:
                    break
                with self._lock:
                    self._tokens.pop((ref.registry, scopes), None)  # the token we sent (if any) did not do
                    self._challenges[ref.registry] = challenge = fresh
                if fresh.scheme == "bearer" and fresh.params.get("scope"):
                    scopes = scopes | set(fresh.params["scope"].split(" "))
                continue
            if response.status in ok:
                return response, final_url
            what = f"{method} {ref.name} {path or absolute or ''}".rstrip()
            if response.status == 401:
                credentials = self._credentials(ref.registry, ref.repository)
                detail = (f"credentials for user {credentials.username!r} were rejected" if credentials
                          else f"authentication required and no credentials found ({self._auth_hint()})")
                finish(response)
                raise AuthError(f"{what}: 401 Unauthorized: {detail}", 401)
            if response.status == 403:
                raise AuthError(f"{what}: access denied: {_registry_errors(response)}", 403)
            tries = f" after {self.transport.retry.attempts} attempts" if response.status in RETRY_STATUSES else ""
            raise RegistryError(f"{what}: {_registry_errors(response)}{tries}", response.status)
        raise AuthError(f"{method} {ref.name}: 401 Unauthorized without a usable challenge", 401)

    # ---- reading -----------------------------------------------------------------------------------------

    def resolve(self, ref: Reference, *, fetch: bool = False) -> Descriptor | FetchedManifest:
        """What ``ref`` names now: a HEAD gives the descriptor without the body; a registry that does not
        say the digest on HEAD gets a GET (and the fetched manifest comes back, so nothing is fetched twice).
        ``fetch=True`` GETs it at once, one round trip instead of two when the caller wants the body anyway."""
        try:
            if fetch:
                return self.get_manifest(ref, ref.target)
            response, _ = self.request("HEAD", ref, f"manifests/{ref.target}",
                                       headers={"Accept": mediatypes.ACCEPT_MANIFESTS})
        except RegistryError as e:
            if e.status == 404:
                raise RegistryError(f"{ref}: manifest unknown (no such tag or digest in the registry)", 404) from None
            raise
        finish(response)
        digest = response.headers.get("Docker-Content-Digest", "")
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        length = response.headers.get("Content-Length", "")
        if digest and media_type in mediatypes.MANIFEST_TYPES and length.isdigit():
            try:
                parse_digest(digest, "Docker-Content-Digest")
            except OCIError as e:
                raise RegistryError(f"{ref}: registry sent a bad digest header: {e}") from None
            if ref.digest and digest != ref.digest:
                raise DigestMismatchError(f"{ref}: registry says the manifest is {digest}")
            return Descriptor(media_type, digest, int(length))
        return self.get_manifest(ref, ref.target)

    def get_manifest(self, ref: Reference, target: str) -> FetchedManifest:
        """GET a manifest by tag or digest, at most MAX_MANIFEST_BYTES, its digest checked against ``target`` (a
        digest) or the ``Docker-Content-Digest`` the registry sent."""
        response, _ = self.request("GET", ref, f"manifests/{target}", headers={"Accept": mediatypes.ACCEPT_MANIFESTS})
        try:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > MAX_MANIFEST_BYTES:
                raise ManifestError(f"{ref.name}@{target}: manifest of {length} bytes exceeds the "
                                    f"{MAX_MANIFEST_BYTES}-byte limit")
            data = response.read(MAX_MANIFEST_BYTES + 1, decode_content=True)
        except Urllib3Error as e:
            raise RegistryError(f"{ref.name}@{target}: manifest download failed ({e})") from None
        finally:
            finish(response)
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{ref.name}@{target}: manifest exceeds the {MAX_MANIFEST_BYTES}-byte limit")
        self.stats.add(manifest_bytes=len(data), manifests=1)
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        header_digest = response.headers.get("Docker-Content-Digest", "")
        expected = target if target.startswith(("sha256:", "sha512:")) else header_digest
        algorithm = expected.partition(":")[0] if expected else "sha256"
        if algorithm not in ("sha256", "sha512"):
            raise ManifestError(f"{ref.name}@{target}: unsupported digest {expected[:80]!r}")
        actual = digest_bytes(data, algorithm)
        if expected and actual != expected:
            raise DigestMismatchError(f"manifest {ref.name}@{target}: digest mismatch: content hashes to {actual}"
                                      + ("" if expected == target else f", registry said {expected}"))
        return FetchedManifest(Descriptor(media_type, actual, len(data)), data)

    def fetch_blob(self, ref: Reference, descriptor: Descriptor, out: IO[bytes], what: str = "blob") -> int:
        """Stream the blob into ``out`` (at its current position, which must be 0), hashing as it goes; a lost
        connection resumes with a Range request. Raises DigestMismatchError unless the bytes are exactly the
        descriptor's (``out`` then holds garbage the caller throws away). Returns the bytes received."""
        label = f"{what} {short(descriptor.digest)}"
        verifier = Verifier(descriptor.digest, descriptor.size, label)
        received = 0
        attempts = self.transport.retry.attempts
        for attempt in range(attempts):
            headers = {"Range": f"bytes={verifier.count}-"} if verifier.count else {}
            response, _ = self.request("GET", ref, f"blobs/{descriptor.digest}", headers=headers, ok=(200, 206))
            if verifier.count and not _continues_at(response, verifier.count):
                out.seek(0)
                out.truncate()
                verifier = Verifier(descriptor.digest, descriptor.size, label)
            pending = bytearray()
            try:
                # read1: whatever arrived (one TLS record, at most READ_SIZE), so bytes before a dropped connection
                # are kept for the Range resume (read(amt) would discard a partial chunk with the error). They are
                # hashed and written WRITE_SIZE at a time: per 16 KiB record, the calls into hashlib and write()
                # (each a GIL release and reacquire, contended by the other downloads) cost more than the work.
                while chunk := response.read1(READ_SIZE):
                    pending += chunk
                    if len(pending) >= WRITE_SIZE:
                        received += self._keep(pending, verifier, out)
                received += self._keep(pending, verifier, out)
            except Urllib3Error as e:
                received += self._keep(pending, verifier, out)
                if attempt == attempts - 1:
                    raise RegistryError(f"{label}: connection lost after {verifier.count} of {descriptor.size} "
                                        f"bytes ({type(e).__name__}), {attempts} attempts") from None
                self.transport.retries += 1
                self.transport.retry.wait(attempt, None)
                continue
            finally:
                finish(response)
            verifier.check()
            self.stats.add(blobs=1)
            return received
        raise AssertionError("unreachable")

    def _keep(self, pending: bytearray, verifier: Verifier, out: IO[bytes]) -> int:
        """Hash and write the blob bytes in ``pending`` (in order: a Range resume starts after them), empty it and
        return how many there were."""
        count = len(pending)
        verifier.update(pending)
        out.write(pending)
        self.stats.add(blob_bytes=count)
        pending.clear()
        return count

    def blob_exists(self, ref: Reference, digest: str, actions: str = "pull") -> bool:
        response, _ = self.request("HEAD", ref, f"blobs/{digest}", actions=actions, ok=(200, 404))
        finish(response)
        return response.status == 200

    def list_tags(self, ref: Reference) -> list[str]:
        response, _ = self.request("GET", ref, "tags/list")
        try:
            data = json.loads(response.read(MAX_MANIFEST_BYTES, decode_content=True))
            tags = data.get("tags") or []
        except (ValueError, AttributeError) as e:
            raise RegistryError(f"{ref.name}: tags/list is not the expected JSON ({e})") from None
        finally:
            finish(response)
        return [t for t in tags if isinstance(t, str)]

    # ---- writing -----------------------------------------------------------------------------------------

    def push_blob(self, ref: Reference, descriptor: Descriptor, opener: Callable[[], IO[bytes]], *,
                  mount_from: str | None = None, chunk_size: int | None = None,
                  chunked_threshold: int = DEFAULT_CHUNKED_THRESHOLD) -> str:
        """Make ``descriptor``'s blob exist in ``ref``'s repository: ``"exists"``, ``"mounted"`` (cross-repository
        mount from ``mount_from``, a repository on the same registry) or ``"uploaded"`` (one PUT, or PATCH chunks
        of ``chunk_size`` when the blob is larger than ``chunked_threshold`` or a chunk size is given)."""
        if self.blob_exists(ref, descriptor.digest, actions="pull,push"):
            return "exists"
        query = ""
        extra: tuple[str, ...] = ()
        if mount_from and mount_from != ref.repository:
            query = "?" + urlencode({"mount": descriptor.digest, "from": mount_from})
            extra = (f"repository:{mount_from}:pull",)
        response, url = self.request("POST", ref, f"blobs/uploads/{query}", actions="pull,push",
                                     extra_scopes=extra, headers={"Content-Length": "0"}, body=b"", ok=(201, 202))
        finish(response)
        if response.status == 201:
            return "mounted"
        location = urljoin(url, response.headers.get("Location", ""))
        if not response.headers.get("Location"):
            raise RegistryError(f"push {ref.name}: upload started without a Location")
        verifier = Verifier(descriptor.digest, descriptor.size, f"local blob {short(descriptor.digest)}")
        if chunk_size is None and descriptor.size > chunked_threshold:
            chunk_size = DEFAULT_UPLOAD_CHUNK
        if chunk_size:
            location = self._upload_chunks(ref, descriptor, opener, location, chunk_size, verifier)
            body: bytes | Callable[[], IO[bytes]] = b""
            headers = {"Content-Length": "0", "Content-Type": "application/octet-stream"}
        else:
            def body() -> IO[bytes]:
                nonlocal verifier
                verifier = Verifier(descriptor.digest, descriptor.size, f"local blob {short(descriptor.digest)}")
                return _HashingReader(opener(), verifier)  # type: ignore[return-value]
            headers = {"Content-Length": str(descriptor.size), "Content-Type": "application/octet-stream"}
        separator = "&" if "?" in location else "?"
        response, _ = self.request("PUT", ref, "", actions="pull,push", absolute=location + separator +
                                   urlencode({"digest": descriptor.digest}), headers=headers, body=body, ok=(201,))
        finish(response)
        verifier.check()
        self.stats.add(uploaded_bytes=descriptor.size)
        return "uploaded"

    def _upload_chunks(self, ref: Reference, descriptor: Descriptor, opener: Callable[[], IO[bytes]],
                       location: str, chunk_size: int, verifier: Verifier) -> str:
        offset = 0
        while offset < descriptor.size:
            length = min(chunk_size, descriptor.size - offset)
            start = offset

            def chunk(start: int = start, length: int = length) -> IO[bytes]:
                stream = opener()
                stream.seek(start)
                return _HashingReader(stream, Verifier(descriptor.digest, None, "chunk"), length)  # type: ignore

            response, url = self.request(
                "PATCH", ref, "", actions="pull,push", absolute=location, body=chunk, ok=(202,),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(length),
                         "Content-Range": f"{start}-{start + length - 1}"})
            finish(response)
            location = urljoin(url, response.headers.get("Location") or location)
            offset += length
        with opener() as stream:  # the chunks were hashed piecewise; hash the whole once for the final check
            for block in iter(lambda: stream.read(CHUNK), b""):
                verifier.update(block)
        return location

    def put_manifest(self, ref: Reference, data: bytes, media_type: str, target: str | None = None) -> str:
        """PUT a manifest or index under ``target`` (a tag, or its digest; default: the reference's tag or
        digest); returns its digest."""
        digest = digest_bytes(data)
        target = target or ref.tag or digest
        if target.startswith("sha256:") and target != digest:
            raise DigestMismatchError(f"push {ref.name}: manifest hashes to {digest}, not {target}")
        response, _ = self.request("PUT", ref, f"manifests/{target}", actions="pull,push", body=data,
                                   headers={"Content-Type": media_type, "Content-Length": str(len(data))},
                                   ok=(200, 201, 202))
        finish(response)
        said = response.headers.get("Docker-Content-Digest")
        if said and said != digest:
            raise DigestMismatchError(f"push {ref.name}:{target}: registry stored the manifest as {said}, "
                                      f"we sent {digest}")
        return digest


def _continues_at(response: urllib3.BaseHTTPResponse, offset: int) -> bool:
    """Does this 206 answer continue exactly at ``offset`` (``Content-Range: bytes N-M/T``)?"""
    if response.status != 206:
        return False
    value = response.headers.get("Content-Range", "")
    try:
        start = int(value.split(" ", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return False
    return start == offset
