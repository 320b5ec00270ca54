"""Reading the zone config from its disk (``zone.config=/dev/vdb``).

The host writes a raw config disk (docs/zone-config.md: ``ZONECFG1`` header, sha256, canonical JSON):
``zoneinit.zoneconfig.read_config_disk`` reads and validates it with two preads, no module and no mount.
For development the device may also be a plain JSON document (a file, or a disk starting with ``{``): a
document with ``"version"`` goes through the same strict parser, one without it through the minimal local
reading (``plan_from_dict``).
"""

from __future__ import annotations

import json
import os

from zoneinit.errors import ConfigDiskError
from zoneinit.plan import LaunchPlan, plan_from_dict, plan_from_zoneconfig

MAX_RAW = 1 << 20


def read_plan(device: str) -> LaunchPlan:
    """The launch plan from the config disk; ConfigDiskError (with the parser's error as cause) if unusable."""
    from styrolite.errors import ConfigError
    from zoneinit import zoneconfig

    try:
        with open(device, "rb") as f:
            head = f.read(len(zoneconfig.MAGIC))
            if head == zoneconfig.MAGIC:
                return plan_from_zoneconfig(zoneconfig.read_config_disk(device))
            if head[:1] != b"{":
                raise ConfigDiskError(f"{device}: no zone config (neither a {zoneconfig.MAGIC.decode()} disk nor JSON)")
            raw = (head + f.read(MAX_RAW)).split(b"\0", 1)[0]
    except FileNotFoundError as e:
        raise ConfigDiskError(f"config disk {device} does not exist") from e
    except ConfigError as e:
        raise ConfigDiskError(f"zone config on {device}") from e
    except OSError as e:
        raise ConfigDiskError(f"read config disk {device}") from e
    try:
        document = json.loads(raw)
    except ValueError as e:
        raise ConfigDiskError(f"{device}: the config is not valid JSON: {e}") from e
    if isinstance(document, dict) and "version" in document:
        try:
            return plan_from_zoneconfig(zoneconfig.parse_zone_config(document))
        except ConfigError as e:
            raise ConfigDiskError(f"zone config on {device}") from e
    return plan_from_dict(document)


def config_exists(device: str) -> bool:
    return os.path.exists(device)
