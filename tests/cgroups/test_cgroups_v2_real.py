"""cgroup v2 for real, on the cgroup2 hierarchy this host has (``/sys/fs/cgroup/unified`` on hybrid hosts).

No controller is needed for cgroup.procs, cgroup.freeze, cgroup.kill, cgroup.events, cpu.stat and the
eBPF device filter, so these run for real here; the controller files are covered in test_cgroups_v2_files.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from styrolite.cgroups import files
from styrolite.spec.model import DeviceCgroup, Resources

pytestmark = pytest.mark.root


def _mknod_char(path: Path, major: int, minor: int) -> None:
    os.mknod(path, 0o666 | 0o020000, os.makedev(major, minor))


def test_processes_and_nested_cgroups_are_listed(unified_cgroup, spawn_waiting):
    first, second = spawn_waiting(""), spawn_waiting("")
    unified_cgroup.add_process(first.pid)
    nested = os.path.join(unified_cgroup.directory, "inner")
    os.mkdir(nested)
    files.write(nested, "cgroup.procs", second.pid)
    assert unified_cgroup.pids() == sorted([first.pid, second.pid])
    assert f"0::{unified_cgroup.path}\n" in Path(f"/proc/{first.pid}/cgroup").read_text()


def test_freeze_waits_for_frozen_and_thaw_resumes(unified_cgroup, spawn_waiting):
    child = spawn_waiting(
        "import signal\nsignal.signal(signal.SIGUSR1, lambda *a: os.write(1, b'u'))\n"
        "print('ready', flush=True)\nwhile True: signal.pause()\n")
    unified_cgroup.add_process(child.pid)
    child.release()
    assert child.readline() == "ready"
    unified_cgroup.freeze()
    assert unified_cgroup.state() == "frozen"
    assert files.read_keyed(unified_cgroup.directory, "cgroup.events")["frozen"] == 1
    os.kill(child.pid, signal.SIGUSR1)
    assert not child.readable_within(0.3), "a frozen process ran its signal handler"
    unified_cgroup.thaw()
    assert unified_cgroup.state() == "thawed"
    assert child.read(1) == b"u"


def test_kill_all_sigkill_uses_cgroup_kill_and_other_signals_iterate(unified_cgroup, spawn_waiting):
    children = [spawn_waiting("") for _ in range(3)]
    for child in children:
        unified_cgroup.add_process(child.pid)
    unified_cgroup.kill_all(signal.SIGTERM)
    assert children[0].process.wait() == -signal.SIGTERM
    assert [c.process.wait() for c in children[1:]] == [-signal.SIGTERM] * 2
    more = [spawn_waiting("") for _ in range(2)]
    for child in more:
        unified_cgroup.add_process(child.pid)
    unified_cgroup.kill_all(signal.SIGKILL)
    assert [c.process.wait() for c in more] == [-signal.SIGKILL] * 2


def test_destroy_kills_leftovers_and_removes_nested_dirs(unified_cgroup, spawn_waiting):
    child = spawn_waiting("")
    os.mkdir(os.path.join(unified_cgroup.directory, "inner"))
    files.write(os.path.join(unified_cgroup.directory, "inner"), "cgroup.procs", child.pid)
    unified_cgroup.freeze()
    unified_cgroup.destroy(kill=True)
    assert child.process.wait() == -signal.SIGKILL
    assert not os.path.exists(unified_cgroup.directory)


def test_stats_read_cpu_stat(unified_cgroup, spawn_waiting):
    child = spawn_waiting("sum(range(2_000_000))\n")
    unified_cgroup.add_process(child.pid)
    child.release()
    assert child.finish()[0] == 0
    cpu = unified_cgroup.stats()["cpu"]
    assert cpu["usage_usec"] > 10_000
    assert cpu["user_usec"] + cpu["system_usec"] == pytest.approx(cpu["usage_usec"], rel=0.2, abs=2000)


def test_ebpf_device_filter_denies_devices_outside_the_rules(unified_cgroup, spawn_waiting, tmp_path):
    """A process in the cgroup can open /dev/null (default set) and kmsg for reading (a rule) but not
    kmsg for writing nor /dev/mem (denied by default and by a later rule)."""
    _mknod_char(tmp_path / "kmsg", 1, 11)
    _mknod_char(tmp_path / "mem", 1, 1)
    _mknod_char(tmp_path / "null", 1, 3)
    unified_cgroup.apply(Resources(devices=[
        DeviceCgroup(allow=True, type="c", major=1, minor=1, access="r"),
        DeviceCgroup(allow=True, type="c", major=1, minor=11, access="r"),
        DeviceCgroup(allow=False, type="c", major=1, minor=1),  # the later rule wins
    ]))
    child = spawn_waiting(f"""
for name, flags in (("kmsg", os.O_RDONLY), ("kmsg", os.O_WRONLY), ("mem", os.O_RDONLY), ("null", os.O_RDWR)):
    try:
        os.close(os.open("{tmp_path}/" + name, flags))
        print(name, "ok")
    except OSError as e:
        print(name, e.strerror)
try:
    os.mknod("{tmp_path}/made", 0o600 | 0o020000, os.makedev(1, 1))
    print("mknod ok")
except OSError as e:
    print("mknod", e.strerror)
""")
    unified_cgroup.add_process(child.pid)
    child.release()
    returncode, out, err = child.finish()
    assert returncode == 0, err
    assert out.splitlines() == ["kmsg ok", "kmsg Operation not permitted", "mem Operation not permitted", "null ok",
                                "mknod ok"]
    # The test process itself (outside the cgroup) is unaffected.
    os.close(os.open(tmp_path / "kmsg", os.O_WRONLY))


def test_update_replaces_the_device_program(unified_cgroup, spawn_waiting, tmp_path):
    _mknod_char(tmp_path / "kmsg", 1, 11)
    unified_cgroup.apply(Resources())
    unified_cgroup.update(Resources(devices=[DeviceCgroup(allow=True, type="c", major=1, minor=11, access="rw")]))
    child = spawn_waiting(f"os.close(os.open('{tmp_path}/kmsg', os.O_WRONLY))\nprint('ok')\n")
    unified_cgroup.add_process(child.pid)
    child.release()
    assert child.finish()[:2] == (0, "ok\n")
