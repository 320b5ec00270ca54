"""A pod container's request (podspec) and its config.json (ocimerge) from containerd 1.6's real CRI configs.

fixtures/containerd-1.6-cri-*.json are the config.json files containerd 1.6's CRI plugin wrote for runc
(captured with a runtime ``BinaryName`` wrapper copying the bundle's config.json) for two containers of one
pod made with ``crictl runp`` + ``crictl create``: ``app`` (user 1000:3000 with supplemental group 2000,
NET_ADMIN added and MKNOD dropped, CPU and memory limits, oom_score_adj, RuntimeDefault seccomp, hostPath and
termination-log mounts, its own pid namespace) and ``tty`` (a terminal, read-only root, unconfined, the pod's
pid namespace: ``shareProcessNamespace``, which the zone gives it with a pid namespace of the pod's).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from styrolite.spec.parse import parse_config
from zoneinit.config.plan import ContainerPlan
from zoneinit.containers.bundle import container_config
from zoneinit.containers.ocimerge import PodPaths, check_pod_sysctls, merge
from zoneinit.containers.pod import Pod
from zoneinit.containers.podspec import OWN, POD, check_oci, parse_pod_spec
from zoneinit.errors import ZoneConfigError
from zoneinit.mounts.table import MountTable

FIXTURES = Path(__file__).parent / "fixtures"
PATHS = PodPaths("/run/zone/netns/workload", "/run/zone/pod/ns/ipc", "/run/zone/pod/ns/uts",
                 "/run/zone/pod/ns/user", "/run/zone/pod/ns/pid")


def cri(name: str = "app") -> dict:
    return json.loads((FIXTURES / f"containerd-1.6-cri-{name}.json").read_text())


def without_host_mounts(oci: dict) -> dict:
    """What a shim sends: containerd's config minus the host bind mounts (they become volumes)."""
    oci = copy.deepcopy(oci)
    oci["mounts"] = [m for m in oci["mounts"] if m["type"] != "bind"]
    return oci


def refusal(oci: dict, **payload: object) -> str:
    with pytest.raises(ZoneConfigError) as error:
        parse_pod_spec({"oci": oci, **payload})
    return str(error.value)


def test_the_cri_config_is_taken_apart():
    warnings: list[str] = []
    checked = check_oci(without_host_mounts(cri()), warnings)
    assert checked["process"]["user"] == {"uid": 1000, "gid": 3000, "additionalGids": [2000, 3000]}
    assert "CAP_NET_ADMIN" in checked["process"]["capabilities"]["bounding"]
    assert checked["root"] == {"readonly": False}   # never its path: the host's
    assert "cgroupsPath" not in checked["linux"]
    assert checked["linux"]["namespaces"] == {"pid": OWN, "mount": OWN, "cgroup": OWN, "ipc": POD, "uts": POD,
                                              "network": POD}
    assert [m["destination"] for m in checked["mounts"]] == ["/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys",
                                                             "/sys/fs/cgroup"]
    assert warnings == []


def test_a_host_bind_mount_is_refused_by_name():
    message = refusal(cri())
    assert "$.oci.mounts[6]" in message and "/data" in message and "hostvol" in message and "volume" in message


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda c: c.update(hooks={"prestart": [{"path": "/usr/bin/x"}]}), "$.oci.hooks: hooks run programs on the host"),
    (lambda c: c["linux"]["namespaces"].pop(0), "hostPID"),
    (lambda c: c["linux"]["namespaces"][0].update(path=["/proc/1/ns/pid"]), "$.oci.linux.namespaces[0].path: "
                                                                            "expected a path"),
    (lambda c: c["linux"]["namespaces"][0].update(path="/proc/1/ns/pid\0x"), "$.oci.linux.namespaces[0].path"),
    (lambda c: c["linux"]["namespaces"][1].update(path=7), "$.oci.linux.namespaces[1].path: expected a path"),
    (lambda c: c["linux"]["namespaces"].append({"type": "time"}), "time namespaces"),
    (lambda c: c["linux"]["namespaces"][3].update(path="/proc/1/ns/mnt"), "mount namespace of its own"),
    (lambda c: c["linux"].update(intelRdt={"closID": "x"}), "$.oci.linux.intelRdt: not supported"),
    (lambda c: c.update(vm={"hypervisor": {}}), "$.oci.vm: not supported"),
    (lambda c: c["root"].update(readonly="yes"), "$.oci.root.readonly"),
])
def test_what_a_zone_cannot_honour_is_refused(edit, expected):
    oci = without_host_mounts(cri())
    edit(oci)
    assert expected in refusal(oci)


def test_empty_hooks_and_lsm_labels_are_no_refusal():
    oci = without_host_mounts(cri())
    oci["hooks"] = {}
    oci["process"]["apparmorProfile"] = "cri-containerd.apparmor.d"
    spec = parse_pod_spec({"oci": oci})
    assert "apparmorProfile" not in spec.oci["process"]
    assert spec.warnings == ["$.oci.process.apparmorProfile: the zone kernel has no such security module; ignored"]


@pytest.mark.parametrize("host_path", ["/proc/20480/ns/pid", "/proc/1/ns/pid", "/proc/self/ns/pid", "../../ns/pid",
                                       "ns/pid", "/dev/null"])
def test_a_pid_path_is_the_pods_pid_namespace_whatever_it_names(host_path):
    """shareProcessNamespace (CRI's POD mode, and TARGET's, whose pid is the VMM's too): the pod's pid namespace,
    never the path the host gave (a host path; in the zone it could name PID 1's own namespace)."""
    oci = without_host_mounts(cri("tty"))
    oci["linux"]["namespaces"][0]["path"] = host_path
    checked = check_oci(oci, [])
    assert checked["linux"]["namespaces"]["pid"] == POD
    config = {"process": {}, "root": {"path": "rootfs", "readonly": False}, "linux": {}}
    merged = merge(config, checked, PATHS, owner_shift=65536)
    assert {"type": "pid", "path": "/run/zone/pod/ns/pid"} in config["linux"]["namespaces"]
    assert not any(ns.get("path") == host_path for ns in config["linux"]["namespaces"])
    assert merged.shared == {"user", "pid", "ipc", "uts"}


def test_without_a_pid_path_the_container_has_its_own_pid_namespace():
    oci = without_host_mounts(cri("tty"))
    for no_path in ("", None):   # an empty path is no path (runc's reading)
        oci["linux"]["namespaces"][0] = {"type": "pid", "path": no_path}
        config = {"process": {}, "root": {"path": "rootfs", "readonly": False}, "linux": {}}
        merged = merge(config, check_oci(oci, []), PATHS, owner_shift=0)
        assert {"type": "pid"} in config["linux"]["namespaces"] and "pid" not in merged.shared


def test_volumes_are_checked():
    spec = parse_pod_spec({"volumes": [
        {"kind": "emptydir", "name": "cache", "destination": "/cache/"},
        {"kind": "emptydir", "name": "shm", "destination": "/dev/shm", "medium": "memory", "size": 1 << 20},
        {"kind": "files", "destination": "/etc/config", "files": [{"path": "a/b", "data": b"x", "mode": 0o4755}]},
        {"kind": "files", "destination": "/dev/termination-log", "readonly": False, "files": [{"data": b""}]},
    ], "attach": True})
    cache, shm, config, log = spec.volumes
    assert cache.destination == "/cache" and not cache.readonly and shm.size == 1 << 20
    assert config.readonly and config.files[0].path == "a/b" and config.files[0].mode == 0o755   # no setuid
    assert log.files[0].path == "" and not log.readonly
    assert spec.attach is True


@pytest.mark.parametrize(("volumes", "expected"), [
    ([{"kind": "hostpath", "destination": "/x"}], "$.volumes[0].kind"),
    ([{"kind": "emptydir", "name": "../x", "destination": "/x"}], "$.volumes[0].name"),
    ([{"kind": "emptydir", "name": "x", "destination": "x"}], "$.volumes[0].destination: expected an absolute"),
    ([{"kind": "emptydir", "name": "x", "destination": "/a/../b"}], "must not contain '..'"),
    ([{"kind": "emptydir", "name": "x", "destination": "/x", "size": 8192}], "needs medium 'memory'"),
    ([{"kind": "files", "destination": "/x", "files": [{"path": "../etc", "data": b""}]}], "without '..'"),
    ([{"kind": "files", "destination": "/x", "files": [{"data": b""}, {"path": "b", "data": b""}]}],
     "exactly one file"),
    ([{"kind": "files", "destination": "/x", "files": []}], "non-empty list"),
    ([{"kind": "emptydir", "name": "a", "destination": "/x"}, {"kind": "emptydir", "name": "b", "destination": "/x"}],
     "is also $.volumes[0]'s"),
    ([{"kind": "files", "destination": "/x", "files": [{"data": b"x" * (1 << 20)}, ]},
      {"kind": "files", "destination": "/y", "files": [{"data": b"y"}]}], "exceed"),
    ([{"kind": "emptydir", "name": "a", "destination": "/x", "color": "red"}], "$.volumes[0].color: unknown field"),
])
def test_bad_volumes_are_refused(volumes, expected):
    with pytest.raises(ZoneConfigError) as error:
        parse_pod_spec({"volumes": volumes})
    assert expected in str(error.value)


def test_a_volume_over_a_kernel_mount_is_refused():
    message = refusal(without_host_mounts(cri()), volumes=[{"kind": "emptydir", "name": "p", "destination": "/proc"}])
    assert "$.volumes[0].destination" in message and "$.oci.mounts[0]" in message


def _plan(oci: dict, volumes: list | None = None) -> ContainerPlan:
    spec = parse_pod_spec({"oci": oci, "volumes": volumes or []})
    return ContainerPlan("app", image="rootfs0", args=oci["process"]["args"], oci=spec.oci, volumes=spec.volumes,
                         terminal=oci["process"].get("terminal", False))


def test_the_merged_config_is_what_the_pod_asked_under_the_zones_rules(tmp_path):
    oci = without_host_mounts(cri())
    oci["linux"]["sysctl"] = {"net.ipv4.ip_unprivileged_port_start": "80", "kernel.shmmax": "1000000",
                              "kernel.msgmax": "9000"}
    pod = Pod(str(tmp_path / "pod"), "/run/zone/netns/workload", "web-0", MountTable())
    volumes = [{"kind": "files", "destination": "/etc/hosts", "files": [{"data": b"127.0.0.1 localhost\n"}]},
               {"kind": "emptydir", "name": "data", "destination": "/data"}]
    config, merged = container_config(_plan(oci, volumes), hostname="web-0",
                                      name_files={"hosts": "/run/zone/net/hosts", "resolv.conf": "/run/zone/net/r"},
                                      netns="/run/zone/netns/workload", owner_shift=65536, pod=pod)
    assert config["process"] == {**oci["process"], "cwd": "/tmp", "oomScoreAdj": 1000}
    assert config["root"] == {"path": "rootfs", "readonly": False}
    assert "hostname" not in config            # the pod's uts namespace holds the pod's name
    ns = tmp_path / "pod/ns"
    assert config["linux"]["namespaces"] == [
        {"type": "user", "path": f"{ns}/user"}, {"type": "pid"},
        {"type": "ipc", "path": f"{ns}/ipc"}, {"type": "uts", "path": f"{ns}/uts"},
        {"type": "mount"}, {"type": "cgroup"}, {"type": "network", "path": "/run/zone/netns/workload"}]
    assert "uidMappings" not in config["linux"] and "cgroupsPath" not in config["linux"]
    assert config["linux"]["resources"] == oci["linux"]["resources"]
    assert config["linux"]["seccomp"] == oci["linux"]["seccomp"]
    assert config["linux"]["maskedPaths"]      # absent in containerd's: the zone's defaults stay
    assert "sysctl" not in config["linux"]     # every one of them belongs to a namespace the pod shares
    assert merged.pod_sysctls == {"network": {"net.ipv4.ip_unprivileged_port_start": "80"},
                                  "ipc": {"kernel.shmmax": "1000000", "kernel.msgmax": "9000"}}
    binds = {m["destination"]: m for m in config["mounts"] if m["type"] == "bind"}
    assert binds["/etc/hosts"]["source"] == str(tmp_path / "pod/files/app/0")     # the volume, not the zone's
    assert binds["/data"]["source"] == str(tmp_path / "pod/emptydir/data") and "rw" in binds["/data"]["options"]
    assert binds["/etc/resolv.conf"]["source"] == "/run/zone/net/r"               # the zone's name file stays
    assert config["annotations"]["io.kubernetes.cri.container-name"] == "app"
    parse_config(config)   # the runtime takes it


def test_unconfined_seccomp_is_none_and_a_tty_gets_its_own_uts_when_asked():
    oci = without_host_mounts(cri("tty"))
    oci["linux"]["namespaces"][0].pop("path")       # its own pid namespace
    oci["linux"]["namespaces"][2].pop("path")       # its own uts namespace
    oci["hostname"] = "shell-0"
    config = {"process": {}, "root": {"path": "rootfs", "readonly": False}, "hostname": "zone",
              "linux": {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO"}}}
    merge(config, check_oci(oci, []), PATHS, owner_shift=0)
    assert "seccomp" not in config["linux"]         # the pod asked for none: exactly that, never "stronger" guesses
    assert config["hostname"] == "shell-0" and config["root"]["readonly"] is True
    assert {"type": "uts"} in config["linux"]["namespaces"]
    assert not any(ns["type"] == "user" for ns in config["linux"]["namespaces"])
    assert config["process"]["terminal"] is True


def test_devices_are_the_zones_only():
    oci = without_host_mounts(cri())
    oci["linux"]["devices"] = [{"path": "/dev/null", "type": "c", "major": 1, "minor": 3},
                               {"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0}]
    config = {"process": {}, "root": {"path": "rootfs"}, "linux": {}}
    merged = merge(config, check_oci(oci, []), PATHS, owner_shift=0)
    assert [d["path"] for d in config["linux"]["devices"]] == ["/dev/null"]
    assert merged.warnings == ["$.oci.linux.devices: /dev/nvidia0 does not exist in the zone; not created"]


def test_a_pod_sysctl_the_kernel_lacks_is_refused(tmp_path):
    (tmp_path / "net" / "ipv4").mkdir(parents=True)
    (tmp_path / "net" / "ipv4" / "ip_forward").write_text("0\n")
    check_pod_sysctls({"network": {"net.ipv4.ip_forward": "1"}}, str(tmp_path))
    with pytest.raises(ValueError, match=r"'net\.ipv4\.no_such' does not exist in the zone kernel"):
        check_pod_sysctls({"network": {"net.ipv4.no_such": "1"}}, str(tmp_path))
