"""zonehost's host configuration: what zones are composed from by default, and where images come from.

The file is ``$ZONE_HOST_CONFIG``, else ``/etc/zone/zonehost.toml``; without one, every default applies::

    [images]
    kernel = "registry.example:5000/zone/kernel@sha256:..."   # the default --kernel: a reference or a layout dir
    extensions = ["registry.example:5000/zone/debug-tools:1"]  # attached to every zone, before any --extension
    pull = "missing"                                           # missing | always | never (as zonehost run --pull)

    [registry]                                                 # as zonehost pull's options
    store = "/var/lib/zone/content"
    authfile = "/etc/zone/auth.json"
    cert_dir = "/etc/containers/certs.d"
    registries_conf = "/etc/containers/registries.conf"

``ZONE_KERNEL`` in the environment overrides ``images.kernel``. Without a kernel in either, zones boot the
kernel image zonebuild builds locally from Debian's linux-image-cloud-amd64. A command line option always wins.
Unknown keys and wrong types are errors naming the key: a typo must not silently boot another kernel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from host.errors import HostError

DEFAULT_PATH = Path("/etc/zone/zonehost.toml")
PULL_POLICIES = ("missing", "always", "never")


class HostConfigError(HostError):
    """The host configuration file is unreadable or invalid; the message names the file and key."""


@dataclass(frozen=True)
class HostConfig:
    kernel: str | None = None
    extensions: tuple[str, ...] = ()
    pull: str = "missing"
    store: str | None = None
    authfile: str | None = None
    cert_dir: str | None = None
    registries_conf: str | None = None
    source: str | None = None                  # the file read, if any


SCHEMA: dict[str, dict[str, type]] = {
    "images": {"kernel": str, "extensions": list, "pull": str},
    "registry": {"store": str, "authfile": str, "cert_dir": str, "registries_conf": str},
}


def config_path() -> Path:
    return Path(os.environ.get("ZONE_HOST_CONFIG") or DEFAULT_PATH)


def load_host_config(path: Path | None = None) -> HostConfig:
    """The host configuration (every default when the file does not exist), with ZONE_KERNEL applied."""
    path = path or config_path()
    values: dict[str, object] = {}
    source = None
    try:
        text = path.read_text()
    except FileNotFoundError:
        if os.environ.get("ZONE_HOST_CONFIG"):
            raise HostConfigError(f"host config {path} (ZONE_HOST_CONFIG): no such file") from None
        text = None
    except (OSError, UnicodeDecodeError) as e:
        raise HostConfigError(f"host config {path}: {e}") from None
    if text is None:
        document: dict[str, object] = {}
    else:
        import tomllib  # only when there is a file: every zonehost image verb reads the config, most hosts have none

        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise HostConfigError(f"host config {path}: {e}") from None
        source = str(path)
    for section, content in document.items():
        if section not in SCHEMA or not isinstance(content, dict):
            raise HostConfigError(f"host config {path}: unknown section [{section}] (have: {', '.join(SCHEMA)})")
        for key, value in content.items():
            kind = SCHEMA[section].get(key)
            if kind is None:
                raise HostConfigError(f"host config {path}: unknown key {section}.{key}")
            if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
                what = "a list of strings" if kind is list else "a string"
                raise HostConfigError(f"host config {path}: {section}.{key} must be {what}")
            values[key] = tuple(value) if kind is list else value
    pull = values.get("pull", "missing")
    if pull not in PULL_POLICIES:
        raise HostConfigError(f"host config {path}: images.pull must be one of {', '.join(PULL_POLICIES)}")
    kernel = os.environ.get("ZONE_KERNEL") or values.get("kernel")
    return HostConfig(kernel=kernel or None, extensions=values.get("extensions", ()),  # type: ignore[arg-type]
                      pull=str(pull), store=values.get("store"), authfile=values.get("authfile"),  # type: ignore[arg-type]
                      cert_dir=values.get("cert_dir"), registries_conf=values.get("registries_conf"),  # type: ignore[arg-type]
                      source=source)
