"""Each config.json field has an observable effect inside the container."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from helpers import err, host_ns, out


def run_in(make_bundle, styrolite, script: str, edit=None, expect: int = 0) -> str:
    bundle = make_bundle(["sh", "-c", script], edit=edit)
    result = styrolite("run", "-b", str(bundle), "c1")
    assert result.returncode == expect, err(result)
    return out(result)


@pytest.mark.root
def test_new_namespaces_differ_from_the_host(make_bundle, styrolite):
    names = ["pid", "net", "ipc", "uts", "mnt"]
    script = "; ".join(f"readlink /proc/self/ns/{n}" for n in names)
    lines = run_in(make_bundle, styrolite, script).split()
    for name, line in zip(names, lines, strict=True):
        assert line != f"{name}:[{host_ns(name)}]"
    assert run_in(make_bundle, styrolite, "echo $$").strip() == "1"


@pytest.mark.root
def test_cgroup_and_time_namespaces(make_bundle, styrolite):
    def edit(c):
        c["linux"]["namespaces"] += [{"type": "cgroup"}, {"type": "time"}]
        c["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 400, "nanosecs": 0}}

    output = run_in(make_bundle, styrolite, "readlink /proc/self/ns/cgroup; cat /proc/uptime", edit)
    ns, uptime = output.split("\n", 1)
    assert ns != f"cgroup:[{host_ns('cgroup')}]"
    assert float(uptime.split()[0]) > 86400 * 400


@pytest.mark.root
def test_join_network_namespace_by_path(make_bundle, styrolite):
    subprocess.run(["ip", "netns", "add", "styrotest"], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", "styrotest", "sysctl", "-qw", "net.ipv4.ip_default_ttl=77"],
                       check=True)

        def edit(c):
            c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
            c["linux"]["namespaces"].append({"type": "network", "path": "/run/netns/styrotest"})

        output = run_in(make_bundle, styrolite, "readlink /proc/self/ns/net; cat /proc/sys/net/ipv4/ip_default_ttl",
                        edit)
        assert output.split() == [f"net:[{os.stat('/run/netns/styrotest').st_ino}]", "77"]
    finally:
        subprocess.run(["ip", "netns", "del", "styrotest"])


@pytest.mark.root
def test_user_namespace_maps_container_root_to_an_unprivileged_host_uid(make_bundle, styrolite):
    def edit(c):
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["root"]["readonly"] = False
        c["mounts"] = [m for m in c["mounts"] if m["destination"] not in ("/sys", "/sys/fs/cgroup")]

    bundle = make_bundle(["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; touch /tmp/made"],
                         edit=edit)
    os.chown(bundle / "rootfs" / "tmp", 100000, 100000)
    # the mapped root (host uid 100000) must be able to reach its rootfs, as with runc
    for parent in (bundle / "rootfs").parents:
        os.chmod(parent, os.stat(parent).st_mode | 0o011)
    result = styrolite("run", "-b", str(bundle), "c1")
    assert result.returncode == 0, err(result)
    lines = [line.split() for line in out(result).splitlines()]
    assert lines[0] == ["0", "100000", "65536"] and lines[1] == ["0", "100000", "65536"]
    assert lines[2] == ["0"]
    assert os.stat(bundle / "rootfs" / "tmp" / "made").st_uid == 100000  # container root is host uid 100000


@pytest.mark.root
def test_a_new_user_namespace_still_joins_a_shared_network_namespace(make_bundle, styrolite):
    """The zone's case: a network namespace owned by the host's user namespace is joined before the new user
    namespace is made (after it, setns would be EPERM), and oomScoreAdj is set while it still may be."""
    subprocess.run(["ip", "netns", "add", "styrouser"], check=True)
    try:
        def edit(c):
            c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
            c["linux"]["namespaces"] += [{"type": "user"}, {"type": "network", "path": "/run/netns/styrouser"}]
            c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
            c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
            c["mounts"] = [m for m in c["mounts"] if m["destination"] not in ("/sys", "/sys/fs/cgroup")]
            c["process"]["oomScoreAdj"] = 123

        bundle = make_bundle(["sh", "-c", "readlink /proc/self/ns/net; cat /proc/self/oom_score_adj"], edit=edit)
        for parent in (bundle / "rootfs").parents:
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
        netns = f"net:[{os.stat('/run/netns/styrouser').st_ino}]"
        result = styrolite("run", "-b", str(bundle), "c1")
        assert result.returncode == 0, err(result)
        assert out(result).split() == [netns, "123"]
        # exec into such a container: the shared namespace before the container's user namespace
        config = json.loads((bundle / "config.json").read_text())
        config["process"]["args"] = ["sleep", "100"]
        (bundle / "config.json").write_text(json.dumps(config))
        styrolite("run", "-d", "-b", str(bundle), "c2", check=True)
        try:
            inside = styrolite("exec", "c2", "sh", "-c", "readlink /proc/self/ns/net; cat /proc/self/uid_map; "
                               "cat /proc/self/oom_score_adj")
            assert inside.returncode == 0, err(inside)
            lines = out(inside).splitlines()
            assert lines[0] == netns and lines[1].split() == ["0", "100000", "65536"] and lines[2] == "123"
        finally:
            styrolite("delete", "-f", "c2")
    finally:
        subprocess.run(["ip", "netns", "del", "styrouser"])


@pytest.mark.root
def test_hostname_and_domainname(make_bundle, styrolite):
    def edit(c):
        c["hostname"] = "zone-web"
        c["domainname"] = "example.test"

    assert run_in(make_bundle, styrolite, "hostname; cat /proc/sys/kernel/domainname", edit).split() == [
        "zone-web", "example.test"]


@pytest.mark.root
def test_user_groups_umask_env_cwd(make_bundle, styrolite):
    def edit(c):
        c["process"]["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [5, 7], "umask": 23}
        c["process"]["env"].append("COLOR=blue")
        c["process"]["cwd"] = "/tmp"

    output = run_in(make_bundle, styrolite, "id -u; id -g; id -G; umask; echo $COLOR; pwd", edit)
    assert output.split("\n")[:6] == ["1000", "1001", "1001 5 7", "0027", "blue", "/tmp"]


@pytest.mark.root
def test_capabilities_sets(make_bundle, styrolite):
    def edit(c):
        caps = ["CAP_NET_BIND_SERVICE", "CAP_KILL"]
        c["process"]["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps,
                                        "inheritable": caps, "ambient": ["CAP_KILL"]}
        c["process"]["user"] = {"uid": 1000, "gid": 1000}

    output = run_in(make_bundle, styrolite, "grep Cap /proc/self/status", edit)
    fields = dict(line.split(":\t") for line in output.strip().splitlines())
    expected = (1 << 10) | (1 << 5)
    assert int(fields["CapBnd"], 16) == expected
    assert int(fields["CapInh"], 16) == expected
    # a non-root process keeps in its effective/permitted set only what is ambient
    assert int(fields["CapAmb"], 16) == 1 << 5
    assert int(fields["CapEff"], 16) == 1 << 5


@pytest.mark.root
def test_no_capabilities_means_none(make_bundle, styrolite):
    def edit(c):
        del c["process"]["capabilities"]

    output = run_in(make_bundle, styrolite, "grep -E 'CapEff|CapBnd' /proc/self/status", edit)
    assert all(int(line.split()[1], 16) == 0 for line in output.strip().splitlines())


@pytest.mark.root
def test_rlimits_and_no_new_privileges_and_oom_score_adj(make_bundle, styrolite):
    def edit(c):
        c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654},
                                   {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}]
        c["process"]["oomScoreAdj"] = 345

    output = run_in(make_bundle, styrolite,
                    "ulimit -n; ulimit -Hn; ulimit -c; grep NoNewPrivs /proc/self/status; cat /proc/self/oom_score_adj",
                    edit)
    assert output.split() == ["321", "654", "0", "NoNewPrivs:", "1", "345"]


@pytest.mark.root
def test_mounts_with_options(make_bundle, styrolite, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "data").write_text("host data\n")

    def edit(c):
        c["mounts"] += [
            {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "noexec", "size=1m", "mode=700"]},
            {"destination": "/data", "type": "bind", "source": str(shared), "options": ["rbind", "ro"]},
        ]

    output = run_in(make_bundle, styrolite,
                    "grep -E ' /(scratch|data) ' /proc/self/mountinfo; cat /data/data; touch /data/x || echo ro-ok",
                    edit)
    lines = output.splitlines()
    scratch = next(line for line in lines if " /scratch " in line)
    data = next(line for line in lines if " /data " in line)
    assert "nosuid" in scratch and "nodev" in scratch and "noexec" in scratch and "size=1024k" in scratch
    assert data.split()[5].startswith("ro")
    assert "host data" in output and "ro-ok" in output


@pytest.mark.root
def test_masked_and_readonly_paths_and_readonly_root(make_bundle, styrolite):
    def edit(c):
        c["root"]["readonly"] = True
        c["linux"]["maskedPaths"] += ["/proc/cpuinfo", "/etc/secret-dir"]

    def setup(bundle):
        (bundle / "rootfs" / "etc" / "secret-dir").mkdir()
        (bundle / "rootfs" / "etc" / "secret-dir" / "key").write_text("s3cret")

    bundle = make_bundle(["sh", "-c",
                          "wc -c < /proc/cpuinfo; ls /etc/secret-dir | wc -l; "
                          "echo 1 > /proc/sysrq-trigger 2>/dev/null || echo sysrq-blocked; "
                          "touch /newfile 2>/dev/null || echo root-ro; grep ' / ' /proc/self/mountinfo"], edit=edit)
    setup(bundle)
    result = styrolite("run", "-b", str(bundle), "c1")
    assert result.returncode == 0, err(result)
    lines = out(result).splitlines()
    assert lines[0].strip() == "0" and lines[1].strip() == "0"
    assert "sysrq-blocked" in lines and "root-ro" in lines
    assert " ro" in lines[-1] or ",ro" in lines[-1] or lines[-1].split()[5].startswith("ro")


@pytest.mark.root
def test_devices_default_and_custom(make_bundle, styrolite):
    def edit(c):
        c["linux"]["devices"] = [{"type": "c", "path": "/dev/fuse-like", "major": 1, "minor": 7,
                                  "fileMode": 0o640, "uid": 0, "gid": 0}]
        c["linux"]["resources"]["devices"] = [{"allow": False, "access": "rwm"},
                                              {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"}]

    output = run_in(make_bundle, styrolite,
                    "stat -c '%n %t:%T %a' /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty "
                    "/dev/fuse-like; readlink /dev/ptmx; readlink /dev/fd; echo hi > /dev/null && echo null-ok", edit)
    lines = output.splitlines()
    assert "/dev/null 1:3 666" in lines and "/dev/zero 1:5 666" in lines and "/dev/tty 5:0 666" in lines
    assert "/dev/fuse-like 1:7 640" in lines
    assert "pts/ptmx" in lines and "/proc/self/fd" in lines and "null-ok" in lines


def _host_devices(*paths: str) -> list[dict]:
    """linux.devices entries as containerd 1.6 writes them for a privileged container (from the host's nodes)."""
    devices = []
    for path in paths:
        info = os.stat(path)
        devices.append({"type": "c", "path": path, "major": os.major(info.st_rdev), "minor": os.minor(info.st_rdev),
                        "fileMode": info.st_mode & 0o777, "uid": 0, "gid": 0})
    return devices


PRIVILEGED_PATHS = ("/dev/ptmx", "/dev/kmsg", "/dev/net/tun", "/dev/tty1")


@pytest.mark.root
@pytest.mark.parametrize("userns", [False, True], ids=["mknod", "userns-bind"])
def test_privileged_device_list_with_ptmx_keeps_the_containers_own_devpts(make_bundle, styrolite, userns):
    """/dev/ptmx in linux.devices (containerd's privileged list) is not made as a node: /dev/ptmx stays the
    link to the container's devpts, as with runc; the other host nodes are made (or bound in a user namespace)."""
    present = [p for p in PRIVILEGED_PATHS if os.path.exists(p)]

    def edit(c):
        c["linux"]["devices"] = _host_devices(*present)
        c["linux"]["resources"]["devices"] = [{"allow": True, "access": "rwm"}]
        if userns:
            c["linux"]["namespaces"].append({"type": "user"})
            c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
            c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
            c["mounts"] = [m for m in c["mounts"] if m["destination"] not in ("/sys", "/sys/fs/cgroup")]

    bundle = make_bundle(["sh", "-c", "readlink /dev/ptmx; stat -L -c '%n %t:%T' /dev/ptmx " +
                          " ".join(p for p in present if p != "/dev/ptmx") +
                          "; grep -c ' /dev/pts ' /proc/self/mountinfo"], edit=edit)
    if userns:
        for parent in (bundle / "rootfs").parents:
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
    result = styrolite("run", "-b", str(bundle), "c1")
    assert result.returncode == 0, err(result)
    lines = out(result).splitlines()
    assert lines[0] == "pts/ptmx"
    pts_ptmx = os.stat("/dev/pts/ptmx").st_rdev   # the same numbers as the host's, but the container's devpts
    assert lines[1] == f"/dev/ptmx {os.major(pts_ptmx):x}:{os.minor(pts_ptmx):x}"
    for line, device in zip(lines[2:-1], _host_devices(*[p for p in present if p != "/dev/ptmx"]), strict=True):
        assert line == f"{device['path']} {device['major']:x}:{device['minor']:x}"
    assert int(lines[-1]) >= 1


@pytest.mark.root
def test_sysctl(make_bundle, styrolite):
    def edit(c):
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmni": "1234"}

    assert run_in(make_bundle, styrolite, "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni",
                  edit).split() == ["1", "1234"]


@pytest.mark.root
def test_rootfs_propagation_private(make_bundle, styrolite):
    def edit(c):
        c["linux"]["rootfsPropagation"] = "private"

    root_line = run_in(make_bundle, styrolite, "awk '$5 == \"/\"' /proc/self/mountinfo", edit)
    assert root_line.strip()
    assert "shared:" not in root_line and "master:" not in root_line


@pytest.mark.root
def test_memory_and_pids_limits_reach_the_cgroup(make_bundle, styrolite):
    def edit(c):
        c["linux"]["resources"]["memory"] = {"limit": 64 * 1024 * 1024}
        c["linux"]["resources"]["pids"] = {"limit": 50}
        c["linux"]["cgroupsPath"] = "/styrolite-test/limits"

    bundle = make_bundle(["sleep", "100"], edit=edit)
    styrolite("run", "-d", "-b", str(bundle), "c2", check=True)
    stats = json.loads(out(styrolite("events", "--stats", "c2", check=True)))["data"]
    assert stats["memory"]["limit"] == 64 * 1024 * 1024, stats
    assert stats["pids"]["limit"] == 50, stats
    assert stats["pids"]["current"] >= 1, stats


@pytest.mark.root
def test_seccomp_profile_denies_syscalls(make_bundle, styrolite):
    def edit(c):
        c["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
        }

    output = run_in(make_bundle, styrolite,
                    "grep Seccomp: /proc/self/status; mkdir /tmp/x 2>&1 || echo denied", edit)
    assert "Seccomp:\t2" in output and "denied" in output and "Operation not permitted" in output


@pytest.mark.parametrize("phase", ["prestart", "createRuntime", "createContainer", "startContainer",
                                   "poststart", "poststop"])
@pytest.mark.root
def test_hooks_run_with_state_on_stdin(make_bundle, styrolite, tmp_path, phase):
    record = tmp_path / "hook.out"
    # createContainer and startContainer run in the container's mount namespace: write where both see it
    in_container = phase in ("createContainer", "startContainer")
    target = "/tmp/hook.out" if in_container and phase == "startContainer" else str(record)

    def edit(c):
        c["hooks"] = {phase: [{"path": "/bin/sh", "args": ["sh", "-c", f"cat > {target}"]}]}

    bundle = make_bundle(["sh", "-c", "cat /tmp/hook.out 2>/dev/null; true"], edit=edit)
    result = styrolite("run", "-b", str(bundle), "hooked")
    assert result.returncode == 0, err(result)
    text = out(result) if phase == "startContainer" else record.read_text()
    state = json.loads(text)
    assert state["id"] == "hooked" and state["bundle"] == str(bundle)
    if phase != "poststop":
        assert state["pid"] > 0


@pytest.mark.root
def test_failing_create_runtime_hook_fails_create_and_cleans_up(make_bundle, styrolite, state_root):
    def edit(c):
        c["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 3"]}]}

    result = styrolite("create", "-b", str(make_bundle(["true"], edit=edit)), "c1")
    assert result.returncode != 0
    assert "createRuntime hook" in err(result) and "exit status 3" in err(result) and "nope" in err(result)
    assert os.listdir(state_root) == []


@pytest.mark.root
def test_console_socket_receives_the_pty_master(make_bundle, styrolite, tmp_path):
    import array
    import socket

    path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def edit(c):
        c["process"]["terminal"] = True
        c["process"]["consoleSize"] = {"height": 33, "width": 101}

    bundle = make_bundle(["sh", "-c", "tty; stty size; [ -t 0 ] && echo is-a-tty"], edit=edit)
    styrolite("create", "-b", str(bundle), "--console-socket", path, "c1", check=True)
    conn, _ = server.accept()
    fds = array.array("i")
    _msg, ancdata, _flags, _addr = conn.recvmsg(64, socket.CMSG_LEN(fds.itemsize))
    fds.frombytes(ancdata[0][2][: fds.itemsize])
    master = fds[0]
    styrolite("start", "c1", check=True)
    data = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    text = data.decode()
    assert "/dev/pts/0" in text and "33 101" in text and "is-a-tty" in text
