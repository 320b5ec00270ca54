"""The cgroup v2 driver's controller-file writes, on a fake cgroupfs tree (this host's cgroup2 has no
controllers but hugetlb). Every write is recorded, because a real cgroupfs file is not a log."""

from __future__ import annotations

import logging
import struct

import pytest

from styrolite.cgroups import CgroupError, files, open_cgroup
from styrolite.cgroups.convert import cpu_max, cpu_weight_from_shares, io_weight_from_blkio, swap_max
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
    WeightDevice,
)
from styrolite.syscalls import constants as k
from styrolite.syscalls.fake import RecordingSyscalls

ALL = "cpuset cpu io memory hugetlb pids rdma misc"
LEAF_FILES = ["cgroup.procs", "memory.max", "memory.low", "memory.high", "memory.swap.max", "cpu.weight", "cpu.max",
              "cpu.max.burst", "cpu.idle", "cpuset.cpus", "cpuset.mems", "pids.max", "io.weight", "io.max",
              "hugetlb.2MB.max", "rdma.max"]


@pytest.fixture
def writes(monkeypatch):
    """Records (file name, value) for every cgroup write, then performs it."""
    recorded: list[tuple[str, str]] = []
    real_write = files.write

    def record(directory, name, value):
        recorded.append((name, str(value)))
        real_write(directory, name, value)

    monkeypatch.setattr(files, "write", record)
    return recorded


@pytest.fixture
def fake_v2(tmp_path, fake_tree):
    def make(offered: str = ALL, leaf_files=tuple(LEAF_FILES)):
        root = tmp_path / "cg"
        tree = {"cg/cgroup.controllers": offered, "cg/cgroup.subtree_control": "",
                "cg/styrolite/cgroup.controllers": offered, "cg/styrolite/cgroup.subtree_control": "",
                "cg/styrolite/c1/cgroup.controllers": offered}
        tree.update({f"cg/styrolite/c1/{name}": "" for name in leaf_files})
        fake_tree(tree)
        (tmp_path / "mountinfo").write_text(f"1 2 0:1 / {root} rw - cgroup2 cgroup2 rw\n")
        fake = RecordingSyscalls()
        manager = open_cgroup(None, "c1", str(root), sys=fake, mountinfo=str(tmp_path / "mountinfo"))
        return manager, fake, root

    return make


def test_conversions():
    assert cpu_weight_from_shares(2) == 1
    assert cpu_weight_from_shares(1024) == 39
    assert cpu_weight_from_shares(262144) == 10000
    assert io_weight_from_blkio(10) == 1 and io_weight_from_blkio(500) == 4950 and io_weight_from_blkio(1000) == 10000
    assert swap_max(None, 100) is None
    assert swap_max(None, -1) == "max"
    assert swap_max(-1, 100) == "max"
    assert swap_max(300, 100) == "200"
    assert swap_max(100, 100) == "0"
    with pytest.raises(CgroupError, match=r"must be >= memory\.limit"):
        swap_max(50, 100)
    with pytest.raises(CgroupError, match="needs a memory limit"):
        swap_max(300, None)
    assert cpu_max(None, None) is None
    assert cpu_max(50000, 100000) == "50000 100000"
    assert cpu_max(-1, 100000) == "max 100000"
    assert cpu_max(20000, None) == "20000"


def test_create_enables_everyday_controllers_top_down(fake_v2, writes):
    manager, _fake, root = fake_v2()
    manager.create()
    assert writes == [("cgroup.subtree_control", "+cpu +cpuset +io +memory +pids")] * 2
    assert (root / "styrolite" / "cgroup.subtree_control").read_text() == "+cpu +cpuset +io +memory +pids"


def test_apply_writes_every_controller_file(fake_v2, writes):
    manager, fake, _root = fake_v2()
    manager.apply(Resources(
        memory=Memory(limit=256 << 20, reservation=128 << 20, swap=512 << 20),
        cpu=CPU(shares=1024, quota=50000, period=100000, burst=1000, idle=0, cpus="0-1", mems="0"),
        pids=Pids(limit=100),
        block_io=BlockIO(weight=500, weight_device=[WeightDevice(major=8, minor=0, weight=100)],
                         throttle_read_bps_device=[ThrottleDevice(major=8, minor=0, rate=1 << 20)],
                         throttle_write_iops_device=[ThrottleDevice(major=8, minor=16, rate=300)]),
        hugepage_limits=[HugepageLimit(page_size="2MB", limit=4 << 21)],
        rdma={"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}},
        unified={"memory.high": "200000000"},
    ))
    leaf = [(name, value) for name, value in writes if name != "cgroup.subtree_control"]
    assert leaf == [
        ("memory.max", str(256 << 20)), ("memory.swap.max", str(256 << 20)), ("memory.low", str(128 << 20)),
        ("cpu.weight", "39"), ("cpu.max", "50000 100000"), ("cpu.max.burst", "1000"), ("cpu.idle", "0"),
        ("cpuset.cpus", "0-1"), ("cpuset.mems", "0"), ("pids.max", "100"),
        ("io.weight", "default 4950"), ("io.weight", "8:0 910"), ("io.max", "8:0 rbps=1048576"),
        ("io.max", "8:16 wiops=300"), ("hugetlb.2MB.max", str(4 << 21)),
        ("rdma.max", "mlx5_1 hca_handle=3 hca_object=10000"), ("memory.high", "200000000"),
    ]
    assert {"+hugetlb", "+rdma"} <= {w for name, value in writes if name == "cgroup.subtree_control"
                                     for w in value.split()}
    (load_cmd, load_attr), (attach_cmd, attach_attr) = fake.of("bpf")
    assert load_cmd == k.BPF_PROG_LOAD and struct.unpack_from("<I", load_attr)[0] == k.BPF_PROG_TYPE_CGROUP_DEVICE
    assert attach_cmd == k.BPF_PROG_ATTACH and struct.unpack_from("<I", attach_attr, 8)[0] == k.BPF_CGROUP_DEVICE


def test_unlimited_values_are_max(fake_v2, writes):
    manager, _fake, _root = fake_v2()
    manager.apply(Resources(memory=Memory(limit=-1), pids=Pids(limit=-1), cpu=CPU(quota=-1, period=100000)))
    assert ("memory.max", "max") in writes and ("memory.swap.max", "max") in writes
    assert ("pids.max", "max") in writes and ("cpu.max", "max 100000") in writes


def test_update_touches_only_what_it_names(fake_v2, writes):
    manager, fake, root = fake_v2()
    (root / "styrolite" / "c1" / "cpu.max").write_text("20000 100000\n")
    manager.update(Resources(cpu=CPU(period=50000)))
    assert [(n, v) for n, v in writes if n != "cgroup.subtree_control"] == [("cpu.max", "20000 50000")]
    assert fake.of("bpf") == []  # no device rules in the update: the program stays
    manager.update(Resources(devices=[DeviceCgroup(allow=True, type="c", major=10, minor=200)]))
    assert [cmd for cmd, _attr in fake.of("bpf")] == [k.BPF_PROG_LOAD, k.BPF_PROG_ATTACH]


def test_missing_controller_warns_once_naming_it(fake_v2, writes, caplog):
    manager, _fake, _root = fake_v2(offered="cpu pids")
    with caplog.at_level(logging.WARNING, logger="styrolite"):
        manager.apply(Resources(memory=Memory(limit=1 << 30, reservation=1 << 29), pids=Pids(limit=5),
                                network=Network(class_id=7)))
    warnings = [r.getMessage() for r in caplog.records]
    assert len([w for w in warnings if "'memory'" in w]) == 1
    assert any("net_cls" in w for w in warnings)
    assert not any(name.startswith("memory.") for name, _value in writes)
    assert ("pids.max", "5") in writes


@pytest.mark.parametrize(("key", "message"), [
    ("../memory.max", "must be a cgroup file name"),
    ("memory", "must be a cgroup file name"),
    ("misc.max", "controller 'misc' is not available"),
])
def test_unified_keys_are_validated(fake_v2, key, message):
    manager, _fake, _root = fake_v2(offered="memory")
    with pytest.raises(CgroupError, match=message) as info:
        manager.apply(Resources(unified={key: "1"}))
    assert repr(key) in str(info.value)


def test_unified_write_failure_names_the_key(fake_v2):
    manager, _fake, _root = fake_v2()
    with pytest.raises(CgroupError) as info:
        manager.apply(Resources(unified={"memory.nonexistent": "1"}))
    assert "'memory.nonexistent'" in str(info.value)
    assert "ENOENT" in str(info.value.__cause__)


def test_swap_without_swap_accounting_warns(fake_v2, caplog):
    manager, _fake, _root = fake_v2(leaf_files=[f for f in LEAF_FILES if f != "memory.swap.max"])
    with caplog.at_level(logging.WARNING, logger="styrolite"):
        manager.apply(Resources(memory=Memory(limit=100, swap=200)))
    assert any("memory.swap.max" in r.getMessage() for r in caplog.records)


def test_unknown_hugepage_size_is_an_error(fake_v2):
    manager, _fake, _root = fake_v2()
    with pytest.raises(CgroupError, match="page size '1GB'"):
        manager.apply(Resources(hugepage_limits=[HugepageLimit(page_size="1GB", limit=1 << 30)]))


def test_stats_from_files(fake_v2):
    manager, _fake, root = fake_v2()
    leaf = root / "styrolite" / "c1"
    (leaf / "memory.current").write_text("1000\n")
    (leaf / "memory.max").write_text("max\n")
    (leaf / "memory.peak").write_text("2000\n")
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (leaf / "cpu.stat").write_text("usage_usec 50\nuser_usec 30\nsystem_usec 20\nnr_periods 4\nnr_throttled 2\n"
                                   "throttled_usec 7\n")
    (leaf / "pids.current").write_text("3\n")
    (leaf / "pids.max").write_text("max\n")
    (leaf / "io.stat").write_text("8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n8:16 rbytes=5 wbytes=0 "
                                  "rios=1 wios=0\n")
    assert manager.stats() == {
        "memory": {"usage": 1000, "limit": None, "max_usage": 2000, "oom_kills": 1},
        "cpu": {"usage_usec": 50, "user_usec": 30, "system_usec": 20, "nr_periods": 4, "nr_throttled": 2,
                "throttled_usec": 7},
        "pids": {"current": 3, "limit": None},
        "io": {"read_bytes": 15, "write_bytes": 20, "read_ops": 2, "write_ops": 2},
    }
