"""The zone backend's host-side pieces that need no zone: its config, the pod from the sandbox spec, mounts
classified into what a zone can honour, the container request, stats, the runtime options, IDM stream
adapters. (The backend with real zones: qemu-tests/test_pods.py.)"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import any_pb2

from shim.protos import runtimeoptions_pb2
from shim.runtime_options import config_path
from shim.ttrpc.status import Code, RpcError
from shim.zone import config as shim_config
from shim.zone.boot import zone_document
from shim.zone.sandbox import pod_sandbox, zone_name_of
from shim.zone.stats import container_stats, zone_stats
from shim.zone.streams import PendingStream
from shim.zone.translate import container_request, exec_request
from shim.zone.volumes import FILES_LIMIT, classify
from shim.zone_backend import ContainerSpec, ExecSpec, SandboxSpec
from zoneinit.config.parser import parse_zone_config

SANDBOX_ID = "a" * 64


# --- config -------------------------------------------------------------------------------------------------

def test_config_from_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "shim.toml"
    toml.write_text('memory_mib = 768\nvcpus = 2\nstate_dir = "/run/zt"\nkernel_args = ["debug"]\n'
                    "boot_timeout = 90\n")
    loaded = shim_config.load(str(toml))
    assert (loaded.memory_mib, loaded.vcpus, loaded.state_dir, loaded.kernel_args) == (768, 2, "/run/zt", ["debug"])
    assert loaded.boot_timeout == 90.0 and isinstance(loaded.boot_timeout, float) and loaded.source == str(toml)
    js = tmp_path / "shim.json"
    js.write_text(json.dumps({"memory_mib": 300, "user_namespace": False}))
    assert shim_config.load(str(js)).user_namespace is False


@pytest.mark.parametrize(("text", "message"), [
    ("memroy_mib = 5\n", "unknown setting 'memroy_mib'"),
    ("memory_mib = \"512\"\n", "memory_mib = '512': expected int"),
    ("memory_mib = 16\n", "memory_mib = 16: at least 64"),
    ("vcpus = true\n", "expected int"),
    ("state_dir = \"relative\"\n", "an absolute path"),
    ("hypervisor = \"xen\"\n", "Xen PV needs containerd inside dom0"),
    ("kernel = \"/nonexistent/kernel\"\n", "no such file or directory"),
    ("memory_mib = \n", "not valid TOML"),
])
def test_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "shim.toml"
    path.write_text(text)
    with pytest.raises(shim_config.ConfigError) as info:
        shim_config.load(str(path))
    assert message in str(info.value) and str(path) in str(info.value)


def test_config_sources_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "env.toml"
    env_file.write_text("vcpus = 3\n")
    given = tmp_path / "given.toml"
    given.write_text("vcpus = 2\n")
    monkeypatch.setenv(shim_config.ENV, str(env_file))
    assert shim_config.load(str(given)).vcpus == 2   # the runtime options' ConfigPath first
    assert shim_config.load("").vcpus == 3
    monkeypatch.delenv(shim_config.ENV)
    monkeypatch.setattr(shim_config, "SYSTEM_CONFIG", str(tmp_path / "absent.toml"))
    assert shim_config.load("").source == "defaults"


def test_runtime_options_config_path() -> None:
    options = runtimeoptions_pb2.Options(type_url="io.containerd.zone.v2", config_path="/etc/zone/shim.toml")
    packed = any_pb2.Any(type_url="runtimeoptions.v1.Options", value=options.SerializeToString())
    assert config_path(packed) == "/etc/zone/shim.toml"
    assert config_path(None) == "" and config_path(any_pb2.Any()) == ""
    with pytest.raises(RpcError) as info:
        config_path(any_pb2.Any(type_url="containerd.runc.v1.Options", value=b""))
    assert info.value.code == Code.INVALID_ARGUMENT and "runtimeoptions.v1.Options" in info.value.message


# --- the pod ------------------------------------------------------------------------------------------------

def sandbox_spec(tmp_path: Path, namespaces: list[str] | None = None, netns: str | None = None) -> SandboxSpec:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.0.0.10\nsearch zt.svc.cluster.local\noptions ndots:5\n")
    kinds = namespaces if namespaces is not None else ["pid", "ipc", "uts", "mount", "network"]
    annotations = {"io.kubernetes.cri.sandbox-name": "web", "io.kubernetes.cri.sandbox-namespace": "zt",
                   "io.kubernetes.cri.sandbox-uid": "u1", "io.kubernetes.cri.container-type": "sandbox"}
    spec = {"hostname": "Web_1", "annotations": annotations,
            "mounts": [{"destination": "/etc/resolv.conf", "type": "bind", "source": str(resolv)}],
            "linux": {"namespaces": [{"type": k, **({"path": netns} if k == "network" and netns else {})}
                                     for k in kinds]}}
    return SandboxSpec(SANDBOX_ID, str(tmp_path), spec, "k8s.io")


def test_pod_from_the_sandbox_spec(tmp_path: Path) -> None:
    netns = tmp_path / "netns"
    netns.write_text("")
    pod = pod_sandbox(sandbox_spec(tmp_path, netns=str(netns)))
    assert (pod.name, pod.namespace, pod.uid, pod.netns) == ("web", "zt", "u1", str(netns))
    assert pod.hostname == "web-1" and pod.zone_name == "pod-aaaaaaaaaaaa"
    assert pod.resolv_conf == str(tmp_path / "resolv.conf")
    assert zone_name_of("not hex / long id").startswith("pod-") and len(zone_name_of("x")) == 16


@pytest.mark.parametrize(("missing", "what"), [("network", "hostNetwork"), ("pid", "hostPID"), ("ipc", "hostIPC")])
def test_host_namespaces_are_refused(tmp_path: Path, missing: str, what: str) -> None:
    kinds = [k for k in ("pid", "ipc", "uts", "mount", "network") if k != missing]
    with pytest.raises(RpcError) as info:
        pod_sandbox(sandbox_spec(tmp_path, kinds, netns="/nonexistent"))
    assert info.value.code == Code.INVALID_ARGUMENT and what in info.value.message
    assert "zt/web" in info.value.message


def test_the_pods_sysctls_go_into_the_zone_config(tmp_path: Path) -> None:
    spec = sandbox_spec(tmp_path)
    sysctls = {"kernel.shm_rmid_forced": "1", "fs.mqueue.msg_max": "100", "net.ipv4.ip_unprivileged_port_start": "0"}
    spec.spec["linux"]["sysctl"] = sysctls
    pod = pod_sandbox(spec)
    assert pod.sysctls == sysctls
    document = zone_document(pod, None, 5.0)
    assert document["sysctls"] == sysctls
    assert parse_zone_config(document).sysctls == sysctls   # what the zone's own parser reads
    assert "sysctls" not in zone_document(pod_sandbox(sandbox_spec(tmp_path)), None, 5.0)


@pytest.mark.parametrize(("sysctls", "message"), [
    ({"kernel.pid_max": "4096"}, "pod zt/web: sysctl 'kernel.pid_max' is not namespaced: setting it would change "
                                 "the whole zone kernel, not the pod"),
    ({"vm.swappiness": "1"}, "'vm.swappiness' is not namespaced"),
    ({"net.core.somaxconn": 1024}, "pod zt/web: linux.sysctl of the sandbox is not an object of strings"),
])
def test_a_sysctl_outside_the_pods_namespaces_fails_the_sandbox(tmp_path: Path, sysctls: dict[str, Any],
                                                                 message: str) -> None:
    spec = sandbox_spec(tmp_path)
    spec.spec["linux"]["sysctl"] = sysctls
    with pytest.raises(RpcError) as info:
        pod_sandbox(spec)
    assert info.value.code == Code.INVALID_ARGUMENT and message in info.value.message


# --- volumes -------------------------------------------------------------------------------------------------

def cri_sandbox_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "root" / "io.containerd.grpc.v1.cri" / "sandboxes" / SANDBOX_ID
    directory.mkdir(parents=True)
    for name, text in (("hosts", "127.0.0.1 localhost\n"), ("hostname", "web\n"),
                       ("resolv.conf", "nameserver 1.1.1.1\n")):
        (directory / name).write_text(text)
    (directory / "shm").mkdir()
    return directory


def kubelet_volume(tmp_path: Path, plugin: str, name: str) -> Path:
    path = tmp_path / "kubelet" / "pods" / "uid1" / "volumes" / f"kubernetes.io~{plugin}" / name
    path.mkdir(parents=True)
    return path


def bind(source: Path | str, destination: str, ro: bool = False) -> dict[str, Any]:
    return {"destination": destination, "type": "bind", "source": str(source),
            "options": ["rbind", "rprivate", "ro" if ro else "rw"]}


def test_mounts_are_classified(tmp_path: Path) -> None:
    sandbox = cri_sandbox_dir(tmp_path)
    config_map = kubelet_volume(tmp_path, "configmap", "settings")
    data = config_map / "..2024_01_01"
    data.mkdir()
    (data / "app.conf").write_text("key=value\n")
    (config_map / "..data").symlink_to(data.name)
    (config_map / "app.conf").symlink_to("..data/app.conf")
    scratch = kubelet_volume(tmp_path, "empty-dir", "scratch")
    log_file = tmp_path / "kubelet" / "pods" / "uid1" / "containers" / "app" / "abcd"
    log_file.parent.mkdir(parents=True)
    log_file.write_text("")
    host_file = tmp_path / "host.txt"
    host_file.write_text("from the host\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    spec = {"mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["newinstance"]},
        bind(sandbox / "hosts", "/etc/hosts"), bind(sandbox / "resolv.conf", "/etc/resolv.conf"),
        bind(sandbox / "shm", "/dev/shm"),
        bind(config_map, "/etc/app", ro=True), bind(scratch, "/scratch"),
        bind(log_file, "/dev/termination-log"), bind(host_file, "/data/host.txt", ro=True),
        bind(empty, "/empty", ro=True)]}
    delivery = classify("c1", spec)
    assert [m["type"] for m in delivery.mounts] == ["proc", "devpts"]
    volumes = {v["destination"]: v for v in delivery.volumes}
    assert volumes["/etc/hosts"] == {"kind": "files", "destination": "/etc/hosts", "readonly": False,
                                     "files": [{"path": "", "data": b"127.0.0.1 localhost\n", "mode": 0o644}]}
    app = volumes["/etc/app"]
    assert app["readonly"] and [(f["path"], f["data"]) for f in app["files"]] == [("app.conf", b"key=value\n")]
    assert volumes["/data/host.txt"]["files"][0]["data"] == b"from the host\n"
    assert volumes["/dev/shm"] == {"kind": "emptydir", "name": "dev-shm", "medium": "memory",
                                   "destination": "/dev/shm", "readonly": False}
    assert volumes["/scratch"] == {"kind": "emptydir", "name": "scratch", "medium": "", "destination": "/scratch",
                                   "readonly": False}
    assert volumes["/dev/termination-log"]["kind"] == "files" and not volumes["/dev/termination-log"]["readonly"]
    assert volumes["/empty"]["kind"] == "emptydir" and volumes["/empty"]["readonly"]
    assert delivery.copy_back == [("/dev/termination-log", str(log_file))]
    # the zone's own parser of these volumes accepts every one of them
    from zoneinit.containers.podspec import parse_volumes

    parse_volumes(delivery.volumes)


@pytest.mark.parametrize(("make", "message"), [
    (lambda t: bind(t, "/data"), "cannot share host directory"),
    (lambda t: bind(t / "f", "/f"), "cannot share host file"),
    (lambda t: bind("/dev/null", "/dev/thing", ro=True), "device or special file"),
    (lambda t: bind(t / "absent", "/x", ro=True), "No such file"),
    (lambda t: bind(kubelet_volume(t, "nfs", "share"), "/nfs", ro=True), "volume plugin nfs"),
    (lambda t: bind(kubelet_volume(t, "secret", "token"), "/var/run/secrets", ro=False), "mounted read-write"),
    (lambda t: bind(t / "kubelet" / "pods" / "u" / "volume-subpaths" / "v", "/sub", ro=True), "subPath"),
    (lambda t: {"destination": "/mnt", "type": "nfs", "source": "server:/x"}, "file system type 'nfs'"),
])
def test_what_a_zone_cannot_honour_is_refused(tmp_path: Path, make: Any, message: str) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(RpcError) as info:
        classify("c1", {"mounts": [make(tmp_path)]})
    assert info.value.code == Code.INVALID_ARGUMENT and message in info.value.message
    assert info.value.message.startswith("container c1: mount /")


def test_big_directories_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    for i in range(3):
        (big / f"f{i}").write_bytes(b"x" * (FILES_LIMIT // 2))
    with pytest.raises(RpcError) as info:
        classify("c1", {"mounts": [bind(big, "/big", ro=True)]})
    assert "more than" in info.value.message


# --- the container request -------------------------------------------------------------------------------------

def container_spec(**overrides: Any) -> ContainerSpec:
    oci = {"process": {"args": ["sh", "-c", "echo hi"], "env": ["PATH=/bin", "A=1"], "cwd": "/work",
                       "user": {"uid": 1000, "gid": 1000, "additionalGids": [5, 6]},
                       "capabilities": {"bounding": ["CAP_CHOWN"]}, "noNewPrivileges": True,
                       "consoleSize": {"height": 10, "width": 20}},
           "root": {"path": "rootfs", "readonly": True},
           "annotations": {"io.kubernetes.cri.container-name": "app"},
           "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc", "path": "/proc/1/ns/ipc"},
                                    {"type": "uts", "path": "/proc/1/ns/uts"}, {"type": "mount"},
                                    {"type": "network", "path": "/proc/1/ns/net"}], "cgroupsPath": "/k8s/x",
                     "resources": {"memory": {"limit": 64 << 20}, "cpu": {"quota": 50000, "period": 100000},
                                   "pids": {"limit": 100}},
                     "seccomp": {"defaultAction": "SCMP_ACT_ERRNO"}, "maskedPaths": ["/proc/kcore"]}}
    oci.update(overrides)
    return ContainerSpec("c1", "/bundle", oci, (), terminal=False, stdin=True, is_sandbox=False)


def test_container_request() -> None:
    from shim.zone.volumes import Delivery

    request = container_request(container_spec(), "r0123",
                                Delivery(mounts=[{"destination": "/proc", "type": "proc", "source": "proc"}]))
    assert request["container"] == {"name": "c1", "image": "r0123", "stdin": True}
    assert request["attach"] is True and "volumes" not in request
    oci = request["oci"]
    assert oci["mounts"] == [{"destination": "/proc", "type": "proc", "source": "proc"}]
    assert oci["process"]["terminal"] is False and oci["process"]["noNewPrivileges"] is True
    assert oci["linux"]["seccomp"] == {"defaultAction": "SCMP_ACT_ERRNO"}
    # the zone's own checks accept it; the namespace paths become the pod's, never the host's
    from zoneinit.containers.podspec import parse_pod_spec

    checked = parse_pod_spec(request)
    assert checked.oci is not None and checked.oci["linux"]["namespaces"]["network"] == "pod"
    assert "cgroupsPath" not in checked.oci["linux"] and checked.attach


def test_exec_request() -> None:
    spec = ExecSpec("c1", "e1", {"args": ["sh"], "env": ["TERM=xterm"], "cwd": "/",
                                 "user": {"uid": 0, "gid": 0, "additionalGids": [10]},
                                 "consoleSize": {"height": 40, "width": 100}}, terminal=True, stdin=True)
    request = exec_request(spec)
    assert (request["container"], request["tty"], request["rows"], request["cols"]) == ("c1", True, 40, 100)
    assert request["process"]["user"]["additionalGids"] == [10] and request["process"]["terminal"] is True


# --- stats ---------------------------------------------------------------------------------------------------

def test_stats() -> None:
    stats = container_stats({"memory": {"usage": 10 << 20, "limit": 64 << 20, "max_usage": 12 << 20,
                                        "oom_kills": 1, "inactive_file": 1 << 20, "anon": 8 << 20,
                                        "working_set": 9 << 20},
                             "cpu": {"usage_usec": 5000, "user_usec": 3000, "system_usec": 2000},
                             "pids": {"current": 3, "limit": None}, "io": {"read_bytes": 7}})
    assert (stats.memory_usage, stats.memory_inactive_file, stats.memory_anon, stats.memory_oom_kills) == \
        (10 << 20, 1 << 20, 8 << 20, 1)
    assert (stats.cpu_usage_usec, stats.pids_current, stats.pids_limit, stats.io_read_bytes) == (5000, 3, None, 7)
    pod = zone_stats({"memory": {"MemTotal": 400 << 20, "MemAvailable": 300 << 20},
                      "cpu": {"ticks": {"user": 100, "system": 50, "idle": 1000}, "hz": 100}, "load": {"tasks": 20}})
    assert (pod.memory_usage, pod.cpu_usage_usec, pod.pids_current) == (100 << 20, 1_500_000, 20)


# --- streams ---------------------------------------------------------------------------------------------------

class FakeStream:
    """The channels of an idm.client.ClientStream, in memory."""

    def __init__(self) -> None:
        self.id = 7
        self.done = False
        self.chunks: dict[str, list[bytes]] = {"stdout": [b"hello ", b"world"], "stderr": [b"oops"]}
        self.written: list[tuple[str, bytes]] = []
        self.closed: list[str] = []
        self.cancelled = False

    def read(self, channel: str | None = None, timeout: float | None = None) -> tuple[str, bytes] | None:
        assert channel is not None
        items = self.chunks.get(channel) or []
        return (channel, items.pop(0)) if items else None

    def write(self, channel: str, data: bytes, timeout: float | None = None) -> None:
        self.written.append((channel, data))

    def close_channel(self, channel: str) -> None:
        self.closed.append(channel)

    def cancel(self) -> None:
        self.cancelled = True


def test_stream_adapters_wait_for_the_stream() -> None:
    pending = PendingStream()
    stdout, stderr, stdin = pending.source("stdout"), pending.source("stderr"), pending.sink()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(iter(lambda: stdout.read(4), b"")))
    reader.start()
    stdin.close()   # before the stream exists: EOF is sent once it does
    time.sleep(0.1)
    assert got == [] and reader.is_alive()
    stream = FakeStream()
    pending.set(stream)   # type: ignore[arg-type]
    reader.join(5)
    assert b"".join(got) == b"hello world" and stream.closed == ["stdin"]
    assert stderr.read(100) == b"oops" and stderr.read(100) == b""


def test_a_failed_stream_ends_the_sources_and_breaks_the_sink() -> None:
    pending = PendingStream()
    source, sink = pending.source("stdout"), pending.sink()
    pending.fail("the exec did not start")
    assert source.read(10) == b""
    with pytest.raises(BrokenPipeError) as info:
        sink.write(b"x")
    assert "did not start" in str(info.value)


def test_zone_backend_is_the_default() -> None:
    from shim.backends import load_backend
    from shim.zone.backend import PodZoneBackend

    assert isinstance(load_backend(""), PodZoneBackend)
