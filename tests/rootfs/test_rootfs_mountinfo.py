"""The one mountinfo parser (styrolite.mountinfo): fields, octal escapes, lines it cannot read."""

from __future__ import annotations

from styrolite.mountinfo import mount_containing, parse_mountinfo, unescape

TEXT = """\
22 1 0:21 / / rw,relatime shared:1 - rootfs rootfs rw
36 22 0:30 / /run/my\\040dir rw,nosuid shared:7 master:3 - tmpfs tm\\134pfs rw,mode=755
37 36 0:31 /sub /run/my\\040dir/in rw - cgroup2 cgroup2 rw,nsdelegate
not a mountinfo line

"""


def test_fields_escapes_and_propagation():
    root, run, nested = parse_mountinfo(TEXT)
    assert (root.mount_id, root.parent_id, root.mount_point, root.fstype) == (22, 1, "/", "rootfs")
    assert run.mount_point == "/run/my dir" and run.source == "tm\\pfs"
    assert run.shared and run.slave and run.options == {"rw", "nosuid"}
    assert nested.root == "/sub" and nested.super_options == {"rw", "nsdelegate"}
    assert mount_containing("/run/my dir/in/x", [root, run, nested]) is nested
    assert mount_containing("/etc", [root, run, nested]) is root


def test_unescape_leaves_plain_text_alone():
    assert unescape("/a\\011b\\012c") == "/a\tb\nc"
    assert unescape("/no/escapes") == "/no/escapes"
    assert unescape("/trailing\\04") == "/trailing\\04"
