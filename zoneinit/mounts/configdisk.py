"""Reading the zone config from its disk (``zone.config=/dev/vdb``) into PID 1's ``LaunchPlan``.

The host writes a raw config disk (``zoneinit.config.diskformat``: ``ZONECFG1`` header, sha256, canonical
JSON), read with two preads, no module and no mount. For development the device may also be the JSON
document itself (a file, or a disk starting with ``{``); it goes through the same strict parser.
PID 1 calls :func:`read_plan` in a forked child (``zoneinit.isolate``): json, re and hashlib stay out of it.
"""

from __future__ import annotations

import json

from zoneinit.config.plan import LaunchPlan
from zoneinit.errors import ConfigDiskError, ZoneConfigError

MAX_RAW = 1 << 20


def read_plan(device: str) -> LaunchPlan:
    """The launch plan from the config disk; ConfigDiskError (with the parser's error as cause) if unusable."""
    from zoneinit.config import diskformat
    from zoneinit.config.parser import parse_zone_config
    from zoneinit.config.plan import plan_from_config

    try:
        with open(device, "rb") as f:
            head = f.read(len(diskformat.MAGIC))
            if head == diskformat.MAGIC:
                return plan_from_config(diskformat.read_config_disk(device))
            if head[:1] != b"{":
                raise ConfigDiskError(f"{device}: no zone config (neither a {diskformat.MAGIC.decode()} disk "
                                      "nor JSON)")
            raw = (head + f.read(MAX_RAW)).split(b"\0", 1)[0]
        document = json.loads(raw)
        return plan_from_config(parse_zone_config(document))
    except FileNotFoundError as e:
        raise ConfigDiskError(f"config disk {device} does not exist") from e
    except ZoneConfigError as e:
        raise ConfigDiskError(f"zone config on {device}") from e
    except ValueError as e:
        raise ConfigDiskError(f"{device}: the config is not valid JSON: {e}") from e
    except OSError as e:
        raise ConfigDiskError(f"read config disk {device}") from e
