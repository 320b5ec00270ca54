"""The rootfs set up for real (root, forked child with its own mount namespace), checked from inside."""

from __future__ import annotations

import os
import stat

import pytest
from rootfs_harness import base_config, in_container, mount_table, mounts_at, spec_from, write_error

from styrolite.syscalls import LINUX
from styrolite.syscalls import constants as k

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("as_root")]


def test_default_config_mounts_devices_and_no_trace_of_the_host(bundle: str) -> None:
    config = base_config()

    def check():
        table = mount_table()
        ids = {e.mount_id for e in table}
        dev_null = os.stat("/dev/null")
        return {
            "points": [e.mount_point for e in table],
            "orphans": [e.mount_point for e in table if e.parent_id not in ids],
            "root": os.listdir("/"),
            "dev": {name: [stat.S_IFMT(st.st_mode), st.st_mode & 0o7777, os.major(st.st_rdev), os.minor(st.st_rdev)]
                    for name in ("null", "zero", "full", "random", "urandom", "tty")
                    for st in [os.stat(f"/dev/{name}")]},
            "links": {name: os.readlink(f"/dev/{name}") for name in ("fd", "stdin", "stdout", "stderr", "ptmx")},
            "null_reads_empty": open("/dev/null", "rb").read() == b"" and dev_null.st_uid == 0,
            "shm": mounts_at("/dev/shm"), "sys": mounts_at("/sys"), "proc": mounts_at("/proc"),
            "cwd": os.getcwd(),
        }

    inside = in_container(spec_from(config), bundle, check).ok()
    assert inside["orphans"] == ["/"]  # the container root is the only mount whose parent is invisible
    assert not [p for p in inside["points"] if bundle in p or p.startswith(("/work", "/usr", "/home"))]
    assert sorted(inside["root"]) == ["bin", "dev", "etc", "proc", "sys", "tmp"]
    assert {"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"} <= set(inside["points"])
    expected = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
    for name, (major, minor) in expected.items():
        assert inside["dev"][name] == [stat.S_IFCHR, 0o666, major, minor], name
    assert inside["links"] == {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
                               "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}
    assert inside["null_reads_empty"]
    assert {"nosuid", "nodev", "noexec", "rw"} <= set(inside["shm"][-1]["options"])
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(inside["sys"][-1]["options"])
    assert inside["proc"][-1]["fstype"] == "proc"
    assert inside["cwd"] == "/"


def test_masked_and_readonly_paths(bundle: str) -> None:
    config = base_config()
    os.makedirs(os.path.join(bundle, "rootfs", "data", "keep"))
    with open(os.path.join(bundle, "rootfs", "etc", "secret"), "w") as f:
        f.write("top secret")
    config["linux"]["maskedPaths"] += ["/etc/secret", "/data", "/does/not/exist"]
    config["linux"]["readonlyPaths"] += ["/etc", "/no/such/path"]
    config["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                             "options": ["nosuid", "nodev", "noexec"]})
    config["linux"]["readonlyPaths"].append("/scratch")

    def check():
        return {
            "secret": open("/etc/secret").read(),
            "data": os.listdir("/data"),
            "data_write": write_error("/data/new"),
            "acpi": os.listdir("/proc/acpi") if os.path.exists("/proc/acpi") else [],
            "interrupts": open("/proc/interrupts").read(),
            "proc_sys": write_error("/proc/sys/kernel/hostname"),
            "etc": write_error("/etc/new-file"),
            "scratch": mounts_at("/scratch"),
            "scratch_write": write_error("/scratch/x"),
            "tmp": write_error("/tmp/ok"),
        }

    inside = in_container(spec_from(config), bundle, check).ok()
    assert inside["secret"] == ""
    assert inside["data"] == []
    assert inside["data_write"] == "EROFS"
    assert inside["acpi"] == []
    assert inside["interrupts"] == ""
    assert inside["proc_sys"] == "EROFS"
    assert inside["etc"] == "EROFS"
    assert inside["scratch_write"] == "EROFS"
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(inside["scratch"][-1]["options"])  # flags kept
    assert inside["tmp"] is None  # the rest of the root stays writable


def test_readonly_root_leaves_config_mounts_writable(bundle: str) -> None:
    config = base_config()
    config["root"]["readonly"] = True

    def check():
        return {"root": write_error("/new"), "shm": write_error("/dev/shm/x"), "root_mount": mounts_at("/")}

    inside = in_container(spec_from(config), bundle, check).ok()
    assert inside["root"] == "EROFS"
    assert inside["shm"] is None
    assert "ro" in inside["root_mount"][-1]["options"]


def test_bind_mounts_flags_propagation_and_recursive_read_only(bundle: str, tmp_path) -> None:
    shared_src, plain_src, nested = tmp_path / "shared", tmp_path / "plain", tmp_path / "plain" / "nested"
    for directory in (shared_src, nested):
        directory.mkdir(parents=True)
    (tmp_path / "file.txt").write_text("hello")
    keep_alive: list[int] = []

    def before():
        # a shared tmpfs, then a second namespace: our copy is a peer of the first, so binds of it can
        # show shared:/master: after "/" is made rslave
        LINUX.mount("tmpfs", str(shared_src), "tmpfs", 0, None)
        LINUX.mount(None, str(shared_src), None, k.MS_SHARED)
        LINUX.mount("tmpfs", str(plain_src), "tmpfs", k.MS_NOSUID | k.MS_NODEV, None)
        os.mkdir(nested)
        LINUX.mount("tmpfs", str(nested), "tmpfs", 0, None)
        keep_alive.append(os.open("/proc/self/ns/mnt", os.O_RDONLY))  # the first namespace holds the master
        LINUX.unshare(k.CLONE_NEWNS)

    config = base_config()
    config["mounts"] += [
        {"destination": "/m/slave", "source": str(shared_src), "options": ["rbind", "rslave"]},
        {"destination": "/m/shared", "source": str(shared_src), "options": ["rbind", "shared"]},
        {"destination": "/m/private", "source": str(shared_src), "options": ["bind", "private"]},
        {"destination": "/m/unbindable", "source": str(shared_src), "options": ["bind", "unbindable"]},
        {"destination": "/m/ro", "source": str(plain_src), "options": ["bind", "ro", "noexec"]},
        {"destination": "/m/rro", "source": str(plain_src), "options": ["rbind", "rro"]},
        {"destination": "/m/file.txt", "source": str(tmp_path / "file.txt"), "type": "bind", "options": ["ro"]},
    ]

    def check():
        return {p: mounts_at(p) for p in ("/m/slave", "/m/shared", "/m/private", "/m/unbindable", "/m/ro",
                                          "/m/rro", "/m/rro/nested", "/m/file.txt")} | {
            "file": open("/m/file.txt").read(), "rro_nested": write_error("/m/rro/nested/x"),
            "ro_write": write_error("/m/ro/x")}

    inside = in_container(spec_from(config), bundle, check, before=before).ok()

    def tags(point):
        return [t.split(":")[0] for t in inside[point][-1]["optional"]]

    assert tags("/m/slave") == ["master"]
    assert "shared" in tags("/m/shared")
    assert tags("/m/private") == []
    assert tags("/m/unbindable") == ["unbindable"]
    assert {"ro", "noexec", "nosuid", "nodev"} <= set(inside["/m/ro"][-1]["options"])  # source's flags kept
    assert inside["ro_write"] == "EROFS"
    assert "ro" in inside["/m/rro"][-1]["options"]
    assert "ro" in inside["/m/rro/nested"][-1]["options"]  # mount_setattr(AT_RECURSIVE)
    assert inside["rro_nested"] == "EROFS"
    assert inside["file"] == "hello"
    assert "ro" in inside["/m/file.txt"][-1]["options"]


def test_symlink_destinations_stay_inside_the_rootfs(bundle: str, tmp_path) -> None:
    rootfs = os.path.join(bundle, "rootfs")
    host_dir = tmp_path / "host-target"
    host_dir.mkdir()
    os.symlink("/etc", os.path.join(rootfs, "x"))
    os.symlink("../../../../../../../../" + str(host_dir).lstrip("/"), os.path.join(rootfs, "y"))
    config = base_config()
    config["mounts"] += [
        {"destination": "/x", "type": "tmpfs", "source": "tmpfs", "options": ["mode=700"]},
        {"destination": "/y/created-by-mount", "type": "tmpfs", "source": "tmpfs"},
    ]

    def check():
        return {"etc": mounts_at("/etc"), "created": os.path.isdir(str(host_dir) + "/created-by-mount")}

    inside = in_container(spec_from(config), bundle, check).ok()
    assert inside["etc"][-1]["fstype"] == "tmpfs"  # landed on the container's /etc, not the host's
    assert inside["created"]
    assert os.path.isdir(os.path.join(rootfs, str(host_dir).lstrip("/"), "created-by-mount"))
    assert not (host_dir / "created-by-mount").exists()


def test_proc_on_a_symlink_is_refused(bundle: str) -> None:
    rootfs = os.path.join(bundle, "rootfs")
    os.rmdir(os.path.join(rootfs, "proc"))
    os.symlink("/tmp", os.path.join(rootfs, "proc"))
    outcome = in_container(spec_from(base_config()), bundle, lambda: None)
    assert outcome.error_type == "ContainerError"
    assert 'mount "proc" on "/proc" (type proc)' in outcome.error
    assert "symlink" in outcome.error


def test_mount_error_names_the_mount_and_errno(bundle: str) -> None:
    config = base_config()
    config["mounts"].append({"destination": "/bad", "type": "nosuchfs", "source": "thing"})
    outcome = in_container(spec_from(config), bundle, lambda: None)
    assert outcome.error.startswith('mount "thing" on "/bad" (type nosuchfs): mount(')
    assert "ENODEV" in outcome.error


def test_extra_devices_sysctl_and_console(bundle: str) -> None:
    master, slave = os.openpty()
    console = os.ttyname(slave)
    config = base_config()
    config["process"]["terminal"] = True
    config["linux"]["devices"] = [
        # podman and docker send the type bits in fileMode (0o20600): only the permission bits count
        {"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229, "fileMode": 0o20600, "uid": 1, "gid": 2},
        {"type": "b", "path": "/dev/disks/loop7", "major": 7, "minor": 7, "fileMode": 0o640},
        {"type": "p", "path": "/dev/fifo"},
    ]
    config["linux"]["sysctl"] = {"kernel.domainname": "rootfs-test"}

    def check():
        def describe_node(path):
            st = os.stat(path)
            return [stat.S_IFMT(st.st_mode), st.st_mode & 0o7777, os.major(st.st_rdev), os.minor(st.st_rdev),
                    st.st_uid, st.st_gid]
        return {"fuse": describe_node("/dev/fuse"), "loop": describe_node("/dev/disks/loop7"),
                "fifo": stat.S_ISFIFO(os.stat("/dev/fifo").st_mode), "console": os.stat("/dev/console").st_rdev,
                "domainname": open("/proc/sys/kernel/domainname").read().strip()}

    try:
        inside = in_container(spec_from(config), bundle, check, extra_ns=k.CLONE_NEWUTS, console_path=console).ok()
        assert inside["console"] == os.stat(console).st_rdev
    finally:
        os.close(master)
        os.close(slave)
    assert inside["fuse"] == [stat.S_IFCHR, 0o600, 10, 229, 1, 2]
    assert inside["loop"] == [stat.S_IFBLK, 0o640, 7, 7, 0, 0]
    assert inside["fifo"]
    assert inside["domainname"] == "rootfs-test"


def test_user_namespace_binds_host_device_nodes(bundle: str) -> None:
    config = base_config()
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 0, "size": 65536}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 0, "size": 65536}]

    def check():
        return {"null": mounts_at("/dev/null"), "rdev": os.stat("/dev/null").st_rdev}

    inside = in_container(spec_from(config), bundle, check).ok()  # the user ns itself is the lead's part
    assert len(inside["null"]) == 1
    assert inside["rdev"] == os.makedev(1, 3)


@pytest.mark.parametrize(("propagation", "tag"), [("rshared", "shared"), ("runbindable", "unbindable"),
                                                   ("rprivate", None)])
def test_rootfs_propagation_final_state(bundle: str, propagation: str, tag: str | None) -> None:
    config = base_config()
    config["linux"]["rootfsPropagation"] = propagation
    inside = in_container(spec_from(config), bundle, lambda: mounts_at("/")).ok()
    tags = [t.split(":")[0] for t in inside[-1]["optional"]]
    assert tags == ([tag] if tag else [])


def test_cgroup_mount_matches_the_host_layout(bundle: str) -> None:
    with open("/proc/self/mountinfo") as f:
        unified = any(line.split(" - ")[0].split()[4] == "/sys/fs/cgroup" and " - cgroup2 " in line
                      for line in f)

    def check():
        table = mount_table()
        return {"top": mounts_at("/sys/fs/cgroup"),
                "subs": sorted(e.mount_point for e in table if e.mount_point.startswith("/sys/fs/cgroup/")),
                "write": write_error("/sys/fs/cgroup/new")}

    inside = in_container(spec_from(base_config()), bundle, check).ok()
    if unified:
        assert inside["top"][-1]["fstype"] == "cgroup2"
    else:
        assert inside["top"][-1]["fstype"] == "tmpfs"
        assert "/sys/fs/cgroup/memory" in inside["subs"]
    assert "ro" in inside["top"][-1]["options"]
    assert inside["write"] == "EROFS"


def test_inside_a_real_user_namespace(bundle: str) -> None:
    """mknod is impossible, sysfs needs a network namespace we do not own (the host's /sys is bound), and
    every bind remount must keep the flags the kernel locked (nosuid/nodev/noexec/relatime)."""
    config = base_config()
    config["linux"]["namespaces"] = [{"type": t} for t in ("pid", "mount", "user", "ipc")]
    del config["hostname"]
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 0, "size": 65536}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 0, "size": 65536}]
    config["root"]["readonly"] = True

    def check():
        return {"null": mounts_at("/dev/null"), "rdev": os.stat("/dev/null").st_rdev,
                "sys": mounts_at("/sys"), "mqueue": mounts_at("/dev/mqueue"),
                "proc_sys": write_error("/proc/sys/kernel/hostname"),
                "cgroup": mounts_at("/sys/fs/cgroup"), "root": write_error("/x"), "pid": os.getpid(),
                "uid_map": open("/proc/self/uid_map").read().split()}

    inside = in_container(spec_from(config), bundle, check, userns=True, extra_ns=k.CLONE_NEWIPC).ok()
    assert inside["uid_map"] == ["0", "0", "65536"]
    assert inside["pid"] == 1
    assert len(inside["null"]) == 1 and inside["rdev"] == os.makedev(1, 3)  # a bind of the host node
    assert inside["sys"][-1]["fstype"] == "sysfs" and "ro" in inside["sys"][-1]["options"]
    assert inside["mqueue"][-1]["fstype"] == "mqueue"
    assert inside["proc_sys"] == "EROFS"
    assert inside["root"] == "EROFS"
    assert "ro" in inside["cgroup"][-1]["options"]


def test_masks_and_readonly_paths_without_a_container_proc(bundle: str) -> None:
    config = base_config()
    config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/proc"]
    config["linux"]["maskedPaths"] = ["/etc/hostname"]
    config["linux"]["readonlyPaths"] = ["/etc"]

    def check():
        return {"proc": os.listdir("/proc"), "hostname": open("/etc/hostname").read(), "etc": write_error("/etc/x")}

    inside = in_container(spec_from(config), bundle, check).ok()
    assert inside == {"proc": [], "hostname": "", "etc": "EROFS"}
