"""Reading the zone config from its disk (``zone.config=/dev/vdb``).

The config disk is either a raw JSON document (padded with NULs to the device size) or a small read-only
file system (squashfs, erofs, ext4, iso9660, vfat) holding ``zone.json`` (or ``config.json``). When
helper-6's ``zoneinit.zoneconfig`` is present it parses and validates the document; otherwise the minimal
local reading in ``zoneinit.plan`` is used.
"""

from __future__ import annotations

import json
import os
from typing import Any

from zoneinit.errors import ConfigDiskError
from zoneinit.mounts.images import detect_fstype, mount_image
from zoneinit.mounts.table import MountTable
from zoneinit.plan import LaunchPlan, plan_from_dict

CONFIG_NAMES = ("zone.json", "config.json", "zone-config.json")
MAX_RAW = 16 << 20


def _read_raw_json(device: str) -> Any | None:
    with open(device, "rb") as f:
        head = f.read(1)
        if head not in (b"{", b"["):
            return None
        data = head + f.read(MAX_RAW)
    text = data.split(b"\0", 1)[0]
    try:
        return json.loads(text)
    except ValueError as e:
        raise ConfigDiskError(f"{device}: the config is not valid JSON: {e}") from e


def read_config_document(device: str, mounts: MountTable, mount_point: str = "/run/zone/config") -> Any:
    if not os.path.exists(device):
        raise ConfigDiskError(f"config disk {device} does not exist")
    try:
        document = _read_raw_json(device)
        if document is not None:
            return document
        if detect_fstype(device) is None:
            raise ConfigDiskError(f"{device} holds neither a JSON document nor a file system")
        mount_image(mounts, device, mount_point)
    except OSError as e:
        raise ConfigDiskError(f"read config disk {device}") from e
    for name in CONFIG_NAMES:
        path = os.path.join(mount_point, name)
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as f:
                    return json.load(f)
            except (OSError, ValueError) as e:
                raise ConfigDiskError(f"read {name} on config disk {device}") from e
    raise ConfigDiskError(f"config disk {device} has none of {', '.join(CONFIG_NAMES)}")


def plan_from_document(document: Any) -> LaunchPlan:
    """The schema owner's parser when it is in this build, else the minimal local reading."""
    try:
        from zoneinit import zoneconfig
    except ImportError:
        return plan_from_dict(document)
    converter = getattr(zoneconfig, "to_launch_plan", None)
    if converter is not None:
        return converter(document)
    from zoneinit.plan import plan_from_zoneconfig

    return plan_from_zoneconfig(zoneconfig, document)
