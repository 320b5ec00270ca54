"""HTTP for the registry client: urllib3 connection pools, retries with backoff, and a strict redirect policy.

* one pool per (scheme, host, port), shared by the client's threads; TLS contexts from :mod:`zoneoci.hosts`;
  a registry with its own CA in certs.d is first verified against it alone, and against the system CAs as
  well only if that fails (loading the system bundle costs a command-line pull ~35 ms);
* 429 (honouring ``Retry-After``, capped), 500/502/503/504, refused or reset connections and timeouts are
  retried with exponential backoff and jitter; everything else is returned to the caller at once;
* redirects (blob downloads are often redirected to object storage) are followed up to 5 hops; the
  ``Authorization`` header is never sent to another origin; a redirect from HTTPS to plain HTTP is refused
  unless the target is a registry marked insecure; only http and https are followed.
"""

from __future__ import annotations

import contextlib
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import SSLError

from zoneoci.errors import RegistryError
from zoneoci.hosts import RegistryHosts

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
MAX_RETRY_AFTER = 30.0

Body = bytes | Callable[[], IO[bytes]] | None


@dataclass
class RetryPolicy:
    attempts: int = 5          # tries in all, the first included
    backoff: float = 0.5       # first wait; doubles each time
    max_wait: float = 10.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def wait(self, attempt: int, retry_after: str | None) -> None:
        delay = min(self.max_wait, self.backoff * (2 ** attempt)) * (0.5 + random.random() / 2)
        if retry_after:
            with contextlib.suppress(ValueError):  # an HTTP date: keep our own backoff
                delay = max(delay, min(MAX_RETRY_AFTER, float(retry_after)))
        self.sleep(delay)


def finish(response: urllib3.BaseHTTPResponse) -> None:
    """Done with a response: a short unread rest is drained so the connection can be reused; a long or
    unknown one is not read (a hostile server could send gigabytes), the connection is closed instead."""
    remaining = getattr(response, "length_remaining", None)
    if remaining is not None and remaining <= 65536:
        response.drain_conn()
    else:
        response.close()
    response.release_conn()


def origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


class Transport:
    def __init__(self, hosts: RegistryHosts, *, timeout: float = 30.0, retry: RetryPolicy | None = None,
                 pool_size: int = 8, user_agent: str = "zoneoci/0.1") -> None:
        self.hosts = hosts
        self.timeout = urllib3.Timeout(connect=min(timeout, 10.0), read=timeout)
        self.retry = retry or RetryPolicy()
        self.pool_size = pool_size
        self.user_agent = user_agent
        self._pools: dict[tuple[str, str], urllib3.HTTPConnectionPool] = {}
        self._lock = threading.Lock()
        self._narrow: set[str] = set()   # https origins whose pool trusts their certs.d CAs only (hosts.ssl_context)
        self._widened: set[str] = set()  # ... and those that failed verification so and now trust the system's too
        self.retries = 0

    def _pool(self, scheme: str, netloc: str) -> urllib3.HTTPConnectionPool:
        key = (scheme, netloc)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                parts = urlsplit(f"{scheme}://{netloc}")
                host, port = parts.hostname or "", parts.port
                if scheme == "https":
                    # a registry with its own CA in certs.d first tries without the system CAs (cheaper to load)
                    narrow = netloc not in self._widened and self.hosts.own_cas(netloc)
                    context = self.hosts.ssl_context(netloc, system_cas=not narrow)
                    (self._narrow.add if narrow else self._narrow.discard)(netloc)
                    pool = urllib3.HTTPSConnectionPool(host, port or 443, maxsize=self.pool_size, timeout=self.timeout,
                                                       retries=False, ssl_context=context)
                else:
                    pool = urllib3.HTTPConnectionPool(host, port or 80, maxsize=self.pool_size, timeout=self.timeout,
                                                      retries=False)
                self._pools[key] = pool
            return pool

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()

    def _widen_trust(self, url: str, error: Urllib3Error) -> bool:
        """After a failed TLS verification against an origin's certs.d CAs alone: trust the system CAs too from
        now on (a new pool) and say so, so the request is sent again; False if there is nothing to widen."""
        scheme, netloc = origin(url)
        if scheme != "https" or not _verification_failed(error):
            return False
        with self._lock:
            if netloc in self._widened:  # another thread widened it while our handshake on the old pool failed
                return True
            if netloc not in self._narrow:
                return False
            self._narrow.discard(netloc)
            self._widened.add(netloc)
            pool = self._pools.pop((scheme, netloc), None)
        if pool is not None:
            pool.close()
        return True

    def _send_once(self, method: str, url: str, headers: dict[str, str], body: Body) -> urllib3.BaseHTTPResponse:
        scheme, netloc = origin(url)
        if scheme not in ("http", "https"):
            raise RegistryError(f"refusing to fetch {url[:200]!r}: only http and https are supported")
        parts = urlsplit(url)
        path = parts.path or "/"
        if parts.query:
            path += f"?{parts.query}"
        stream = body() if callable(body) else None
        try:
            return self._pool(scheme, netloc).urlopen(
                method, path, body=stream if stream is not None else body, headers=headers,
                redirect=False, retries=False, preload_content=False, assert_same_host=False,
                decode_content=True, chunked=False)
        finally:
            if stream is not None:
                stream.close()

    def request(self, method: str, url: str, headers: dict[str, str] | None = None, body: Body = None,
                *, retry: bool = True) -> tuple[urllib3.BaseHTTPResponse, str]:
        """Send with retries and redirects; returns the final response (body unread) and its URL."""
        headers = {"User-Agent": self.user_agent, **(headers or {})}
        first_origin = origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send_with_retries(method, url, headers, body, retry)
            if response.status not in REDIRECT_STATUSES:
                return response, url
            location = response.headers.get("Location")
            finish(response)
            if not location:
                raise RegistryError(f"{method} {url}: redirect {response.status} without a Location", response.status)
            target = urljoin(url, location)
            scheme, netloc = origin(target)
            if scheme not in ("http", "https"):
                raise RegistryError(f"{method} {url}: refusing redirect to {target[:200]!r} (not http or https)")
            if origin(url)[0] == "https" and scheme == "http" and not self.hosts.is_insecure(netloc):
                raise RegistryError(f"{method} {url}: refusing redirect from https to plain http ({target[:200]}); "
                                    f"{netloc} is not marked insecure in registries.conf")
            if (scheme, netloc) != first_origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if response.status == 303:
                method, body = "GET", None
            url = target
        raise RegistryError(f"{method} {url}: more than {MAX_REDIRECTS} redirects")

    def _send_verified(self, method: str, url: str, headers: dict[str, str], body: Body) -> urllib3.BaseHTTPResponse:
        """:meth:`_send_once`; if the certificate did not verify against the origin's certs.d CAs alone, once
        more with the system CAs added (not a retry: the handshake failed, nothing was sent)."""
        try:
            return self._send_once(method, url, headers, body)
        except SSLError as e:
            if not self._widen_trust(url, e):
                raise
        return self._send_once(method, url, headers, body)

    def _send_with_retries(self, method: str, url: str, headers: dict[str, str], body: Body,
                           retry: bool) -> urllib3.BaseHTTPResponse:
        attempts = self.retry.attempts if retry else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._send_verified(method, url, headers, body)
            except Urllib3Error as e:
                if last or isinstance(e, SSLError):  # a TLS failure does not get better by trying again
                    tries = f" (after {attempts} attempts)" if attempts > 1 and not isinstance(e, SSLError) else ""
                    raise RegistryError(f"{method} {_short_url(url)}: {_describe_connection_error(e)}{tries}") from None
                self.retries += 1
                self.retry.wait(attempt, None)
                continue
            if response.status in RETRY_STATUSES and not last:
                retry_after = response.headers.get("Retry-After")
                finish(response)
                self.retries += 1
                self.retry.wait(attempt, retry_after)
                continue
            return response
        raise AssertionError("unreachable")


def _verification_failed(error: BaseException) -> bool:
    """Is this (urllib3-wrapped) TLS error a certificate that did not verify?"""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or \
                any(isinstance(arg, ssl.SSLCertVerificationError) for arg in seen.args):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(error)


def _short_url(url: str) -> str:
    return url if len(url) <= 160 else url[:157] + "..."


def _describe_connection_error(error: Exception) -> str:
    """The innermost reason urllib3 wraps (a refused connection, a TLS verification failure, a timeout)."""
    reason = getattr(error, "reason", None) or error
    text = str(reason)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        detail = text.split("certificate verify failed:", 1)[-1].split("(", 1)[0].strip(" )'\"")
        return (f"TLS certificate not trusted ({detail or 'verify failed'}); put the registry's CA in "
                "certs.d/<host:port>/ca.crt or mark it insecure in registries.conf")
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    return text.split(": ", 1)[-1] if len(text) > 200 else text
