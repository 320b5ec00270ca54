import json

import pytest

from styrolite.errors import describe
from zoneinit.config.diskformat import encode_config_disk
from zoneinit.config.document import dumps
from zoneinit.config.parser import parse_zone_config
from zoneinit.config.plan import ContainerPlan
from zoneinit.containers.bundle import build_config
from zoneinit.errors import ConfigDiskError, ZoneConfigError
from zoneinit.mounts.configdisk import read_plan

DIGEST = "sha256:" + "ab" * 32

CONFIG = {
    "version": 1,
    "name": "zone-1",
    "hostname": "web",
    "network": {"interface": "eth0", "ipv4": {"address": "10.0.2.15", "prefix": 24, "gateway": "10.0.2.2"},
                "ipv6": {"address": "fd00::15", "prefix": 64, "gateway": "fd00::2"},
                "dns": ["10.0.2.3"], "search": ["example.org"], "mtu": 1400},
    "disks": [
        {"name": "addons", "role": "addons", "device": "/dev/vda", "sha256": DIGEST, "size": 4096},
        {"name": "root0", "role": "root", "device": "/dev/vdc", "sha256": DIGEST, "size": 8192, "fstype": "erofs"},
    ],
    "containers": [
        {"name": "app", "image": "root0", "args": ["/bin/sh", "-c", "echo hi"], "env": ["A=1"], "cwd": "/srv",
         "user": {"uid": 1000, "gid": 100, "additional_gids": [5]},
         "limits": {"memory": 67108864, "cpus": 0.5, "pids": 128}, "main": True},
    ],
    "modules": ["dummy"],
    "options": {"poweroff_on_exit": False, "shutdown_grace": 3.0, "debug": True},
}


def test_config_disk_to_launch_plan(tmp_path):
    disk = tmp_path / "config.img"
    disk.write_bytes(encode_config_disk(parse_zone_config(CONFIG)))
    plan = read_plan(str(disk))
    assert (plan.name, plan.hostname, plan.modules, plan.addons) == ("zone-1", "web", ["dummy"], "addons")
    assert (plan.poweroff_on_exit, plan.shutdown_grace, plan.debug) == (False, 3.0, True)
    assert [(d.name, d.device, d.sha256, d.size, d.fstype) for d in plan.disks] == [
        ("addons", "/dev/vda", DIGEST, 4096, "squashfs"), ("root0", "/dev/vdc", DIGEST, 8192, "erofs")]
    net = plan.network
    assert net.hostname == "web" and net.nameservers == ["10.0.2.3"] and net.search == ["example.org"]
    assert [(i.name, i.addresses, i.mtu) for i in net.interfaces] == [("eth0", ["10.0.2.15/24", "fd00::15/64"], 1400)]
    assert [(r.destination, r.gateway) for r in net.routes] == [("default", "10.0.2.2"), ("default", "fd00::2")]
    (c,) = plan.containers
    assert (c.id, c.image, c.args, c.cwd, c.uid, c.gid, c.additional_gids, c.main) == (
        "app", "root0", ["/bin/sh", "-c", "echo hi"], "/srv", 1000, 100, [5], True)
    assert (c.memory_limit, c.cpus, c.pids_limit) == (67108864, 0.5, 128)


def test_the_pods_sysctls_go_from_the_config_to_the_plan(tmp_path):
    sysctls = {"kernel.shm_rmid_forced": "1", "fs.mqueue.msg_max": "100", "net.ipv4.ip_forward": "1"}
    disk = tmp_path / "config.img"
    disk.write_bytes(encode_config_disk(parse_zone_config({**CONFIG, "sysctls": sysctls})))
    assert read_plan(str(disk)).sysctls == sysctls
    assert "sysctls" not in json.loads(dumps(parse_zone_config(CONFIG)))   # none: the document has no key


@pytest.mark.parametrize(("sysctls", "message"), [
    ({"kernel.pid_max": "4096"}, "$.sysctls['kernel.pid_max']: sysctl is not namespaced: setting it would change "
                                 "the whole zone kernel"),
    ({"kernel.hostname": "x"}, "$.sysctls['kernel.hostname']: sysctl is not namespaced"),
    ({"net.ipv4.ip_forward": 1}, "$.sysctls['net.ipv4.ip_forward']: expected a string"),
    ({"net..ipv4": "1"}, "$.sysctls['net..ipv4']: not a sysctl name"),
    ({"net/../kernel/x": "1"}, "not a sysctl name"),
])
def test_a_sysctl_that_is_not_the_pods_is_refused_by_name(sysctls, message):
    with pytest.raises(ZoneConfigError) as info:
        parse_zone_config({**CONFIG, "sysctls": sysctls})
    assert message in describe(info.value)


def test_bad_config_disks_fail_with_the_reason(tmp_path):
    corrupt = bytearray(encode_config_disk(parse_zone_config(CONFIG)))
    corrupt[600] ^= 1
    (tmp_path / "corrupt").write_bytes(corrupt)
    with pytest.raises(ConfigDiskError) as e:
        read_plan(str(tmp_path / "corrupt"))
    assert "checksum mismatch" in describe(e.value)
    (tmp_path / "junk").write_bytes(b"\0" * 4096)
    with pytest.raises(ConfigDiskError, match="no zone config"):
        read_plan(str(tmp_path / "junk"))
    with pytest.raises(ConfigDiskError, match="does not exist"):
        read_plan(str(tmp_path / "missing"))
    (tmp_path / "strict.json").write_text('{"version": 1, "name": "z", "bogus": 1}')
    with pytest.raises(ConfigDiskError) as e:
        read_plan(str(tmp_path / "strict.json"))
    assert "bogus" in describe(e.value)


def test_a_json_document_for_development_goes_through_the_same_parser(tmp_path):
    import json

    (tmp_path / "dev.json").write_text(json.dumps(CONFIG))
    plan = read_plan(str(tmp_path / "dev.json"))
    assert plan.containers[0].id == "app" and plan.main_container().id == "app"
    assert plan.network.interfaces[0].addresses == ["10.0.2.15/24", "fd00::15/64"]
    (tmp_path / "old.json").write_text('{"containers": [{"id": "a", "args": ["true"]}]}')
    with pytest.raises(ConfigDiskError) as e:
        read_plan(str(tmp_path / "old.json"))
    assert "$.version: missing" in describe(e.value)


def test_config_json_from_a_container_plan():
    plan = ContainerPlan(id="app", args=["sleep", "1"], env=["PATH=/bin", "A=1"], cwd="/srv", uid=7, gid=8,
                         terminal=True, main=True, memory_limit=1 << 26, cpus=1.5, pids_limit=64)
    config = build_config(plan, hostname="zone1", name_files={"resolv.conf": "/run/zone/net/resolv.conf",
                                                                "hostname": "/run/zone/net/hostname"})
    process = config["process"]
    assert process["args"] == ["sleep", "1"] and process["cwd"] == "/srv" and process["terminal"] is True
    assert process["user"] == {"uid": 7, "gid": 8} and process["oomScoreAdj"] == 0
    assert "PATH=/bin" in process["env"] and "A=1" in process["env"] and "TERM=xterm" in process["env"]
    assert config["hostname"] == "zone1" and config["root"] == {"path": "rootfs", "readonly": False}
    assert {ns["type"] for ns in config["linux"]["namespaces"]} == {"pid", "ipc", "uts", "mount", "network", "cgroup"}
    assert {"type": "network"} in config["linux"]["namespaces"]  # no workload namespace: a fresh, empty one
    joined = build_config(plan, netns="/run/zone/netns/workload")["linux"]["namespaces"]
    assert {"type": "network", "path": "/run/zone/netns/workload"} in joined
    resources = config["linux"]["resources"]
    assert resources["memory"] == {"limit": 1 << 26}
    assert resources["cpu"] == {"quota": 150000, "period": 100000} and resources["pids"] == {"limit": 64}
    binds = [m for m in config["mounts"] if m["destination"].startswith("/etc/")]
    assert binds == [{"destination": "/etc/resolv.conf", "type": "bind", "source": "/run/zone/net/resolv.conf",
                      "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}]
    assert config["annotations"]["zone.main"] == "true"
    from styrolite.spec import parse_config

    parse_config(config)  # Styrolite accepts it


def test_a_shifted_root_image_gives_a_user_namespace():
    """Container ids 0..65535 map to the image's shifted owners, so container root is not zone root."""
    config = build_config(ContainerPlan(id="app", args=["id"]), owner_shift=65536)
    namespaces = config["linux"]["namespaces"]
    assert namespaces[0] == {"type": "user"}
    assert config["linux"]["uidMappings"] == config["linux"]["gidMappings"] == [
        {"containerID": 0, "hostID": 65536, "size": 65536}]
    plain = build_config(ContainerPlan(id="app", args=["id"]))
    assert "uidMappings" not in plain["linux"] and {"type": "user"} not in plain["linux"]["namespaces"]
    from styrolite.spec import parse_config

    parse_config(config)
