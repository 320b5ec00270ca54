"""Mode detection from mountinfo, cgroupsPath validation and where a path lands in each hierarchy."""

from __future__ import annotations

import pytest

from styrolite.cgroups import CgroupError, V1Manager, V2Manager, open_cgroup, parse_cgroups_path
from styrolite.cgroups.layout import Hierarchy, layout_from_mountinfo
from styrolite.cgroups.paths import CgroupPath, directory_in

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 23 0:50 / /mnt/elsewhere rw - cgroup cgroup rw,pids
"""
UNIFIED = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
LEGACY = "\n".join(line for line in HYBRID.splitlines() if "unified" not in line)


def test_hybrid_layout():
    layout = layout_from_mountinfo(HYBRID)
    assert layout.mode == "hybrid"
    assert layout.unified.mountpoint == "/sys/fs/cgroup/unified"
    assert layout.v1["cpu"] is layout.v1["cpuacct"]
    assert layout.v1["cpu"].mountpoint == "/sys/fs/cgroup/cpu,cpuacct"
    assert set(layout.v1) == {"cpu", "cpuacct", "memory", "freezer", "name=systemd"}  # /mnt is not under root
    assert len(layout.v1_hierarchies()) == 4


def test_unified_and_legacy_layouts():
    assert layout_from_mountinfo(UNIFIED).mode == "unified"
    legacy = layout_from_mountinfo(LEGACY)
    assert legacy.mode == "legacy" and legacy.unified is None
    with pytest.raises(CgroupError, match="no cgroup hierarchy"):
        layout_from_mountinfo("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n")


def test_cgroup2_given_as_the_root_is_unified():
    layout = layout_from_mountinfo(HYBRID, root="/sys/fs/cgroup/unified")
    assert layout.mode == "unified" and layout.v1 == {}


def test_escaped_mountpoints():
    layout = layout_from_mountinfo("1 2 0:1 / /c\\040g rw - cgroup2 cgroup2 rw\n", root="/c g")
    assert layout.unified.mountpoint == "/c g"


@pytest.mark.parametrize(("given", "expected"), [
    (None, "/styrolite/web"),
    ("", "/styrolite/web"),
    ("/a/b", "/a/b"),
    ("/a//./b/", "/a/b"),
    ("rel/x", "rel/x"),
])
def test_valid_paths(given, expected):
    assert str(parse_cgroups_path(given, "web")) == expected


@pytest.mark.parametrize(("given", "message"), [
    ("/a/../../etc", r"'\.\.' is not allowed"),
    ("../sibling", r"'\.\.' is not allowed"),
    ("/", "must name a cgroup below"),
    ("system.slice:docker:abc", "systemd cgroup driver not supported"),
    ("/a\0b", "NUL"),
])
def test_invalid_paths(given, message):
    with pytest.raises(CgroupError, match=message):
        parse_cgroups_path(given, "web")


def test_container_id_that_cannot_be_a_directory():
    with pytest.raises(CgroupError, match="container id"):
        parse_cgroups_path(None, "../x")


def test_relative_path_is_below_the_runtime_own_cgroup():
    hierarchy = Hierarchy("/sys/fs/cgroup/memory", "/")
    path = CgroupPath(("c1",), absolute=False)
    assert directory_in(hierarchy, path, "/process_api/abc") == "/sys/fs/cgroup/memory/process_api/abc/c1"
    # Inside a cgroup namespace the mount root is our own cgroup: it is stripped.
    namespaced = Hierarchy("/sys/fs/cgroup", "/zone/agent")
    assert directory_in(namespaced, path, "/zone/agent") == "/sys/fs/cgroup/c1"
    assert directory_in(namespaced, CgroupPath(("a",), True), "/zone/agent") == "/sys/fs/cgroup/a"


def test_open_cgroup_picks_the_driver(tmp_path):
    (tmp_path / "hybrid").write_text(HYBRID)
    (tmp_path / "unified").write_text(UNIFIED)
    (tmp_path / "self_cgroup").write_text("4:memory:/process_api/abc\n3:cpu,cpuacct:/\n0::/agent\n")
    v1 = open_cgroup("sub/c1", "c1", mountinfo=str(tmp_path / "hybrid"), proc_cgroup=str(tmp_path / "self_cgroup"))
    assert isinstance(v1, V1Manager)
    assert v1.directories["memory"] == "/sys/fs/cgroup/memory/process_api/abc/sub/c1"
    assert v1.directories["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct/sub/c1"
    assert v1.unified.directory == "/sys/fs/cgroup/unified/agent/sub/c1"
    assert not v1.unified.manage_devices
    v2 = open_cgroup(None, "c1", mountinfo=str(tmp_path / "unified"))
    assert isinstance(v2, V2Manager)
    assert (v2.directory, v2.path) == ("/sys/fs/cgroup/styrolite/c1", "/styrolite/c1")
