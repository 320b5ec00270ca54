"""Zone definitions: validation of user input, JSON round trip."""

from __future__ import annotations

import pytest

from host.errors import ZoneDefError
from host.zonedef import NetworkDef, ZoneDef, parse_env


def make(**kw) -> ZoneDef:
    base = {"name": "web", "kernel_image": "/k", "initrd": "/i"}
    base.update(kw)
    return ZoneDef(**base)


def test_valid_definition_round_trips_through_json():
    definition = make(command=["echo", "hi"], env={"A": "1"}, memory_mib=512, vcpus=2,
                      network=NetworkDef(address="10.0.2.15/24"), backend="xen")
    definition.validate()
    again = ZoneDef.from_json(definition.to_json())
    assert again == definition


@pytest.mark.parametrize(("changes", "field"), [
    ({"name": "Bad Name"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "a" * 64}, "name"),
    ({"backend": "vmware"}, "backend"),
    ({"memory_mib": 16}, "memory"),
    ({"vcpus": 0}, "vcpus"),
    ({"command": []}, "command"),
    ({"env": {"1BAD": "x"}}, "env"),
    ({"network": NetworkDef(address="10.0.2.300/24")}, "network.address"),
    ({"network": NetworkDef(address="10.0.2.15")}, "network.address"),
    ({"network": NetworkDef(gateway="gw")}, "network.gateway"),
    ({"network": NetworkDef(host_forwards=["8080:80"])}, "network.host_forwards"),
])
def test_invalid_fields_are_named(changes, field):
    with pytest.raises(ZoneDefError, match=field):
        make(**changes).validate()


def test_from_json_rejects_unknown_fields_and_non_objects():
    with pytest.raises(ZoneDefError, match="unknown field"):
        ZoneDef.from_json({"name": "a", "kernel_image": "k", "initrd": "i", "colour": "red"})
    with pytest.raises(ZoneDefError, match="JSON object"):
        ZoneDef.from_json(["a"])
    with pytest.raises(ZoneDefError, match="zone definition"):
        ZoneDef.from_json({"name": "a"})


def test_parse_env():
    assert parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(ZoneDefError, match="KEY=VALUE"):
        parse_env(["NOVALUE"])
