"""The cgroup v1 driver's writes on a fake tree: ordering rules, warnings for missing controllers, and the
hybrid split (hugetlb and ``unified`` keys go to the cgroup2 hierarchy)."""

from __future__ import annotations

import logging

import pytest

from styrolite.cgroups import CgroupError, files, open_cgroup
from styrolite.spec.model import (
    CPU,
    BlockIO,
    DeviceCgroup,
    HugepageLimit,
    Memory,
    Network,
    Pids,
    Resources,
    ThrottleDevice,
)

V1_FILES = {
    "memory": ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.soft_limit_in_bytes",
               "memory.swappiness", "memory.oom_control", "memory.kmem.tcp.limit_in_bytes"],
    "cpu,cpuacct": ["cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.cfs_burst_us", "cpu.rt_period_us",
                    "cpu.rt_runtime_us", "cpu.idle"],
    "cpuset": ["cpuset.cpus", "cpuset.mems"],
    "devices": ["devices.allow", "devices.deny"],
    "blkio": ["blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"],
    "freezer": ["freezer.state"],
}


@pytest.fixture
def writes(monkeypatch):
    recorded: list[tuple[str, str, str]] = []
    real_write = files.write

    def record(directory, name, value):
        recorded.append((directory.split("/cg/")[1].split("/")[0], name, str(value)))
        real_write(directory, name, value)

    monkeypatch.setattr(files, "write", record)
    return recorded


@pytest.fixture
def fake_v1(tmp_path, fake_tree):
    def make(hierarchies=("memory", "cpu,cpuacct", "cpuset", "devices", "blkio", "freezer"), unified="hugetlb",
             memsw=True):
        root = tmp_path / "cg"
        tree, lines = {}, []
        for number, mount in enumerate(hierarchies):
            lines.append(f"{number} 1 0:{number} / {root}/{mount} rw - cgroup cgroup rw,{mount}")
            for name in V1_FILES.get(mount, []):
                if memsw or "memsw" not in name:
                    tree[f"cg/{mount}/styrolite/c1/{name}"] = ""
            tree[f"cg/{mount}/styrolite/c1/cgroup.procs"] = ""
        tree["cg/cpuset/cpuset.cpus"] = "0-3"
        tree["cg/cpuset/cpuset.mems"] = "0"
        if unified is not None:
            lines.append(f"99 1 0:99 / {root}/unified rw - cgroup2 cgroup2 rw")
            for directory in ("", "styrolite/", "styrolite/c1/"):
                tree[f"cg/unified/{directory}cgroup.controllers"] = unified
                tree[f"cg/unified/{directory}cgroup.subtree_control"] = ""
            tree["cg/unified/styrolite/c1/hugetlb.2MB.max"] = ""
            tree["cg/unified/styrolite/c1/hugetlb.2MB.rsvd.max"] = ""
        fake_tree(tree)
        (tmp_path / "mountinfo").write_text("\n".join(lines) + "\n")
        return open_cgroup(None, "c1", str(root), mountinfo=str(tmp_path / "mountinfo")), root

    return make


def test_memory_grow_writes_memsw_first_and_shrink_writes_limit_first(fake_v1, writes):
    manager, root = fake_v1()
    leaf = root / "memory" / "styrolite" / "c1"
    (leaf / "memory.limit_in_bytes").write_text("100\n")
    manager.update(Resources(memory=Memory(limit=200, swap=400)))
    assert [w[1] for w in writes] == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
    writes.clear()
    (leaf / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # unlimited now
    manager.update(Resources(memory=Memory(limit=50, swap=60)))
    assert [w[1] for w in writes] == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
    writes.clear()
    manager.update(Resources(memory=Memory(limit=-1)))
    assert [(w[1], w[2]) for w in writes] == [("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", "-1")]


def test_memory_and_cpu_files(fake_v1, writes):
    manager, _root = fake_v1()
    manager.update(Resources(
        memory=Memory(reservation=10, swappiness=0, disable_oom_killer=True, kernel_tcp=1 << 20),
        cpu=CPU(shares=512, quota=20000, period=50000, realtime_period=1000000, realtime_runtime=0, idle=1,
                cpus="1", mems="0"),
    ))
    assert [(w[1], w[2]) for w in writes] == [
        ("memory.soft_limit_in_bytes", "10"), ("memory.kmem.tcp.limit_in_bytes", str(1 << 20)),
        ("memory.swappiness", "0"), ("memory.oom_control", "1"),
        ("cpu.shares", "512"), ("cpu.cfs_period_us", "50000"), ("cpu.cfs_quota_us", "20000"),
        ("cpu.rt_period_us", "1000000"), ("cpu.rt_runtime_us", "0"), ("cpu.idle", "1"),
        ("cpuset.cpus", "1"), ("cpuset.mems", "0"),
    ]


def test_devices_deny_all_then_rules_in_order_then_defaults(fake_v1, writes):
    manager, _root = fake_v1()
    manager.apply(Resources(devices=[DeviceCgroup(allow=True, type="c", major=10, minor=200, access="rw"),
                                     DeviceCgroup(allow=False, type="c", major=10, minor=200, access="w")]))
    device_writes = [(w[1], w[2]) for w in writes if w[0] == "devices"]
    assert device_writes[:3] == [("devices.deny", "a"), ("devices.allow", "c 10:200 rw"),
                                 ("devices.deny", "c 10:200 w")]
    assert ("devices.allow", "c 1:3 rwm") in device_writes[3:]
    assert ("devices.allow", "c *:* m") in device_writes[3:]


def test_each_missing_controller_gets_one_warning_line(fake_v1, writes, caplog):
    manager, _root = fake_v1(hierarchies=("memory",), unified=None)
    with caplog.at_level(logging.WARNING, logger="styrolite"):
        manager.apply(Resources(
            cpu=CPU(shares=2, cpus="0"), pids=Pids(limit=3),
            block_io=BlockIO(throttle_read_bps_device=[ThrottleDevice(major=8, minor=0, rate=1)]),
            hugepage_limits=[HugepageLimit(page_size="2MB", limit=0)], network=Network(class_id=1),
        ))
    messages = [r.getMessage() for r in caplog.records]
    for controller in ("cpu", "cpuset", "pids", "blkio", "hugetlb", "net_cls", "devices"):
        assert len([m for m in messages if f"controller {controller!r}" in m]) == 1, (controller, messages)
    assert writes == []


def test_blkio_without_weight_files_warns_and_still_throttles(fake_v1, writes, caplog):
    manager, _root = fake_v1()
    with caplog.at_level(logging.WARNING, logger="styrolite"):
        manager.update(Resources(block_io=BlockIO(weight=300, throttle_write_bps_device=[
            ThrottleDevice(major=8, minor=0, rate=4096)])))
    assert any("blockIO weight ignored" in r.getMessage() for r in caplog.records)
    assert [(w[1], w[2]) for w in writes] == [("blkio.throttle.write_bps_device", "8:0 4096")]


def test_missing_swap_accounting_warns(fake_v1, writes, caplog):
    manager, _root = fake_v1(memsw=False)
    with caplog.at_level(logging.WARNING, logger="styrolite"):
        manager.update(Resources(memory=Memory(limit=100, swap=200)))
    assert any("memsw" in r.getMessage() for r in caplog.records)
    assert [(w[1], w[2]) for w in writes] == [("memory.limit_in_bytes", "100")]


def test_hybrid_hugetlb_and_unified_keys_go_to_cgroup2(fake_v1, writes):
    manager, root = fake_v1()
    manager.update(Resources(hugepage_limits=[HugepageLimit(page_size="2MB", limit=8 << 20)],
                             unified={"hugetlb.2MB.rsvd.max": "4194304"}))
    assert ("unified", "hugetlb.2MB.max", str(8 << 20)) in writes
    assert ("unified", "hugetlb.2MB.rsvd.max", "4194304") in writes
    assert (root / "unified" / "cgroup.subtree_control").read_text() == "+hugetlb"
    with pytest.raises(CgroupError, match=r"'memory\.high': controller 'memory' is not available"):
        manager.update(Resources(unified={"memory.high": "1"}))


def test_legacy_host_rejects_unified_keys(fake_v1):
    manager, _root = fake_v1(unified=None)
    with pytest.raises(CgroupError, match=r"'memory\.high': this host has no cgroup v2"):
        manager.update(Resources(unified={"memory.high": "1"}))


def test_freeze_without_freezer_is_an_error(fake_v1):
    manager, _root = fake_v1(hierarchies=("memory",))
    with pytest.raises(CgroupError, match="freezer controller is not available"):
        manager.freeze()
    assert manager.state() == "thawed"
