"""Registry credentials from a docker-style auth file, and the WWW-Authenticate challenges that ask for them.

Where credentials come from (the files podman, skopeo and docker write):

1. ``$REGISTRY_AUTH_FILE`` if it is set (then only that file);
2. else ``$XDG_RUNTIME_DIR/containers/auth.json``, ``~/.config/containers/auth.json``, ``~/.docker/config.json``,
   the first that has an entry for the registry.

An entry is found by the most specific key first: ``host/ns/repo``, ``host/ns``, ``host`` (keys may carry
``https://`` and a ``/v1/`` path as docker writes them; Docker Hub is also ``index.docker.io``). It holds
``auth`` (base64 ``user:password``) and optionally ``identitytoken`` (an OAuth2 refresh token). ``credHelpers``
and ``credsStore`` name a ``docker-credential-<helper>`` program, asked with ``get``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from zoneoci.errors import ConfigFileError
from zoneoci.reference import DOCKER_HUB

_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com", DOCKER_HUB}


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""

    def __repr__(self) -> str:  # never print secrets
        return f"Credentials(username={self.username!r})"


def auth_file_paths() -> list[Path]:
    explicit = os.environ.get("REGISTRY_AUTH_FILE")
    if explicit:
        return [Path(explicit)]
    paths = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        paths.append(Path(runtime) / "containers" / "auth.json")
    home = Path(os.environ.get("HOME") or Path.home())
    paths += [home / ".config" / "containers" / "auth.json", home / ".docker" / "config.json"]
    return paths


def _normalise_key(key: str) -> str:
    key = re.sub(r"^https?://", "", key).rstrip("/")
    host, _, path = key.partition("/")
    if path in ("v1", "v2"):
        path = ""
    if host in _HUB_ALIASES:
        host = DOCKER_HUB
    return f"{host}/{path}" if path else host


def _decode_entry(entry: object, where: str) -> Credentials | None:
    if not isinstance(entry, dict):
        raise ConfigFileError(f"{where}: entry is not an object")
    username, password = "", ""
    encoded = entry.get("auth")
    if encoded:
        try:
            username, sep, password = base64.b64decode(str(encoded), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as e:
            raise ConfigFileError(f"{where}: 'auth' is not base64 of user:password ({e})") from None
        if not sep:
            raise ConfigFileError(f"{where}: 'auth' does not decode to user:password")
    token = entry.get("identitytoken") or ""
    if not (username or token):
        return None
    return Credentials(username, password, str(token))


def _credential_helper(helper: str, server: str, where: str) -> Credentials | None:
    import subprocess  # only for credential helpers: keep it off the common import path

    program = f"docker-credential-{helper}"
    try:
        done = subprocess.run([program, "get"], input=server.encode(), capture_output=True, timeout=30)
    except FileNotFoundError:
        raise ConfigFileError(f"{where}: credential helper {program} is not installed") from None
    except subprocess.TimeoutExpired:
        raise ConfigFileError(f"{where}: credential helper {program} did not answer in 30 s") from None
    if done.returncode != 0:
        if b"credentials not found" in done.stdout.lower() + done.stderr.lower():
            return None
        raise ConfigFileError(f"{where}: {program} get failed: {done.stderr.decode(errors='replace').strip()}")
    try:
        answer = json.loads(done.stdout)
        username, secret = str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError):
        raise ConfigFileError(f"{where}: {program} answered something that is not its JSON") from None
    if username == "<token>":  # docker's convention for an identity token
        return Credentials(identity_token=secret)
    return Credentials(username, secret)


def _lookup(document: dict, registry: str, repository: str, where: str) -> Credentials | None:
    auths = document.get("auths") or {}
    if not isinstance(auths, dict):
        raise ConfigFileError(f"{where}: 'auths' is not an object")
    entries = {_normalise_key(k): v for k, v in auths.items()}
    parts = repository.split("/")
    for depth in range(len(parts), -1, -1):
        key = "/".join([registry, *parts[:depth]])
        if key in entries:
            found = _decode_entry(entries[key], f"{where}: auths[{key!r}]")
            if found is not None:
                return found
    helpers = document.get("credHelpers") or {}
    helper = next((h for k, h in helpers.items() if _normalise_key(k) == registry), None) \
        if isinstance(helpers, dict) else None
    helper = helper or document.get("credsStore")
    if isinstance(helper, str) and helper:
        server = "https://index.docker.io/v1/" if registry == DOCKER_HUB else registry
        return _credential_helper(helper, server, where)
    return None


def find_credentials(registry: str, repository: str = "", paths: list[Path] | None = None) -> Credentials | None:
    """Credentials for ``registry`` (and ``repository``, for repository-scoped entries), or None."""
    for path in auth_file_paths() if paths is None else paths:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise ConfigFileError(f"auth file {path}: cannot read ({e})") from None
        try:
            document = json.loads(text) if text.strip() else {}
        except ValueError as e:
            raise ConfigFileError(f"auth file {path}: not valid JSON ({e})") from None
        if not isinstance(document, dict):
            raise ConfigFileError(f"auth file {path}: not a JSON object")
        found = _lookup(document, registry, repository, f"auth file {path}")
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class Challenge:
    scheme: str                  # "bearer" or "basic" (lowercase)
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


def parse_challenges(header: str) -> list[Challenge]:
    """``WWW-Authenticate: Bearer realm="...",service="...",scope="..."`` (RFC 7235; one or more)."""
    challenges: list[Challenge] = []
    rest = header.strip()
    while rest:
        match = re.match(r"([A-Za-z][A-Za-z0-9_-]*)\s*", rest)
        if match is None:
            break
        scheme, rest = match.group(1).lower(), rest[match.end():]
        params: dict[str, str] = {}
        while True:
            param = _PARAM.match(rest)
            if param is None or not param.group(0).strip():
                break
            value = param.group(2) if param.group(2) is not None else param.group(3)
            params[param.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            rest = rest[param.end():]
        challenges.append(Challenge(scheme, params))
        rest = rest.lstrip(", ")
    return challenges


def basic_header(credentials: Credentials) -> str:
    pair = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()
