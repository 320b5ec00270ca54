"""The decoder: a complete config parses into the model, round-trips, and bad types name their JSON path."""

from __future__ import annotations

import copy
import json

import pytest

from styrolite.errors import ConfigError, describe
from styrolite.spec import (
    ConfigFileError,
    default_config,
    load_config,
    load_process,
    parse_config,
    parse_process,
    to_json_obj,
)
from styrolite.spec.model import Device, IDMapping, Namespace, Rlimit, SeccompArg, TimeOffset


def full_config() -> dict:
    """``runc spec`` plus every section Styrolite supports."""
    config = default_config()
    config["ociVersion"] = "1.2.0"
    config["domainname"] = "example.org"
    config["annotations"] = {"org.example.key": "value"}
    process = config["process"]
    process.update({
        "terminal": True,
        "consoleSize": {"height": 24, "width": 80},
        "user": {"uid": 1000, "gid": 1000, "umask": 0o22, "additionalGids": [5, 6], "username": "app"},
        "oomScoreAdj": 100,
        "apparmorProfile": "unconfined",
        "selinuxLabel": "system_u:system_r:svirt_lxc_net_t:s0",
        "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 4},
        "scheduler": {"policy": "SCHED_OTHER", "nice": 5, "flags": ["SCHED_FLAG_RESET_ON_FORK"]},
        "execCPUAffinity": {"initial": "0", "final": "0-1"},
    })
    process["capabilities"]["inheritable"] = ["CAP_KILL"]
    process["capabilities"]["ambient"] = ["CAP_KILL"]
    process["rlimits"].append({"type": "RLIMIT_CORE", "soft": 0, "hard": 2**64 - 1})
    config["mounts"].append({
        "destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro", "rprivate"],
        "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
    })
    hook = {"path": "/usr/bin/hook", "args": ["hook", "x"], "env": ["A=1"], "timeout": 5}
    config["hooks"] = {name: [dict(hook)] for name in (
        "prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")}
    linux = config["linux"]
    linux["namespaces"] += [{"type": "cgroup"}, {"type": "time"}, {"type": "user"}]
    linux["namespaces"][1] = {"type": "ipc", "path": "/proc/1/ns/ipc"}
    linux["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    linux["timeOffsets"] = {"monotonic": {"secs": 3600, "nanosecs": 5}, "boottime": {"secs": -10}}
    linux["devices"] = [{"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229, "fileMode": 0o666,
                         "uid": 0, "gid": 0}, {"type": "p", "path": "/dev/fifo"}]
    linux["cgroupsPath"] = "/styrolite/test"
    linux["rootfsPropagation"] = "rslave"
    linux["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmax": "4096", "fs.mqueue.msg_max": "10"}
    linux["mountLabel"] = "system_u:object_r:svirt_sandbox_file_t:s0"
    linux["personality"] = {"domain": "LINUX", "flags": []}
    linux["resources"] = {
        "devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3,
                                                         "access": "rw"}],
        "memory": {"limit": 1 << 30, "reservation": 1 << 29, "swap": -1, "swappiness": 10,
                   "disableOOMKiller": False, "kernelTCP": 0, "checkBeforeUpdate": True},
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "burst": 0, "cpus": "0-1", "mems": "0",
                "realtimeRuntime": 0, "realtimePeriod": 0, "idle": 0},
        "pids": {"limit": 64},
        "blockIO": {"weight": 100, "leafWeight": 10,
                    "weightDevice": [{"major": 8, "minor": 0, "weight": 200, "leafWeight": 20}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}],
                    "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}],
                    "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 10}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 10}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 21}],
        "network": {"classID": 7, "priorities": [{"name": "eth0", "priority": 1}]},
        "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}},
        "unified": {"memory.high": "max", "io.weight": "default 100"},
    }
    linux["seccomp"] = {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 2**64 - 1, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
        ],
    }
    return config


def test_full_config_parses_into_the_model():
    spec = parse_config(full_config())
    assert spec.oci_version == "1.2.0"
    assert spec.root.path == "rootfs" and spec.root.readonly
    assert spec.process.user.additional_gids == [5, 6] and spec.process.user.umask == 0o22
    assert spec.process.console_size.width == 80
    assert spec.process.io_priority.class_ == "IOPRIO_CLASS_BE"
    assert spec.process.exec_cpu_affinity.final == "0-1"
    assert spec.process.rlimits[1] == Rlimit(type="RLIMIT_CORE", soft=0, hard=2**64 - 1)
    assert spec.mounts[-1].uid_mappings == [IDMapping(container_id=0, host_id=100000, size=65536)]
    assert [len(getattr(spec.hooks, k)) for k in ("prestart", "create_runtime", "poststop")] == [1, 1, 1]
    assert spec.hooks.start_container[0].timeout == 5
    assert spec.namespace("ipc") == Namespace(type="ipc", path="/proc/1/ns/ipc")
    assert spec.linux.time_offsets["boottime"] == TimeOffset(secs=-10, nanosecs=0)
    assert spec.linux.devices[0] == Device(type="c", path="/dev/fuse", major=10, minor=229, file_mode=0o666,
                                           uid=0, gid=0)
    resources = spec.linux.resources
    assert resources.memory.swap == -1 and resources.memory.disable_oom_killer is False
    assert resources.block_io.throttle_write_iops_device[0].rate == 10
    assert resources.network.class_id == 7
    assert resources.rdma["mlx5_1"]["hcaObjects"] == 10000
    assert spec.linux.seccomp.syscalls[1].args == [SeccompArg(index=0, value=2**64 - 1, op="SCMP_CMP_EQ")]
    assert spec.linux.sysctl["net.ipv4.ip_forward"] == "1"


@pytest.mark.parametrize("make", [full_config, default_config, lambda: default_config(rootless=True)])
def test_round_trip(make):
    config = make()
    spec = parse_config(config)
    again = parse_config(json.loads(json.dumps(to_json_obj(spec))))
    assert again == spec


def test_serializer_omits_absent_and_empty_fields():
    out = to_json_obj(parse_config(default_config()))
    assert "hooks" not in out and "annotations" not in out and "domainname" not in out
    assert "apparmorProfile" not in out["process"]
    assert "options" not in out["mounts"][0]  # /proc has none
    assert out["process"]["noNewPrivileges"] is True


def test_unknown_keys_are_ignored():
    config = full_config()
    config["windows"] = {"layerFolders": []}
    config["process"]["commandLine"] = "x"
    config["linux"]["someFutureKnob"] = {"x": 1}
    assert parse_config(config).process.args == ["sh"]


def test_null_optional_and_defaulted_fields_are_accepted():
    config = default_config()
    config["hooks"] = None
    config["process"]["env"] = None
    config["linux"]["maskedPaths"] = None
    spec = parse_config(config)
    assert spec.hooks is None and spec.process.env == [] and spec.linux.masked_paths == []


def _error(config: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(config)
    return info.value


@pytest.mark.parametrize(
    ("mutate", "path", "message"),
    [
        (lambda c: c.update(ociVersion=1), "ociVersion", "expected string, got integer"),
        (lambda c: c["process"].update(terminal="yes"), "process.terminal", "expected boolean, got string"),
        (lambda c: c["process"]["user"].update(uid=True), "process.user.uid", "expected integer, got boolean"),
        (lambda c: c["process"]["user"].update(uid=1.0), "process.user.uid", "expected integer, got number"),
        (lambda c: c["process"].update(args="sh"), "process.args", "expected array, got string"),
        (lambda c: c["process"]["args"].append(7), "process.args[1]", "expected string, got integer"),
        (lambda c: c.update(linux=[]), "linux", "expected object, got array"),
        (lambda c: c["linux"]["namespaces"].append({}), "linux.namespaces[5].type", "required string is missing"),
        (lambda c: c["linux"].update(sysctl={"net.core.somaxconn": 5}), 'linux.sysctl["net.core.somaxconn"]',
         "expected string, got integer"),
        (lambda c: c["process"]["rlimits"][0].update(hard=2**64), "process.rlimits[0].hard", "out of range"),
        (lambda c: c["process"]["rlimits"][0].update(soft=None), "process.rlimits[0].soft",
         "expected integer, got null"),
        (lambda c: c["root"].update(path=None), "root.path", "expected string, got null"),
        (lambda c: c.pop("ociVersion"), "ociVersion", "required string is missing"),
    ],
)
def test_type_errors_name_the_json_path(mutate, path, message):
    config = default_config()
    mutate(config)
    error = _error(config)
    assert error.path == path
    assert message in error.message
    assert str(error).startswith(f"{path}: ")


def test_top_level_must_be_an_object():
    assert _error([]).message == "config must be a JSON object, got array"


def test_load_config_reads_a_bundle(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(full_config()))
    assert load_config(str(tmp_path / "config.json")).hostname == "styrolite"


def test_load_config_missing_file_names_it(tmp_path):
    file = str(tmp_path / "config.json")
    with pytest.raises(ConfigError) as info:
        load_config(file)
    assert str(info.value) == f"{file}: cannot read: No such file or directory"
    assert describe(info.value) == str(info.value)


def test_load_config_invalid_json_names_file_and_line(tmp_path):
    file = tmp_path / "config.json"
    file.write_text('{\n  "ociVersion": "1.0.0",\n  "root": {"path": "rootfs",}\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(file))
    assert str(info.value).startswith(f"{file}: line 3 column ")
    assert "invalid JSON" in str(info.value)


@pytest.mark.parametrize(
    "text",
    ['{"ociVersion": NaN}', "\xff\xfe", "[" * 100000, '{"a": 1' + "0" * 5000 + "}"],
    ids=["nan", "not-utf8", "too-deep", "huge-integer"],
)
def test_load_config_rejects_non_json(tmp_path, text):
    file = tmp_path / "config.json"
    file.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigFileError) as info:
        load_config(str(file))
    assert info.value.file == str(file)


def test_load_config_semantic_error_keeps_json_path_and_names_file(tmp_path):
    config = default_config()
    config["linux"]["namespaces"][2]["type"] = "foo"
    file = tmp_path / "config.json"
    file.write_text(json.dumps(config))
    with pytest.raises(ConfigError) as info:
        load_config(str(file))
    error = info.value
    assert error.path == "linux.namespaces[2].type"
    assert str(error).startswith(f"{file}: linux.namespaces[2].type: unknown namespace type \"foo\"")
    assert describe(error) == str(error)


def test_parse_process_for_exec(tmp_path):
    doc = copy.deepcopy(default_config()["process"])
    doc["args"] = ["ls", "-l"]
    assert parse_process(doc).args == ["ls", "-l"]
    (tmp_path / "process.json").write_text(json.dumps(doc))
    assert load_process(str(tmp_path / "process.json")).cwd == "/"
    doc["cwd"] = "relative"
    with pytest.raises(ConfigError) as info:
        parse_process(doc)
    assert info.value.path == "cwd"
    with pytest.raises(ConfigError) as info:
        parse_process({"args": ["x"]})
    assert info.value.path == "cwd" and "missing" in info.value.message
