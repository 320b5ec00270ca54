"""PID 1 inside a real zone (QEMU TCG, the Debian cloud kernel, our initrd): what only a real boot shows.

Uses the ``zonehost`` fixture (qemu-tests/conftest.py): each test drives the real CLI.
"""

from __future__ import annotations

import json


def _describe(host, name: str, result) -> str:
    return (f"rc={result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}\nconsole:\n"
            f"{host.console(name)[-4000:]}")


def test_module_not_built_in_is_loaded_from_addons(zonehost):
    """zone.modules=dummy: dummy.ko is only in addons.squashfs; PID 1 mounts addons and finit_module()s it."""
    name = "modaddons"
    result = zonehost.run("--rm", "--name", name, "--kernel-arg", "zone.modules=dummy", "busybox", "--",
                          "sh", "-c", "grep '^dummy ' /proc/modules | cut -d' ' -f1")
    assert result.returncode == 0, _describe(zonehost, name, result)
    assert result.stdout == "dummy\n", _describe(zonehost, name, result)


def test_network_is_configured_and_visible_in_the_container(zonehost):
    """--net: PID 1 configures eth0 over rtnetlink (QEMU user networking); containers share the zone's network."""
    name = "netzone"
    result = zonehost.run("--rm", "--net", "--name", name, "busybox", "--",
                          "sh", "-c", "ip -o addr show dev eth0; ip route; cat /etc/resolv.conf")
    assert result.returncode == 0, _describe(zonehost, name, result)
    out = result.stdout
    assert "inet 10.0.2.15/24" in out, _describe(zonehost, name, result)
    assert "default via 10.0.2.2" in out
    assert "nameserver 10.0.2.3" in out


def test_boot_timeline_is_in_order(zonehost):
    """The ready event's phases are stamped on CLOCK_BOOTTIME, in boot order."""
    name = "timeline"
    result = zonehost.run("--json", "-d", "--name", name, "busybox", "--", "sh", "-c", "exec sleep 100000")
    try:
        assert result.returncode == 0, _describe(zonehost, name, result)
        boot = json.loads(result.stdout)["ready"]
        assert [p["start"] for p in boot["phases"]] == sorted(p["start"] for p in boot["phases"])
        assert [p["name"] for p in boot["phases"]][:3] == ["stage0", "imports", "early-mounts"]
        starts = [p["start"] for p in boot["phases"] if p["name"] not in ("stage0", "imports")]
        assert boot["init_started"] <= starts[0]
        assert [p["name"] for p in boot["phases"]][-1] == "ready"
    finally:
        zonehost("rm", "-f", name, timeout=120)
