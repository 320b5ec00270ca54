"""The default config and the features document: valid, consistent with the validator, hardened."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess

import pytest

from styrolite.spec import DEFAULT_DEVICES, default_config, features, parse_config
from styrolite.spec.vocabulary import CAPABILITIES, CAPABILITY_NUMBERS, RLIMIT_NUMBERS


def test_default_config_is_valid_and_hardened():
    spec = parse_config(default_config())
    caps = spec.process.capabilities
    assert "CAP_NET_RAW" not in caps.bounding and "CAP_SYS_ADMIN" not in caps.bounding
    assert set(caps.effective) == set(caps.bounding) == set(caps.permitted) and not caps.ambient
    assert len(caps.bounding) == 13
    assert spec.process.no_new_privileges and spec.process.args == ["sh"] and not spec.process.terminal
    assert [(r.type, r.soft, r.hard) for r in spec.process.rlimits] == [("RLIMIT_NOFILE", 1024, 1024)]
    assert [ns.type for ns in spec.linux.namespaces] == ["pid", "ipc", "uts", "mount", "network"]
    assert [m.destination for m in spec.mounts] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
    assert "/proc/kcore" in spec.linux.masked_paths and "/proc/sys" in spec.linux.readonly_paths
    assert spec.root.readonly


def test_rootless_default_maps_the_caller():
    spec = parse_config(default_config(rootless=True))
    assert spec.namespace("user") is not None and spec.namespace("network") is None
    assert spec.linux.uid_mappings[0].host_id == os.getuid() and spec.linux.uid_mappings[0].size == 1
    assert spec.linux.gid_mappings[0].host_id == os.getgid()


@pytest.mark.root
@pytest.mark.skipif(shutil.which("runc") is None or not os.path.exists("/bin/busybox"), reason="needs runc, busybox")
def test_default_config_runs_under_runc(tmp_path):
    """The document is a real config.json: another OCI runtime (runc) runs it as is."""
    (tmp_path / "rootfs" / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", tmp_path / "rootfs" / "bin" / "sh")
    config = default_config()
    config["process"]["args"] = ["sh", "-c", "echo ok"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    state = str(tmp_path / "state")
    result = subprocess.run(["runc", "--root", state, "run", "--bundle", str(tmp_path), f"spec-{os.getpid()}"],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, "ok\n"), result.stderr


@pytest.mark.parametrize("device", DEFAULT_DEVICES, ids=lambda d: d.path)
def test_default_devices_match_the_host(device):
    st = os.stat(device.path)
    assert stat.S_ISCHR(st.st_mode) and device.type == "c"
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (device.major, device.minor)
    assert device.file_mode == 0o666


def test_features_document():
    doc = features()
    assert doc["ociVersionMin"] == "1.0.0" and doc["ociVersionMax"].startswith("1.3.")
    assert set(doc["hooks"]) == {"prestart", "createRuntime", "createContainer", "startContainer", "poststart",
                                 "poststop"}
    linux = doc["linux"]
    assert linux["namespaces"] == ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"]
    assert linux["capabilities"][-1] == "CAP_CHECKPOINT_RESTORE" and len(linux["capabilities"]) == 41
    assert linux["cgroup"]["v2"] and linux["cgroup"]["v1"] and not linux["cgroup"]["systemd"]
    assert linux["seccomp"]["enabled"] and "SCMP_ACT_NOTIFY" not in linux["seccomp"]["actions"]
    assert "SCMP_CMP_MASKED_EQ" in linux["seccomp"]["operators"]
    assert set(linux["seccomp"]["supportedFlags"]) <= set(linux["seccomp"]["knownFlags"])
    assert not linux["apparmor"]["enabled"] and not linux["selinux"]["enabled"]
    assert {"ro", "rro", "nosuid", "rbind", "rprivate", "strictatime"} <= set(doc["mountOptions"])
    json.dumps(doc)


def test_every_advertised_version_and_name_is_accepted():
    doc = features()
    for version in (doc["ociVersionMin"], doc["ociVersionMax"]):
        config = default_config()
        config["ociVersion"] = version
        parse_config(config)
    config = default_config()
    config["process"]["capabilities"]["bounding"] = doc["linux"]["capabilities"]
    config["linux"]["namespaces"] = [{"type": t} for t in doc["linux"]["namespaces"]]
    config["linux"]["uidMappings"] = config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 0, "size": 1}]
    config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": doc["linux"]["seccomp"]["archs"],
        "flags": doc["linux"]["seccomp"]["knownFlags"],
        "syscalls": [{"names": ["read"], "action": action, "args": [{"index": 0, "value": 0, "op": op}]}
                     for action in doc["linux"]["seccomp"]["actions"] for op in doc["linux"]["seccomp"]["operators"]],
    }
    parse_config(config)


def test_vocabulary_numbers_match_the_kernel():
    import resource

    assert CAPABILITY_NUMBERS["CAP_SYS_ADMIN"] == 21 and CAPABILITIES[40] == "CAP_CHECKPOINT_RESTORE"
    for name, number in RLIMIT_NUMBERS.items():
        assert getattr(resource, name, number) == number, name
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert int(f.read()) >= 40


def test_vocabulary_agrees_with_the_seccomp_compiler():
    """What the validator accepts (and features advertises) is exactly what styrolite.security compiles."""
    seccomp = pytest.importorskip("styrolite.security.seccomp")
    from styrolite.spec import vocabulary

    assert set(vocabulary.SECCOMP_ARCHITECTURES) == set(seccomp.ARCHITECTURES)
    assert set(vocabulary.SECCOMP_ACTIONS) == set(seccomp.ACTIONS)
    assert set(features()["linux"]["seccomp"]["supportedFlags"]) == set(seccomp.FLAGS)


def test_vocabulary_agrees_with_the_security_tables():
    capabilities = pytest.importorskip("styrolite.security.capabilities")
    rlimits = pytest.importorskip("styrolite.security.rlimits")

    assert capabilities.CAPABILITY_NUMBERS == CAPABILITY_NUMBERS
    assert rlimits.RLIMIT_NUMBERS == RLIMIT_NUMBERS
