"""The zone config disk, host side: build a ZoneConfig from images and options, write the raw disk.

Why a raw "header + JSON" block device and not a file system: PID 1 reads it before any module is loaded
(squashfs, ext4-as-module, iso9660 would all need one), reading it mounts nothing (no kernel file system parser
sees host-supplied bytes), the header's sha256 catches truncation or corruption, and the bytes are
reproducible. The schema, parser and disk format live with their reader in zoneinit/config/; docs/zone-config.md
has the schema.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zoneinit.config.diskformat import encode_config_disk
from zoneinit.config.document import Container, ZoneConfig
from zoneinit.config.parser import parse_zone_config

from .oci import sha256_file


def disk_entry(name: str, role: str, device: str, image: str | Path, fstype: str = "squashfs",
               owner_shift: int = 0) -> dict[str, Any]:
    """The config's description of a disk image the host attaches at ``device``: digest and size pinned;
    ``owner_shift`` for a root image built for user-namespace containers (zonebuild.idshift)."""
    path = Path(image)
    entry = {"name": name, "role": role, "device": device, "sha256": sha256_file(path),
             "size": path.stat().st_size, "fstype": fstype}
    if owner_shift:
        entry["owner_shift"] = owner_shift
    return entry


def _merge_env(base: Sequence[str], overrides: Mapping[str, str] | Sequence[str]) -> list[str]:
    merged: dict[str, str] = {}
    items = [f"{k}={v}" for k, v in overrides.items()] if isinstance(overrides, Mapping) else list(overrides)
    for item in [*base, *items]:
        key, _, value = item.partition("=")
        merged.pop(key, None)  # the later value wins and moves to the end, like docker run -e
        merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]


def _parse_user(user: str) -> dict[str, int]:
    """Numeric 'uid[:gid]' only: names need the image's /etc/passwd, which the host resolves before this."""
    uid_text, _, gid_text = (user or "0").partition(":")
    if not uid_text.isdigit() or (gid_text and not gid_text.isdigit()):
        raise ValueError(f"user {user!r}: use numeric uid[:gid] (resolve names against the image first)")
    uid = int(uid_text)
    return {"uid": uid, "gid": int(gid_text) if gid_text else uid}


def container_from_image(name: str, image_disk: str, image_config: Mapping[str, Any], *,
                         command: Sequence[str] | None = None, env: Mapping[str, str] | Sequence[str] = (),
                         cwd: str | None = None, user: str | None = None, terminal: bool = False,
                         main: bool = True, limits: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A container entry with the image defaults resolved (docker semantics: a command override replaces Cmd
    and keeps Entrypoint)."""
    entrypoint = list(image_config.get("Entrypoint") or [])
    args = entrypoint + list(command if command is not None else image_config.get("Cmd") or [])
    entry: dict[str, Any] = {
        "name": name,
        "image": image_disk,
        "args": args,
        "env": _merge_env(image_config.get("Env") or [], env),
        "cwd": cwd or image_config.get("WorkingDir") or "/",
        "user": _parse_user(user if user is not None else image_config.get("User") or "0"),
        "terminal": terminal,
        "main": main,
    }
    if limits:
        entry["limits"] = dict(limits)
    return entry


def build_config(document: Mapping[str, Any]) -> ZoneConfig:
    """Validate a document exactly as PID 1 will (so a bad config fails on the host, before booting)."""
    return parse_zone_config(dict(document))


def write_config_disk(config: ZoneConfig | Mapping[str, Any], out: str | Path, *,
                      readable: str | Path | None = None) -> Path:
    """Write the raw config disk image (header + JSON + padding); returns its path. ``readable``: also write
    the same config there as indented JSON, for people."""
    if not isinstance(config, ZoneConfig):
        config = build_config(config)
    out = Path(out)
    out.write_bytes(encode_config_disk(config))
    if readable is not None:
        Path(readable).write_text(json.dumps(config.to_json(), indent=2, sort_keys=True) + "\n")
    return out


__all__ = ["Container", "build_config", "container_from_image", "disk_entry", "write_config_disk"]
