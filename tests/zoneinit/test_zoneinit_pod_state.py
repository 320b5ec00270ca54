"""What the zone keeps for its pod (zoneinit.containers.pod), for real: the pod's user, ipc and uts namespaces
made by a forked helper and pinned (in a private mount namespace of a child process, so nothing is left on
this host), file volumes with their owners and modes, emptyDirs shared by name (tmpfs for medium memory)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zoneinit.containers.pod import Pod
from zoneinit.containers.podspec import parse_volumes
from zoneinit.mounts.table import MountTable

REPO = Path(__file__).resolve().parents[2]

SCENARIO = textwrap.dedent("""
    import json, os, subprocess, sys
    from zoneinit.containers.pod import Pod
    from zoneinit.containers.podspec import parse_volumes
    from zoneinit.mounts.table import MountTable

    base = sys.argv[1]
    mounts = MountTable()
    pod = Pod(base, None, "web-0", mounts)
    pod.ensure_namespaces(65536)
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
    assert found["pinned"] == [str(base / "ns/user"), str(base / "ns/ipc"), str(base / "ns/uts")]
    assert found["tmpfs"] == 1 and found["shm_owner"] == 65536


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
