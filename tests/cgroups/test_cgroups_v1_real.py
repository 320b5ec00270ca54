"""cgroup v1 for real on this (hybrid) host: limits take effect on real processes, stats move."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from styrolite.cgroups import CgroupError, files
from styrolite.spec.model import CPU, Device, DeviceCgroup, Memory, Pids, Resources

pytestmark = pytest.mark.root

MiB = 1 << 20


def test_process_lands_in_every_hierarchy_and_pids_lists_it(v1_cgroup, spawn_waiting):
    child = spawn_waiting("")
    v1_cgroup.add_process(child.pid)
    assert v1_cgroup.pids() == [child.pid]
    paths = {}
    for line in Path(f"/proc/{child.pid}/cgroup").read_text().splitlines():
        _hid, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else ["unified"]:
            paths[controller] = path
    for controller in ("memory", "pids", "freezer", "devices", "cpu", "cpuset", "blkio", "name=systemd", "unified"):
        assert paths[controller] == v1_cgroup.path, controller
    child.release()
    assert child.finish()[0] == 0


def test_memory_limit_oom_kills_a_child_allocating_over_it(v1_cgroup, spawn_waiting):
    v1_cgroup.apply(Resources(memory=Memory(limit=48 * MiB, swap=48 * MiB)))
    assert files.read_int(v1_cgroup.directories["memory"], "memory.limit_in_bytes") == 48 * MiB
    assert files.read_int(v1_cgroup.directories["memory"], "memory.memsw.limit_in_bytes") == 48 * MiB
    child = spawn_waiting("data = b'x' * (200 << 20)\nprint('survived')\n")
    v1_cgroup.add_process(child.pid)
    child.release()
    returncode, out, _err = child.finish()
    assert returncode == -signal.SIGKILL
    assert "survived" not in out
    stats = v1_cgroup.stats()["memory"]
    assert stats["oom_kills"] >= 1
    assert stats["limit"] == 48 * MiB
    assert 40 * MiB < stats["max_usage"] <= 48 * MiB


def test_pids_limit_makes_fork_fail(v1_cgroup, spawn_waiting):
    v1_cgroup.apply(Resources(pids=Pids(limit=4)))
    code = """
import errno
read_end, write_end = os.pipe()
children = 0
try:
    for _ in range(20):
        if os.fork() == 0:
            os.close(write_end)
            os.read(read_end, 1)
            os._exit(0)
        children += 1
    print("no-failure", children)
except OSError as e:
    print(errno.errorcode[e.errno], children)
os.close(write_end)
"""
    child = spawn_waiting(code)
    v1_cgroup.add_process(child.pid)
    assert v1_cgroup.stats()["pids"] == {"current": 1, "limit": 4}
    child.release()
    returncode, out, err = child.finish()
    assert returncode == 0, err
    assert out.split() == ["EAGAIN", "3"]


def test_freezer_stops_and_resumes_the_processes(v1_cgroup, spawn_waiting):
    child = spawn_waiting(
        "import signal\nsignal.signal(signal.SIGUSR1, lambda *a: os.write(1, b'u'))\n"
        "print('ready', flush=True)\nwhile True: signal.pause()\n")
    v1_cgroup.add_process(child.pid)
    child.release()
    assert child.readline() == "ready"
    v1_cgroup.freeze()
    assert v1_cgroup.state() == "frozen"
    assert files.read(v1_cgroup.directories["freezer"], "freezer.state") == "FROZEN"
    assert Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "D"
    os.kill(child.pid, signal.SIGUSR1)
    assert not child.readable_within(0.3), "a frozen process ran its signal handler"
    v1_cgroup.thaw()
    assert v1_cgroup.state() == "thawed"
    assert child.read(1) == b"u"


def test_cpu_shares_quota_and_cpuset_files(v1_cgroup):
    v1_cgroup.apply(Resources(cpu=CPU(shares=512, quota=25000, period=50000, cpus="0", mems="0")))
    cpu = v1_cgroup.directories["cpu"]
    assert files.read(cpu, "cpu.shares") == "512"
    assert files.read(cpu, "cpu.cfs_quota_us") == "25000"
    assert files.read(cpu, "cpu.cfs_period_us") == "50000"
    assert files.read(v1_cgroup.directories["cpuset"], "cpuset.cpus") == "0"
    v1_cgroup.update(Resources(cpu=CPU(quota=-1)))
    assert files.read(cpu, "cpu.cfs_quota_us") == "-1"
    assert files.read(cpu, "cpu.shares") == "512"


def test_new_cpuset_inherits_parent_cpus_and_accepts_tasks(v1_cgroup, spawn_waiting):
    cpuset = v1_cgroup.directories["cpuset"]
    assert files.read(cpuset, "cpuset.cpus") == files.read(os.path.dirname(cpuset), "cpuset.cpus") != ""
    child = spawn_waiting("")
    v1_cgroup.add_process(child.pid)
    child.release()
    assert child.finish()[0] == 0


def test_devices_default_deny_with_allow_rules_in_order(v1_cgroup, spawn_waiting, tmp_path):
    os.mknod(tmp_path / "kmsg", 0o666 | 0o020000, os.makedev(1, 11))
    os.mknod(tmp_path / "mem", 0o666 | 0o020000, os.makedev(1, 1))
    os.mknod(tmp_path / "null", 0o666 | 0o020000, os.makedev(1, 3))
    v1_cgroup.apply(Resources(devices=[
        DeviceCgroup(allow=True, type="c", major=1, minor=1, access="rw"),
        DeviceCgroup(allow=False, type="c", major=1, minor=1, access="rw"),  # the later rule wins
        DeviceCgroup(allow=True, type="c", major=1, minor=11, access="r"),
    ]))
    listing = files.read(v1_cgroup.directories["devices"], "devices.list").splitlines()
    assert "c 1:11 r" in listing and "c 1:3 rwm" in listing and "a *:* rwm" not in listing
    child = spawn_waiting(f"""
for name, flags in (("kmsg", os.O_RDONLY), ("kmsg", os.O_WRONLY), ("mem", os.O_RDONLY), ("null", os.O_RDWR)):
    try:
        os.close(os.open("{tmp_path}/" + name, flags))
        print(name, "ok")
    except OSError as e:
        print(name, e.strerror)
""")
    v1_cgroup.add_process(child.pid)
    child.release()
    returncode, out, err = child.finish()
    assert returncode == 0, err
    assert out.splitlines() == ["kmsg ok", "kmsg Operation not permitted", "mem Operation not permitted", "null ok"]


def test_stats_numbers_are_plausible(v1_cgroup, spawn_waiting):
    v1_cgroup.apply(Resources(memory=Memory(limit=256 * MiB), pids=Pids(limit=64)))
    child = spawn_waiting("data = b'y' * (20 << 20)\nsum(range(3_000_000))\nprint('done', flush=True)\n"
                          "sys.stdin.buffer.read(1)\n")
    v1_cgroup.add_process(child.pid)
    child.release()
    assert child.readline() == "done"
    stats = v1_cgroup.stats()
    assert 20 * MiB <= stats["memory"]["usage"] <= 256 * MiB
    assert stats["memory"]["max_usage"] >= stats["memory"]["usage"]
    assert stats["memory"]["limit"] == 256 * MiB
    assert stats["memory"]["oom_kills"] == 0
    cpu = stats["cpu"]
    assert cpu["usage_usec"] > 10_000  # the loop alone costs far more than 10 ms of CPU
    assert cpu["user_usec"] + cpu["system_usec"] <= cpu["usage_usec"] * 1.5
    assert stats["pids"] == {"current": 1, "limit": 64}
    assert set(stats["io"]) == {"read_bytes", "write_bytes", "read_ops", "write_ops"}
    child.release()
    assert child.finish()[0] == 0


def test_kill_all_and_destroy_remove_every_directory(v1_cgroup, spawn_waiting):
    children = [spawn_waiting("") for _ in range(2)]
    for child in children:
        v1_cgroup.add_process(child.pid)
    v1_cgroup.kill_all(signal.SIGKILL)
    assert [child.process.wait() for child in children] == [-signal.SIGKILL] * 2
    v1_cgroup.destroy()
    assert not any(os.path.exists(d) for d in v1_cgroup.directories.values())
    assert not os.path.exists(v1_cgroup.unified.directory)


def test_destroy_with_kill_removes_a_populated_cgroup(v1_cgroup, spawn_waiting):
    child = spawn_waiting("")
    v1_cgroup.add_process(child.pid)
    v1_cgroup.freeze()
    v1_cgroup.destroy(kill=True)
    assert child.process.wait() == -signal.SIGKILL
    assert not v1_cgroup.exists()


def test_check_before_update_refuses_a_limit_below_usage(v1_cgroup, spawn_waiting):
    child = spawn_waiting("data = b'z' * (16 << 20)\nprint('done', flush=True)\nsys.stdin.buffer.read(1)\n")
    v1_cgroup.add_process(child.pid)
    child.release()
    assert child.readline() == "done"
    with pytest.raises(CgroupError, match="below the current usage"):
        v1_cgroup.update(Resources(memory=Memory(limit=4 * MiB, check_before_update=True)))
    assert v1_cgroup.stats()["memory"]["limit"] is None
    child.release()
    assert child.finish()[0] == 0


def test_linux_devices_nodes_are_allowed(v1_cgroup):
    v1_cgroup.apply(Resources(), devices=[Device(type="c", path="/dev/fuse", major=10, minor=229)])
    listing = files.read(v1_cgroup.directories["devices"], "devices.list").splitlines()
    assert "c 10:229 rwm" in listing
    assert "c 10:200 rwm" not in listing
