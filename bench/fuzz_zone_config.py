"""Fuzz the zone config reader: the JSON schema (``loads`` / ``parse_zone_config``), the raw config disk
(``decode_config_disk``), the translation PID 1 boots from (``plan_from_config``) and the container
definition a host sends in IDM ``container.create`` (``parse_container``: the same parser).

Inputs are used as raw text/disk bytes and as the seed of structure-aware mutations of valid documents.
Only ``ZoneConfigError`` (a ``StyroliteError``) may come out; a config that validates must
round-trip through ``dumps``/``loads`` unchanged.

    python3 bench/fuzz_zone_config.py [--runs 1000000] [--engine atheris|mutate] [--seed N]
"""

from __future__ import annotations

import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fuzz_common import main, mutate_tree, stages

from zoneinit.config.diskformat import decode_config_disk, encode_config_disk
from zoneinit.config.document import dumps
from zoneinit.config.parser import loads, parse_container, parse_zone_config
from zoneinit.config.plan import container_plan, plan_from_config

DIGEST = "sha256:" + "ab" * 32
DOCUMENT = {
    "version": 1, "name": "zone-1", "hostname": "web.example",
    "network": {"interface": "eth0", "ipv4": {"address": "10.0.2.15", "prefix": 24, "gateway": "10.0.2.2"},
                "ipv6": {"address": "fd00::15", "prefix": 64}, "dns": ["10.0.2.3"]},
    "disks": [{"name": "addons", "role": "addons", "device": "/dev/vda", "sha256": DIGEST, "size": 4096},
              {"name": "root0", "role": "root", "device": "/dev/vdc", "sha256": DIGEST, "size": 8192,
               "fstype": "erofs", "owner_shift": 65536}],
    "containers": [{"name": "app", "image": "root0", "args": ["/bin/sh", "-c", "echo hi"], "env": ["A=1"],
                    "user": {"uid": 1000, "gid": 1000}, "limits": {"memory": 64 << 20, "cpus": 0.5, "pids": 64},
                    "main": True}],
    "modules": ["virtio_net"],
    "options": {"poweroff_on_exit": True, "shutdown_grace": 5},
}
CREATE = {"name": "web", "image": "root0", "args": ["sh", "-c", "sleep 1"], "env": ["A=1"], "cwd": "/",
          "user": {"uid": 1, "gid": 1, "additional_gids": [2]}, "limits": {"memory": 1 << 20, "pids": 8, "cpus": 1},
          "terminal": False, "stdin": True, "annotations": {"a": "b"}}


def _document(config_doc: object) -> None:
    config = parse_zone_config(config_doc)
    again = loads(dumps(config))
    if again != config:
        raise AssertionError(f"round trip changed the config: {config!r} -> {again!r}")
    plan_from_config(config)


def _text(data: bytes) -> None:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return
    if text[:1] in ("{", "["):
        try:
            document = json.loads(text)
        except ValueError:
            return
        _document(document)


def _mutated(data: bytes) -> None:
    rng = random.Random(data)
    choice = rng.random()
    if choice < 0.6:
        _document(mutate_tree(DOCUMENT, rng))
    elif choice < 0.9:
        container_plan(parse_container(mutate_tree(CREATE, rng)))
    else:
        image = bytearray(encode_config_disk(parse_zone_config(DOCUMENT)))
        for _ in range(rng.randint(1, 4)):
            image[rng.randrange(len(image))] = rng.randrange(256)
        decode_config_disk(bytes(image), "fuzz")


def target(data: bytes) -> None:
    stages(lambda: _text(data), lambda: decode_config_disk(data, "fuzz"), lambda: _mutated(data))


def seeds() -> list[bytes]:
    return [json.dumps(DOCUMENT).encode(), json.dumps(CREATE).encode(),
            encode_config_disk(parse_zone_config(DOCUMENT))[:2048], b"{}", b"ZONECFG1"]


if __name__ == "__main__":
    sys.exit(main("zone-config", target, seeds(), tokens=[b'"version"', b'"containers"', b'"disks"', b'"owner_shift"'],
                  max_len=8192))
