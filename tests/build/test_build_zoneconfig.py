"""Zone config: schema validation with field-named errors, JSON round trip, the raw config disk."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from zonebuild.configdisk import container_from_image, disk_entry, write_config_disk
from zoneinit.config.diskformat import HEADER_SIZE, decode_config_disk, read_config_disk
from zoneinit.config.document import dumps
from zoneinit.config.parser import loads, parse_zone_config
from zoneinit.errors import ZoneConfigError

DIGEST = "sha256:" + "ab" * 32


def _document() -> dict[str, Any]:
    return {
        "version": 1,
        "name": "zone-1",
        "hostname": "web.example",
        "network": {"interface": "eth0", "ipv4": {"address": "10.0.2.15", "prefix": 24, "gateway": "10.0.2.2"},
                    "ipv6": {"address": "fd00::15", "prefix": 64}, "dns": ["10.0.2.3"]},
        "disks": [
            {"name": "addons", "role": "addons", "device": "/dev/vda", "sha256": DIGEST, "size": 4096},
            {"name": "root0", "role": "root", "device": "/dev/vdc", "sha256": DIGEST, "size": 8192,
             "fstype": "erofs", "owner_shift": 65536},
        ],
        "containers": [{"name": "app", "image": "root0", "args": ["/bin/sh", "-c", "echo hi"], "env": ["A=1"],
                        "user": {"uid": 1000, "gid": 1000}, "limits": {"memory": 64 << 20, "cpus": 0.5, "pids": 64},
                        "main": True}],
        "options": {"poweroff_on_exit": True, "shutdown_grace": 5},
    }


def test_valid_document_round_trips() -> None:
    config = parse_zone_config(_document())
    assert config.network and config.network.ipv4 and config.network.ipv4.gateway == "10.0.2.2"
    assert config.containers[0].limits.cpus == 0.5 and config.disk("root0").owner_shift == 65536
    assert config.main_container() is config.containers[0]
    assert loads(dumps(config)) == config
    assert dumps(loads(dumps(config))) == dumps(config)


@pytest.mark.parametrize(
    ("edit", "path", "message"),
    [
        (lambda d: d.pop("name"), "$.name", "missing"),
        (lambda d: d.update(version=2), "$.version", "unsupported"),
        (lambda d: d.update(surprise=1), "$.surprise", "unknown field"),
        (lambda d: d.update(hostname="bad_host!"), "$.hostname", "host name"),
        (lambda d: d["network"]["ipv4"].update(address="10.0.2"), "$.network.ipv4.address", "not an IP"),
        (lambda d: d["network"]["ipv4"].update(prefix=33), "$.network.ipv4.prefix", "too long"),
        (lambda d: d["network"]["ipv6"].update(address="10.0.0.1"), "$.network.ipv6.address", "IPv6"),
        (lambda d: d["network"].update(dns=["x"]), "$.network.dns[0]", "not an IP"),
        (lambda d: d["disks"][1].update(sha256="abc"), "$.disks[1].sha256", "64 lowercase hex"),
        (lambda d: d["disks"][1].update(device="/etc/passwd"), "$.disks[1].device", "/dev"),
        (lambda d: d["disks"][1].update(role="boot"), "$.disks[1].role", "one of"),
        (lambda d: d["disks"][1].update(name="addons"), "$.disks[1].name", "duplicate"),
        (lambda d: d["containers"][0].update(image="addons"), "$.containers[0].image", "role 'root'"),
        (lambda d: d["containers"][0].update(args=[]), "$.containers[0].args", "empty"),
        (lambda d: d["containers"][0].update(env=["NOEQUALS"]), "$.containers[0].env[0]", "KEY=VALUE"),
        (lambda d: d["containers"][0].update(cwd="rel"), "$.containers[0].cwd", "absolute"),
        (lambda d: d["containers"][0]["limits"].update(memory="1G"), "$.containers[0].limits.memory", "integer"),
        (lambda d: d["containers"][0]["limits"].update(cpus=0), "$.containers[0].limits.cpus", "> 0"),
        (lambda d: d["containers"][0].update(terminal="yes"), "$.containers[0].terminal", "true or false"),
        (lambda d: d["containers"][0]["user"].update(uid=True), "$.containers[0].user.uid", "integer"),
        (lambda d: d["options"].update(poweroff_on_exit=1), "$.options.poweroff_on_exit", "true or false"),
        (lambda d: d["disks"][1].update(owner_shift=1000), "$.disks[1].owner_shift", "multiple of 65536"),
        (lambda d: d["disks"][1].update(owner_shift=2**32 - 65536), "$.disks[1].owner_shift", "passes 2^32-2"),
        (lambda d: d["disks"][0].update(owner_shift=65536), "$.disks[0].owner_shift", "only a root image"),
    ],
)
def test_errors_name_the_field(edit: Any, path: str, message: str) -> None:
    document = copy.deepcopy(_document())
    edit(document)
    with pytest.raises(ZoneConfigError) as info:
        parse_zone_config(document)
    assert info.value.path == path
    assert message in info.value.message


def test_config_disk_round_trip_and_corruption(tmp_path: Path) -> None:
    disk = write_config_disk(_document(), tmp_path / "config.img")
    data = disk.read_bytes()
    assert len(data) % 4096 == 0
    assert read_config_disk(str(disk)) == parse_zone_config(_document())
    assert write_config_disk(_document(), tmp_path / "again.img").read_bytes() == data  # reproducible

    corrupt = bytearray(data)
    corrupt[HEADER_SIZE + 5] ^= 0x20
    with pytest.raises(ZoneConfigError, match="checksum mismatch"):
        decode_config_disk(bytes(corrupt))
    with pytest.raises(ZoneConfigError, match="truncated"):
        decode_config_disk(data[: HEADER_SIZE + 10])
    with pytest.raises(ZoneConfigError, match="bad magic"):
        decode_config_disk(b"\0" * 4096)


def test_container_from_image_resolves_docker_semantics(tmp_path: Path) -> None:
    image_config = {"Entrypoint": ["/entry"], "Cmd": ["serve"], "Env": ["PATH=/bin", "A=1"], "WorkingDir": "/app",
                    "User": "100:200"}
    entry = container_from_image("app", "root0", image_config, command=["sh"], env={"A": "2"})
    assert entry["args"] == ["/entry", "sh"]
    assert entry["env"] == ["PATH=/bin", "A=2"]
    assert entry["cwd"] == "/app" and entry["user"] == {"uid": 100, "gid": 200}
    image = tmp_path / "root.img"
    image.write_bytes(b"x" * 4096)
    doc = _document()
    doc["disks"][1] = disk_entry("root0", "root", "/dev/vdc", image)
    doc["containers"] = [entry]
    config = parse_zone_config(doc)
    assert config.disk("root0").size == 4096
