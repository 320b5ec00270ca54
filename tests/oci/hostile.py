"""A small, deliberately misbehaving registry on 127.0.0.1 for the bad-input tests.

It serves one image (and an index) from memory and can be told, per test, to lie: wrong bytes for a digest,
truncated bodies, an oversized manifest, a wrong media type, redirects elsewhere, a tag that moves between
requests, an index without our platform, and 401/403/429/500 answers. Every request is logged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Content:
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # digest -> (media type, bytes)
    tags: dict[str, str] = field(default_factory=dict)                     # tag -> digest

    def add_blob(self, data: bytes) -> dict:
        self.blobs[sha(data)] = data
        return {"digest": sha(data), "size": len(data)}

    def add_manifest(self, document: dict, tag: str | None = None, media_type: str | None = None) -> str:
        data = json.dumps(document).encode()
        digest = sha(data)
        self.manifests[digest] = (media_type or document.get("mediaType", OCI_MANIFEST), data)
        if tag:
            self.tags[tag] = digest
        return digest

    def add_image(self, layers: list[bytes], tag: str | None = None, arch: str = "amd64") -> str:
        config = self.add_blob(json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers",
                                           "diff_ids": []}}).encode())
        layer_descs = [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **self.add_blob(b)} for b in layers]
        return self.add_manifest({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                                  "layers": layer_descs}, tag)


Hook = Callable[["Handler"], bool]  # returns True when it answered the request itself


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HostileServer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
             length: int | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error_json(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.send(status, json.dumps({"errors": [{"code": code, "message": message}]}).encode(),
                  {"Content-Type": "application/json", **(headers or {})})

    def handle_any(self) -> None:
        srv = self.server
        with srv.lock:
            srv.requests.append(Request(self.command, self.path, dict(self.headers.items())))
        for hook in list(srv.hooks):
            if hook(self):
                return
        if srv.token and self.path.startswith("/v2/") \
                and self.headers.get("Authorization") != f"Bearer {srv.token}":
            realm = f"http://127.0.0.1:{srv.server_address[1]}/token"
            self.error_json(401, "UNAUTHORIZED", "authentication required",
                            {"WWW-Authenticate": f'Bearer realm="{realm}",service="hostile"'})
            return
        if self.path.startswith("/token"):
            expected = "Basic " + base64.b64encode(b"alice:wonder").decode()
            if self.headers.get("Authorization") != expected:
                self.error_json(401, "UNAUTHORIZED", "bad credentials")
            else:
                self.send(200, json.dumps({"token": srv.token, "expires_in": 300}).encode(),
                          {"Content-Type": "application/json"})
            return
        if self.path == "/v2/":
            self.send(200, b"{}", {"Content-Type": "application/json"})
            return
        parts = self.path.split("?", 1)[0].split("/")
        # /v2/<repo...>/manifests/<ref> or /v2/<repo...>/blobs/<digest>
        if len(parts) >= 5 and parts[-2] == "manifests":
            ref = parts[-1]
            digest = srv.content.tags.get(ref, ref)
            if digest not in srv.content.manifests:
                self.error_json(404, "MANIFEST_UNKNOWN", "manifest unknown")
                return
            media_type, data = srv.content.manifests[digest]
            self.send(200, data, {"Content-Type": media_type, "Docker-Content-Digest": digest})
            return
        if len(parts) >= 5 and parts[-2] == "blobs":
            data = srv.content.blobs.get(parts[-1])
            if data is None:
                self.error_json(404, "BLOB_UNKNOWN", "blob unknown")
                return
            self.send(200, data, {"Content-Type": "application/octet-stream"})
            return
        self.error_json(404, "NAME_UNKNOWN", "not here")

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = handle_any


class HostileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, content: Content, tls: tuple[Path, Path] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.content = content
        self.hooks: list[Hook] = []
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.token: str | None = None
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.socket = context.wrap_socket(self.socket, server_side=True)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
