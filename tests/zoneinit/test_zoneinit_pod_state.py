"""What the zone keeps for its pod (zoneinit.containers.pod), for real: the pod's user, ipc and uts namespaces
made by a forked helper and pinned (in a private mount namespace of a child process, so nothing is left on
this host), file volumes with their owners and modes, emptyDirs shared by name (tmpfs for medium memory)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from styrolite.errors import StateError
from zoneinit.containers.pod import Pod
from zoneinit.containers.podspec import parse_volumes
from zoneinit.errors import ZoneInitError
from zoneinit.mounts.table import MountTable

REPO = Path(__file__).resolve().parents[2]

SCENARIO = textwrap.dedent("""
    import json, os, subprocess, sys
    from zoneinit.containers.pod import Pod
    from zoneinit.containers.podspec import parse_volumes
    from zoneinit.mounts.table import MountTable

    base = sys.argv[1]
    mounts = MountTable()
    pod = Pod(base, None, "web-0", mounts, sysctls={"kernel.shm_rmid_forced": "1", "fs.mqueue.msg_max": "100"})
    pod.ensure_namespaces(65536)          # the pod's sysctls written into its new namespaces
    pod.ensure_namespaces(65536)          # made once
    pod.apply_sysctls({"ipc": {"kernel.shmmax": "123456789"}})
    ns = pod.paths

    def inside(*command):
        return subprocess.run(["nsenter", f"--user={ns.user}", f"--ipc={ns.ipc}", f"--uts={ns.uts}", *command],
                              capture_output=True, text=True, check=True).stdout.strip()

    volumes = parse_volumes([{"kind": "emptydir", "name": "shm", "destination": "/dev/shm", "medium": "memory",
                              "size": 1048576}])
    pod.prepare_volumes("c1", volumes, 65536)
    pod.prepare_volumes("c2", volumes, 65536)   # the same emptyDir: made once
    mounted = [line.split()[4] for line in open("/proc/self/mountinfo")]
    print(json.dumps({
        "hostname": inside("hostname"),
        "uid_map": inside("cat", "/proc/self/uid_map").split(),
        "shmmax": inside("cat", "/proc/sys/kernel/shmmax"),
        "host_shmmax": open("/proc/sys/kernel/shmmax").read().strip(),
        "pod_sysctls": [inside("cat", "/proc/sys/kernel/shm_rmid_forced"),
                        inside("cat", "/proc/sys/fs/mqueue/msg_max")],
        "host_msg_max": open("/proc/sys/fs/mqueue/msg_max").read().strip(),
        "pinned": [p for p in (ns.user, ns.ipc, ns.uts) if p in mounted],
        "tmpfs": sum(1 for line in open("/proc/self/mountinfo") if f"{base}/emptydir/shm" in line),
        "shm_owner": os.stat(f"{base}/emptydir/shm").st_uid,
    }))
""")


@pytest.mark.root
def test_the_pods_namespaces_are_made_once_and_pinned(tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("needs root and util-linux's unshare and nsenter")
    base = tmp_path / "pod"
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", SCENARIO,
                             str(base)], capture_output=True, text=True, timeout=60, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["hostname"] == "web-0"
    assert found["uid_map"] == ["0", "65536", "65536"]
    assert found["shmmax"] == "123456789" and found["host_shmmax"] != "123456789"
    assert found["pod_sysctls"] == ["1", "100"] and found["host_msg_max"] != "100"
    assert found["pinned"] == [str(base / "ns/user"), str(base / "ns/ipc"), str(base / "ns/uts")]
    assert found["tmpfs"] == 1 and found["shm_owner"] == 65536


UNWRITABLE = textwrap.dedent("""
    import sys
    from zoneinit.containers.pod import Pod
    from zoneinit.errors import ZoneInitError
    from zoneinit.mounts.table import MountTable

    pod = Pod(sys.argv[1], None, "web-0", MountTable(), sysctls={"net.ipv4.ip_forward": "1"})
    for attempt in (1, 2):   # never written (no network namespace): every container of the pod is refused
        try:
            pod.ensure_namespaces(65536)
        except ZoneInitError as e:
            print(attempt, e)
    print("shift", pod.shift, "written", pod.sysctls_written)
""")


@pytest.mark.root
def test_pod_sysctls_that_cannot_be_written_fail_every_container(tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and util-linux's unshare")
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", UNWRITABLE,
                             str(tmp_path / "pod")], capture_output=True, text=True, timeout=60, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "1 sysctls net.ipv4.ip_forward: the zone has no pod network namespace",
        "2 sysctls net.ipv4.ip_forward: the zone has no pod network namespace",
        "shift 65536 written False"]


def test_a_pod_of_unshifted_images_refuses_a_shifted_one(tmp_path):
    pod = Pod(str(tmp_path), None, "web-0", MountTable())
    pod.shift = 0
    pod.check_shift(0)
    with pytest.raises(ValueError, match="shifted by 65536, the pod's user namespace does not exist"):
        pod.check_shift(65536)
    pod.shift = 65536
    pod.check_shift(0)   # an unshifted image runs without a user namespace, beside the pod's
    with pytest.raises(ValueError, match="maps 65536"):
        pod.check_shift(131072)


def test_file_volumes_and_emptydirs(tmp_path):
    pod = Pod(str(tmp_path), None, "web-0", MountTable())
    volumes = parse_volumes([
        {"kind": "files", "destination": "/etc/config", "files": [
            {"path": "greeting", "data": b"hello"}, {"path": "deep/secret", "data": b"s3", "mode": 0o600}]},
        {"kind": "files", "destination": "/etc/hosts", "files": [{"data": b"127.0.0.1 localhost\n"}]},
        {"kind": "emptydir", "name": "cache", "destination": "/cache"},
    ])
    owner = os.getuid()
    pod.prepare_volumes("c1", volumes, owner)
    config = tmp_path / "files/c1/0"
    assert (config / "greeting").read_bytes() == b"hello"
    assert oct((config / "deep/secret").stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "files/c1/1").read_bytes() == b"127.0.0.1 localhost\n"
    cache = tmp_path / "emptydir/cache"
    assert oct(cache.stat().st_mode & 0o777) == "0o777"
    mounts = pod.volume_mounts("c1", volumes)
    assert [(m["destination"], m["options"][-1]) for m in mounts] == [("/cache", "rw"), ("/etc/config", "ro"),
                                                                      ("/etc/hosts", "ro")]
    (cache / "note").write_text("from c1")
    pod.prepare_volumes("c2", volumes[2:], owner)
    assert pod.read_file("c2", volumes[2:], "/cache/note", 100) == b"from c1"   # one directory for the pod
    with pytest.raises(Exception, match="exists with medium"):
        pod.prepare_volumes("c3", parse_volumes([{"kind": "emptydir", "name": "cache", "destination": "/c",
                                                  "medium": "memory"}]), owner)
    pod.remove_container("c1")
    assert not (tmp_path / "files/c1").exists() and cache.exists()


# The pod's pid namespace, for real, in a pid namespace of the test's own (``unshare --pid --fork``): the
# scenario is pid 1 there, as PID 1 is in a zone, so the holder is its orphan and nothing outlives the test.
PID_SCENARIO = textwrap.dedent("""
    import fcntl, json, os, shutil, signal, subprocess, sys, time
    from styrolite.errors import StateError
    from zoneinit.config.plan import ContainerPlan
    from zoneinit.containers.bundle import container_config
    from zoneinit.containers.pod import Pod
    from zoneinit.containers.podspec import parse_pod_spec
    from zoneinit.mounts.table import MountTable

    base, template, fixture, cgroup_parent = sys.argv[1:5]
    SHIFT = 65536
    NS_GET_USERNS = 0xB701
    found = {}
    pod = Pod(base, None, "web-0", MountTable())

    def ns_id(path):
        info = os.stat(path)
        return [info.st_dev, info.st_ino]

    def status(pid, key):
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(key + ":"):
                return line.split()[1:]

    def styrolite(*args, check=True):
        # files, not pipes: a detached container keeps the stdio it was given
        with open(f"{base}/out", "w+") as out, open(f"{base}/err", "w+") as err:
            code = subprocess.run([sys.executable, "-m", "styrolite.cli", "--root", f"{base}/state", *args],
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=60).returncode
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(args, code, out.read(), err.read())
        if check and result.returncode != 0:
            raise SystemExit(f"styrolite {args}: {result.stderr}")
        return result

    def bundle(cid, args):
        \"\"\"A pod container as the zone makes one: containerd's CRI config for a container sharing the pod's
        pid namespace (the tty fixture), merged by the zone's pod path; the root a copy of busybox owned by
        the pod's root.\"\"\"
        oci = json.load(open(fixture))
        oci["mounts"] = [m for m in oci["mounts"] if m["type"] != "bind"]
        oci["process"].update(args=args, terminal=False)
        spec = parse_pod_spec({"oci": oci})
        plan = ContainerPlan(cid, image="rootfs0", args=args, oci=spec.oci, volumes=spec.volumes)
        config, merged = container_config(plan, hostname="web-0", owner_shift=SHIFT, pod=pod)
        pod.ensure_namespaces(SHIFT)
        if "pid" in merged.shared:
            pod.ensure_pid_namespace()
        config["linux"]["cgroupsPath"] = f"/{cgroup_parent}/{cid}"
        directory = f"{base}/bundles/{cid}"
        shutil.copytree(template, f"{directory}/rootfs", symlinks=True)
        for root, dirs, files in os.walk(f"{directory}/rootfs"):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                info = os.lstat(name)
                os.lchown(name, info.st_uid + SHIFT, info.st_gid + SHIFT)
        json.dump(config, open(f"{directory}/config.json", "w"))
        return directory, config

    _, c1 = bundle("c1", ["sleep", "1000"])
    holder = pod.pid_holder
    pod.ensure_pid_namespace()                  # made once
    found["same_holder"] = pod.pid_holder == holder
    found["pid_entry"] = [ns for ns in c1["linux"]["namespaces"] if ns["type"] == "pid"]
    found["holder_nspid"] = status(holder, "NSpid")
    found["holder_ppid"] = status(holder, "PPid")
    found["holder_comm"] = open(f"/proc/{holder}/comm").read().strip()
    found["holder_fds"] = sorted(os.readlink(f"/proc/{holder}/fd/{fd}") for fd in os.listdir(f"/proc/{holder}/fd"))
    found["holder_uid"] = status(holder, "Uid")
    pin = os.open(pod.paths.pid, os.O_RDONLY)
    owner = fcntl.ioctl(pin, NS_GET_USERNS)
    found["owned_by_pod_userns"] = [os.fstat(owner).st_dev, os.fstat(owner).st_ino] == ns_id(pod.paths.user)
    os.close(owner)
    os.close(pin)
    os.kill(holder, signal.SIGTERM)             # ignored, as every catchable signal
    os.kill(holder, signal.SIGINT)
    time.sleep(0.2)
    found["alive_after_sigterm"] = status(holder, "State")[0] not in ("Z", "X")
    # the pod's root may not read the holder (a copy of PID 1's memory): it is not dumpable
    peek = subprocess.run(["nsenter", f"--user={pod.paths.user}", "cat", f"/proc/{holder}/environ"],
                          capture_output=True, text=True)
    found["pod_root_reads_holder"] = peek.returncode == 0

    c1_dir, _ = bundle("c1x", ["sleep", "1000"])
    styrolite("run", "-d", "-b", c1_dir, "c1")
    c1_pid = json.loads(styrolite("state", "c1").stdout)["pid"]
    found["c1_nspid"] = status(c1_pid, "NSpid")
    found["c1_in_pod_pidns"] = ns_id(f"/proc/{c1_pid}/ns/pid") == ns_id(pod.paths.pid)
    # c2: the same pod pid namespace: it sees c1's sleep and the holder as pid 1; an orphan it leaves (the
    # subshell's sleep) is re-parented to the holder and reaped by it
    script = ("(sleep 0.3 &); sleep 1.5; cat /proc/1/comm; "
              "for p in /proc/[0-9]*; do echo \\"$(cat $p/stat)\\"; done")
    c2_dir, _ = bundle("c2", ["sh", "-c", script])
    out = styrolite("run", "-b", c2_dir, "c2").stdout.splitlines()
    found["c2_pid1"] = out[0]
    stats = [line.rpartition(")")[0].split(" (", 1) + line.rpartition(")")[2].split()[:1] for line in out[1:]]
    found["c2_sees"] = sorted(comm for _pid, comm, _state in stats)
    found["zombies"] = [comm for _pid, comm, state in stats if state == "Z"]

    os.kill(holder, signal.SIGKILL)             # the holder dies: c1 with it (a pid namespace without its pid 1)
    time.sleep(0.3)
    try:
        pod.check_pid_namespace()               # exiting or a zombie, not reaped yet
        found["zombie_error"] = None
    except StateError as e:
        found["zombie_error"] = str(e)
    while True:                                 # PID 1's reaper
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)
    try:
        bundle("c3", ["true"])
        found["dead_error"] = None
    except StateError as e:
        found["dead_error"] = str(e)
    found["c1_after"] = json.loads(styrolite("state", "c1").stdout)["status"]
    styrolite("delete", "--force", "c1", check=False)
    print(json.dumps(found))
""")


@pytest.mark.root
def test_the_pods_pid_namespace_is_shared_held_and_refused_once_its_holder_died(busybox_rootfs):
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("needs root and util-linux's unshare and nsenter")
    cgroup_parent = f"styrolite-test-podpid-{uuid.uuid4().hex[:12]}"   # this test's containers' cgroups
    top = Path(tempfile.mkdtemp(prefix="podpid-", dir="/tmp"))   # the pod's root must reach the bundles:
    os.chmod(top, 0o711)                                         # pytest's directories are root's alone
    base = top / "pod"
    try:
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
                                 "--mount-proc", sys.executable, "-c", PID_SCENARIO, str(base), str(busybox_rootfs),
                                 str(REPO / "tests/zoneinit/fixtures/containerd-1.6-cri-tty.json"), cgroup_parent],
                                capture_output=True, text=True, timeout=120, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        shutil.rmtree(top, ignore_errors=True)
        for parent in Path("/sys/fs/cgroup").glob(f"**/{cgroup_parent}"):
            for directory in sorted(parent.glob("**/"), key=lambda d: -len(d.parts)):
                with contextlib.suppress(OSError):
                    directory.rmdir()
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["same_holder"]
    assert found["pid_entry"] == [{"type": "pid", "path": str(base / "ns/pid")}]
    assert found["holder_nspid"][1:] == ["1"] and found["holder_ppid"] == ["1"]   # pid 1 there; PID 1's orphan
    assert found["holder_comm"] == "pod-pid-holder"
    assert found["holder_fds"] == ["/dev/null"] * 3
    assert found["holder_uid"] == ["65536"] * 4            # the pod's root, not the zone's
    assert found["owned_by_pod_userns"]
    assert found["alive_after_sigterm"]
    assert not found["pod_root_reads_holder"]
    assert found["c1_in_pod_pidns"] and found["c1_nspid"][-1] != "1"
    assert found["c2_pid1"] == "pod-pid-holder"
    assert "sleep" in found["c2_sees"] and "pod-pid-holder" in found["c2_sees"], found["c2_sees"]
    assert found["zombies"] == []
    for error in (found["zombie_error"], found["dead_error"]):
        assert error is not None and "shared pid namespace" in error and "has exited" in error, found
    assert found["c1_after"] == "stopped"


# --- the pid namespace's mechanics through the syscall seam (RecordingSyscalls: no root, no namespace; the
# forks are real, so the holder is a real process, in our pid namespace) ------------------------------------

def _holder_facts(pid: int) -> dict:
    fds = os.listdir(f"/proc/{pid}/fd")
    return {"comm": Path(f"/proc/{pid}/comm").read_text().strip(),
            "fds": sorted(os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds),
            "sid": os.getsid(pid) == pid, "cwd": os.readlink(f"/proc/{pid}/cwd")}


def test_the_holder_is_made_pinned_and_ignores_every_signal_it_can(tmp_path):
    from styrolite.syscalls import constants as k
    from styrolite.syscalls.fake import RecordingSyscalls
    from zoneinit.containers.pod import make_pod_pid_namespace, pid_holder_problem

    fake = RecordingSyscalls()
    pin = tmp_path / "ns" / "pid"
    holder = make_pod_pid_namespace(str(pin), None, fake)
    try:
        assert fake.of("mount") == [(f"/proc/{holder}/ns/pid", str(pin), None, k.MS_BIND, None)]
        assert pin.exists() and oct(pin.stat().st_mode & 0o777) == "0o400"
        time.sleep(0.2)
        assert _holder_facts(holder) == {"comm": "pod-pid-holder", "fds": ["/dev/null"] * 3, "sid": True, "cwd": "/"}
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD, signal.SIGTSTP):
            os.kill(holder, signum)
        time.sleep(0.2)
        state = Path(f"/proc/{holder}/stat").read_text().rpartition(")")[2].split()[0]
        assert state == "S"                                      # neither ended nor stopped
        # the pin is a plain file here (the fake mounted nothing): the holder does not hold what it names
        assert pid_holder_problem(holder, str(pin)) == f"has exited (pid {holder} is another process now)"
    finally:
        os.kill(holder, signal.SIGKILL)


@pytest.mark.parametrize(("fails", "expected"), [
    ("unshare", "make the pod's pid namespace: unshare the pid namespace: "),
    ("setns", "make the pod's pid namespace: enter the pod's user namespace "),
])
def test_a_pid_namespace_that_cannot_be_made_is_an_error_naming_the_step(tmp_path, fails, expected):
    from styrolite.syscalls.fake import RecordingSyscalls
    from zoneinit.containers.pod import make_pod_pid_namespace

    fake = RecordingSyscalls()
    fake.fail_on(fails)
    (tmp_path / "user").touch()
    with pytest.raises(ZoneInitError) as error:
        make_pod_pid_namespace(str(tmp_path / "pid"), str(tmp_path / "user"), fake)
    assert expected in str(error.value)
    assert fake.of("mount") == []


def test_a_holder_that_cannot_be_pinned_is_killed(tmp_path):
    from styrolite.syscalls.fake import RecordingSyscalls
    from zoneinit.containers.pod import make_pod_pid_namespace

    fake = RecordingSyscalls()
    fake.fail_on("mount")
    before = _children_named("pod-pid-holder")
    with pytest.raises(ZoneInitError, match=r"pin the pod's pid namespace \(holder pid \d+\) at "):
        make_pod_pid_namespace(str(tmp_path / "pid"), None, fake)
    deadline = time.monotonic() + 5
    while _children_named("pod-pid-holder") - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _children_named("pod-pid-holder") - before


def _children_named(comm: str) -> set[int]:
    """Live processes called ``comm`` that are this user's (zombies are dead)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            name = text[text.index("(") + 1:text.rindex(")")]
            if name == comm and text.rpartition(")")[2].split()[0] not in ("Z", "X"):
                found.add(int(entry))
    return found


def test_the_pid_namespace_is_made_once_after_the_user_namespace_and_checked(tmp_path, monkeypatch):
    from zoneinit.containers import pod as pod_module

    pod = Pod(str(tmp_path), None, "web-0", MountTable())
    with pytest.raises(ZoneInitError, match="after its user namespace"):
        pod.ensure_pid_namespace()
    made = []
    monkeypatch.setattr("zoneinit.isolate.in_child", lambda function, *args: made.append((function, args)) or 4242)
    monkeypatch.setattr(pod_module, "pid_holder_problem", lambda holder, pin: None)
    pod.shift = 65536
    pod.ensure_pid_namespace()
    pod.ensure_pid_namespace()
    assert made == [(pod_module.make_pod_pid_namespace, (str(tmp_path / "ns/pid"), str(tmp_path / "ns/user"),
                                                         pod.sys))]
    assert pod.pid_holder == 4242
    monkeypatch.setattr(pod_module, "pid_holder_problem", lambda holder, pin: "has exited")
    with pytest.raises(StateError, match="its pid 1, the holder process 4242, has exited; no container can join"):
        pod.ensure_pid_namespace()
    unshifted = Pod(str(tmp_path / "other"), None, "web-0", MountTable())
    unshifted.shift = 0
    unshifted.ensure_pid_namespace()
    assert made[-1][1][1] is None                                # no user namespace: the zone's own owns it
