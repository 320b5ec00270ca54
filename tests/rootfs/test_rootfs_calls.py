"""The call sequence prepare/pivot/finalize make, through the recording fake (no mounts happen).

The fake's openat2 really opens (on the tmp rootfs), so destinations are really created and resolved;
``PathRecorder`` turns each ``/proc/self/fd/N`` argument back into the path it named at call time.
"""

from __future__ import annotations

import errno
import os
import re
import stat

import pytest
from rootfs_harness import base_config, spec_from

from styrolite.errors import ContainerError, describe
from styrolite.mountinfo import parse_mountinfo
from styrolite.rootfs import finalize_rootfs, pivot_into, prepare_rootfs
from styrolite.rootfs.cgroupfs import mount_cgroup
from styrolite.rootfs.options import parse_options
from styrolite.rootfs.remount import locked_flags
from styrolite.spec.model import Mount
from styrolite.syscalls import constants as k
from styrolite.syscalls.fake import RecordingSyscalls

_FD_PATH = re.compile(r"^/proc/self/fd/(\d+)(/.*)?$")


class PathRecorder(RecordingSyscalls):
    """Records real paths instead of fd magic links; mknod leaves a plain file so chown has a target."""

    def _record(self, name, *args):
        args = tuple(self._real(a) if isinstance(a, str) else a for a in args)
        super()._record(name, *args)

    @staticmethod
    def _real(arg: str) -> str:
        match = _FD_PATH.match(arg)
        if not match:
            return arg
        return os.readlink(f"/proc/self/fd/{match.group(1)}") + (match.group(2) or "")

    def mknod(self, path, mode, device):
        super().mknod(path, mode, device)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def minimal_config(**linux) -> dict:
    config = base_config()
    config["mounts"] = []
    del config["hostname"]
    config["linux"] = {"namespaces": [{"type": "mount"}], **linux}
    return config


def mounts(fake: RecordingSyscalls) -> list[tuple]:
    return fake.of("mount")


@pytest.mark.root
def test_prepare_starts_with_rslave_root_and_the_rootfs_bind(bundle: str) -> None:
    fake = PathRecorder()
    prepared = prepare_rootfs(spec_from(minimal_config()), bundle, fake)
    rootfs = os.path.join(bundle, "rootfs")
    assert prepared.rootfs == rootfs and not prepared.userns
    assert mounts(fake)[:2] == [(None, "/", None, k.MS_SLAVE | k.MS_REC, None),
                                (rootfs, rootfs, None, k.MS_BIND | k.MS_REC, None)]


@pytest.mark.root
def test_shared_rootfs_propagation_keeps_the_new_root_private_for_pivot(bundle: str) -> None:
    fake = PathRecorder()
    prepare_rootfs(spec_from(minimal_config(rootfsPropagation="rshared")), bundle, fake)
    rootfs = os.path.join(bundle, "rootfs")
    calls = mounts(fake)
    assert calls[0] == (None, "/", None, k.MS_SHARED | k.MS_REC, None)
    assert (None, rootfs, None, k.MS_PRIVATE, None) in calls


@pytest.mark.root
def test_filesystem_mounts_are_made_in_order_inside_the_root(bundle: str) -> None:
    config = minimal_config()
    config["mounts"] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755"]},
        {"destination": "/new/deep/dir", "type": "tmpfs", "source": "tmpfs", "options": ["ro", "rslave"]},
    ]
    fake = PathRecorder()
    prepare_rootfs(spec_from(config), bundle, fake)
    rootfs = os.path.join(bundle, "rootfs")
    calls = mounts(fake)[2:]
    assert calls[:4] == [
        ("proc", f"{rootfs}/proc", "proc", 0, None),
        ("tmpfs", f"{rootfs}/dev", "tmpfs", k.MS_NOSUID | k.MS_STRICTATIME, "mode=755"),
        ("tmpfs", f"{rootfs}/new/deep/dir", "tmpfs", k.MS_RDONLY, None),
        (None, f"{rootfs}/new/deep/dir", None, k.MS_SLAVE | k.MS_REC, None),
    ]
    assert os.path.isdir(f"{rootfs}/new/deep/dir")


@pytest.mark.root
def test_bind_ro_is_a_second_remount_keeping_the_source_flags(bundle: str, tmp_path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (tmp_path / "f").write_text("x")
    config = minimal_config()
    config["mounts"] = [
        {"destination": "/data", "source": str(source), "options": ["rbind", "ro", "nodev", "rro", "private"]},
        {"destination": "/etc/one-file", "source": str(tmp_path / "f"), "type": "bind"},
    ]
    fake = PathRecorder()
    prepare_rootfs(spec_from(config), bundle, fake)
    rootfs = os.path.join(bundle, "rootfs")
    calls = mounts(fake)[2:]
    assert calls[0] == (str(source), f"{rootfs}/data", None, k.MS_BIND | k.MS_REC, None)
    remount_flags = k.MS_BIND | k.MS_REMOUNT | k.MS_RDONLY | k.MS_NODEV | locked_flags(str(source))
    assert calls[1] == (None, f"{rootfs}/data", None, remount_flags, None)
    assert calls[2] == (None, f"{rootfs}/data", None, k.MS_PRIVATE, None)
    assert fake.of("mount_setattr") == [(f"{rootfs}/data", k.AT_RECURSIVE, k.MOUNT_ATTR_RDONLY, 0, 0, -100)]
    assert calls[3] == (str(tmp_path / "f"), f"{rootfs}/etc/one-file", None, k.MS_BIND, None)
    assert stat.S_ISREG(os.stat(f"{rootfs}/etc/one-file").st_mode)  # a file source gets an empty file


@pytest.mark.root
def test_relative_bind_source_is_relative_to_the_bundle(bundle: str) -> None:
    os.mkdir(os.path.join(bundle, "volume"))
    config = minimal_config()
    config["mounts"] = [{"destination": "/v", "source": "volume", "options": ["bind"]}]
    fake = PathRecorder()
    prepare_rootfs(spec_from(config), bundle, fake)
    assert mounts(fake)[2][0] == os.path.join(bundle, "volume")


@pytest.mark.root
def test_absolute_symlink_destination_resolves_inside_the_root(bundle: str) -> None:
    rootfs = os.path.join(bundle, "rootfs")
    os.symlink("/etc", os.path.join(rootfs, "x"))
    os.symlink("../../../../../../../../../var/lib/escape", os.path.join(rootfs, "y"))
    config = minimal_config()
    config["mounts"] = [{"destination": "/x", "type": "tmpfs", "source": "tmpfs"},
                        {"destination": "/y/z", "type": "tmpfs", "source": "tmpfs"}]
    fake = PathRecorder()
    prepare_rootfs(spec_from(config), bundle, fake)
    assert [c[1] for c in mounts(fake)[2:4]] == [f"{rootfs}/etc", f"{rootfs}/var/lib/escape/z"]
    assert not os.path.exists("/var/lib/escape")


def test_errors_name_the_mount_then_the_kernel_call(bundle: str) -> None:
    config = minimal_config()
    config["mounts"] = [{"destination": "/proc", "type": "proc", "source": "proc"}]
    fake = PathRecorder()
    fake.fail_on("mount", errno.EPERM, lambda args: args[2] == "proc")
    with pytest.raises(ContainerError) as info:
        prepare_rootfs(spec_from(config), bundle, fake)
    message = describe(info.value)
    assert message.startswith('mount "proc" on "/proc" (type proc): mount(')
    assert message.endswith("EPERM (Operation not permitted)")


def test_missing_rootfs_and_missing_bind_source(bundle: str, tmp_path) -> None:
    config = minimal_config()
    config["root"]["path"] = "nope"
    with pytest.raises(ContainerError, match="nope"):
        prepare_rootfs(spec_from(config), bundle, PathRecorder())
    config = minimal_config()
    config["mounts"] = [{"destination": "/v", "source": str(tmp_path / "absent"), "options": ["bind"]}]
    with pytest.raises(ContainerError) as info:
        prepare_rootfs(spec_from(config), bundle, PathRecorder())
    assert 'mount "' in describe(info.value) and "absent" in describe(info.value)


@pytest.mark.root
def test_devices_are_mknod_with_mode_owner_and_config_overrides(bundle: str) -> None:
    config = minimal_config(devices=[{"type": "c", "path": "/dev/null", "major": 1, "minor": 3, "fileMode": 0o600},
                                     {"type": "b", "path": "/dev/sda", "major": 8, "minor": 0}])
    fake = PathRecorder()
    prepare_rootfs(spec_from(config), bundle, fake)
    dev = os.path.join(bundle, "rootfs", "dev")
    nodes = {os.path.basename(path): (mode, device) for path, mode, device in fake.of("mknod")}
    assert nodes["null"] == (stat.S_IFCHR | 0o600, os.makedev(1, 3))
    assert nodes["zero"] == (stat.S_IFCHR | 0o666, os.makedev(1, 5))
    assert nodes["sda"] == (stat.S_IFBLK | 0o666, os.makedev(8, 0))
    assert set(nodes) == {"null", "zero", "full", "random", "urandom", "tty", "sda"}
    assert os.readlink(f"{dev}/ptmx") == "pts/ptmx"
    assert os.readlink(f"{dev}/fd") == "/proc/self/fd"
    assert os.path.isdir(f"{dev}/pts") and os.path.isdir(f"{dev}/shm")


def test_user_namespace_binds_devices_and_console(bundle: str) -> None:
    config = minimal_config(namespaces=[{"type": "mount"}, {"type": "user"}],
                            uidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}],
                            gidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}])
    config["process"]["terminal"] = True
    fake = PathRecorder()
    prepared = prepare_rootfs(spec_from(config), bundle, fake, console_path="/dev/pts/7")
    dev = os.path.join(bundle, "rootfs", "dev")
    assert prepared.userns and fake.of("mknod") == []
    binds = [(src, dst) for src, dst, _, flags, _ in mounts(fake) if flags == k.MS_BIND]
    assert ("/dev/null", f"{dev}/null") in binds
    assert ("/dev/tty", f"{dev}/tty") in binds
    assert binds[-1] == ("/dev/pts/7", f"{dev}/console")


# what containerd 1.6 puts in linux.devices for a privileged container: every device node of the host's /dev
PRIVILEGED_DEVICES = [{"type": "c", "path": "/dev/ptmx", "major": 5, "minor": 2, "fileMode": 0o666},
                      {"type": "c", "path": "/dev/tty1", "major": 4, "minor": 1, "fileMode": 0o620},
                      {"type": "c", "path": "/dev/kmsg", "major": 1, "minor": 11, "fileMode": 0o644},
                      {"type": "c", "path": "/dev/net/tun", "major": 10, "minor": 200, "fileMode": 0o666}]


@pytest.mark.root
def test_privileged_devices_skip_ptmx_which_stays_the_devpts_link(bundle: str) -> None:
    fake = PathRecorder()
    prepare_rootfs(spec_from(minimal_config(devices=PRIVILEGED_DEVICES)), bundle, fake)
    dev = os.path.join(bundle, "rootfs", "dev")
    made = {path: (mode, device) for path, mode, device in fake.of("mknod")}
    assert f"{dev}/ptmx" not in made   # runc's createDevices skips it too: setupPtmx links it
    assert made[f"{dev}/tty1"] == (stat.S_IFCHR | 0o620, os.makedev(4, 1))
    assert made[f"{dev}/net/tun"] == (stat.S_IFCHR | 0o666, os.makedev(10, 200))
    assert os.readlink(f"{dev}/ptmx") == "pts/ptmx"


def test_privileged_devices_in_a_user_namespace_bind_all_but_ptmx(bundle: str) -> None:
    config = minimal_config(namespaces=[{"type": "mount"}, {"type": "user"}], devices=PRIVILEGED_DEVICES,
                            uidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}],
                            gidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}])
    fake = PathRecorder()
    prepare_rootfs(spec_from(config), bundle, fake)
    dev = os.path.join(bundle, "rootfs", "dev")
    binds = {dst: src for src, dst, _, flags, _ in mounts(fake) if flags == k.MS_BIND}
    assert binds[f"{dev}/tty1"] == "/dev/tty1" and binds[f"{dev}/net/tun"] == "/dev/net/tun"
    # a bind of the runtime's /dev/ptmx would make the link impossible (unlink: EBUSY) and hand the
    # container the runtime's pty multiplexer instead of its own devpts's
    assert "/dev/ptmx" not in binds.values() and f"{dev}/ptmx" not in binds
    assert os.readlink(f"{dev}/ptmx") == "pts/ptmx"


@pytest.mark.root
def test_a_node_already_in_the_containers_dev_is_kept(bundle: str) -> None:
    dev = os.path.join(bundle, "rootfs", "dev")
    os.makedirs(dev, exist_ok=True)
    with open(f"{dev}/kmsg", "w") as f:
        f.write("the image's")
    fake = PathRecorder()
    fake.fail_on("mknod", errno.EEXIST, lambda args: args[0].endswith("/kmsg"))
    prepare_rootfs(spec_from(minimal_config(devices=PRIVILEGED_DEVICES)), bundle, fake)
    with open(f"{dev}/kmsg") as f:
        assert f.read() == "the image's"   # runc: mknod's EEXIST means the node is there already


def test_mknod_refused_falls_back_to_a_bind_of_the_runtimes_node(bundle: str) -> None:
    fake = PathRecorder()
    fake.fail_on("mknod", errno.EPERM)
    prepare_rootfs(spec_from(minimal_config(devices=PRIVILEGED_DEVICES)), bundle, fake)
    dev = os.path.join(bundle, "rootfs", "dev")
    binds = {dst: src for src, dst, _, flags, _ in mounts(fake) if flags == k.MS_BIND}
    assert binds[f"{dev}/null"] == "/dev/null" and binds[f"{dev}/kmsg"] == "/dev/kmsg"


@pytest.mark.root
def test_device_errors_name_the_device_and_the_step(bundle: str) -> None:
    fake = PathRecorder()
    fake.fail_on("mknod", errno.EINVAL, lambda args: args[0].endswith("/tty1"))
    with pytest.raises(ContainerError) as info:
        prepare_rootfs(spec_from(minimal_config(devices=PRIVILEGED_DEVICES)), bundle, fake)
    message = describe(info.value)
    assert message.startswith("create device '/dev/tty1' (c 4:1): mknod(") and message.endswith("(Invalid argument)")
    config = minimal_config(namespaces=[{"type": "mount"}, {"type": "user"}], devices=PRIVILEGED_DEVICES,
                            uidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}],
                            gidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}])
    fake = PathRecorder()
    fake.fail_on("mount", errno.ENOENT, lambda args: args[0] == "/dev/kmsg")
    with pytest.raises(ContainerError) as info:
        prepare_rootfs(spec_from(config), bundle, fake)
    message = describe(info.value)
    assert message.startswith("create device '/dev/kmsg' (c 1:11): bind-mount the runtime's /dev/kmsg onto it")
    assert message.endswith("ENOENT (No such file or directory)")


def test_host_dev_bind_means_no_device_setup(bundle: str) -> None:
    config = minimal_config()
    config["mounts"] = [{"destination": "/dev", "source": "/dev", "options": ["rbind"]}]
    fake = PathRecorder()
    prepare_rootfs(spec_from(config), bundle, fake)
    assert fake.of("mknod") == []


def test_pivot_sequence(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # pivot_into really chdirs; restored afterwards
    fake = RecordingSyscalls()
    pivot_into(str(tmp_path), fake)
    assert [(c.name, c.args) for c in fake.calls] == [
        ("pivot_root", (".", ".")),
        ("mount", (None, ".", None, k.MS_SLAVE | k.MS_REC, None)),
        ("umount2", (".", k.MNT_DETACH)),
    ]
    assert os.getcwd() == "/"


def test_finalize_masks_readonly_root_and_propagation_last() -> None:
    # the fake resolves against this host's "/": only read-only lookups happen, every change is recorded
    config = minimal_config(maskedPaths=["/etc/hostname", "/etc", "/no/such/thing"], readonlyPaths=["/usr", "/nope"],
                            rootfsPropagation="rshared")
    config["root"]["readonly"] = True
    fake = PathRecorder()
    finalize_rootfs(spec_from(config), fake)
    assert mounts(fake) == [
        ("/usr", "/usr", None, k.MS_BIND | k.MS_REC, None),
        (None, "/usr", None, k.MS_BIND | k.MS_REMOUNT | k.MS_RDONLY | locked_flags("/usr"), None),
        ("/dev/null", "/etc/hostname", None, k.MS_BIND, None),
        ("tmpfs", "/etc", "tmpfs", k.MS_RDONLY, None),
        (None, "/", None, k.MS_SHARED | k.MS_REC, None),
    ]
    assert fake.of("mount_setattr") == [("/", k.AT_SYMLINK_NOFOLLOW, k.MOUNT_ATTR_RDONLY, 0, 0, -100)]


def test_readonly_root_falls_back_to_a_bind_remount_without_mount_setattr() -> None:
    config = minimal_config()
    config["root"]["readonly"] = True
    fake = PathRecorder()
    fake.fail_on("mount_setattr", errno.ENOSYS)
    finalize_rootfs(spec_from(config), fake)
    assert mounts(fake) == [(None, "/", None, k.MS_BIND | k.MS_REMOUNT | k.MS_RDONLY | locked_flags("/"), None)]


def test_bad_sysctl_name_is_a_config_error() -> None:
    from styrolite.errors import ConfigError
    from styrolite.rootfs.finalize import write_sysctl

    with pytest.raises(ConfigError, match=r"linux\.sysctl"):
        write_sysctl(-1, "kernel..hostname", "x", RecordingSyscalls())
    with pytest.raises(ConfigError):
        write_sysctl(-1, "kernel.a/../../x", "x", RecordingSyscalls())


HYBRID = """\
20 1 0:19 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 20 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
"""
SELF_CGROUP = "4:memory:/box/one\n3:cpu,cpuacct:/box/one\n1:name=systemd:/\n0::/\n"


def test_cgroup_on_hybrid_is_tmpfs_with_hierarchy_binds(tmp_path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    fake = PathRecorder()
    try:
        mount = Mount(destination="/sys/fs/cgroup", type="cgroup", source="cgroup",
                      options=["nosuid", "noexec", "nodev", "ro"])
        mount_cgroup(root_fd, mount, parse_options(mount.options), fake,
                     mountinfo=parse_mountinfo(HYBRID), self_cgroup=SELF_CGROUP)
    finally:
        os.close(root_fd)
    cg = f"{root}/sys/fs/cgroup"
    flags = k.MS_NOSUID | k.MS_NOEXEC | k.MS_NODEV
    binds = [(src, dst) for src, dst, _, f, _ in mounts(fake) if f == k.MS_BIND | k.MS_REC]
    assert mounts(fake)[0] == ("tmpfs", cg, "tmpfs", flags, "mode=755")
    assert binds == [("/sys/fs/cgroup/unified", f"{cg}/unified"), ("/sys/fs/cgroup/systemd", f"{cg}/systemd"),
                     ("/sys/fs/cgroup/cpu,cpuacct/box/one", f"{cg}/cpu,cpuacct"),
                     ("/sys/fs/cgroup/memory/box/one", f"{cg}/memory")]
    remounts = [f for _, _, _, f, _ in mounts(fake) if f & k.MS_REMOUNT]
    assert len(remounts) == 5 and all(f & k.MS_RDONLY for f in remounts)  # 4 binds and the tmpfs itself
    assert os.readlink(f"{cg}/cpu") == "cpu,cpuacct" and os.readlink(f"{cg}/cpuacct") == "cpu,cpuacct"


def test_cgroup_on_unified_is_cgroup2(tmp_path) -> None:
    root_fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    fake = PathRecorder()
    try:
        mount = Mount(destination="/sys/fs/cgroup", type="cgroup", source="cgroup", options=["ro", "nosuid"])
        unified = "25 20 0:23 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
        mount_cgroup(root_fd, mount, parse_options(mount.options), fake, mountinfo=parse_mountinfo(unified))
    finally:
        os.close(root_fd)
    assert mounts(fake) == [("cgroup", f"{tmp_path}/sys/fs/cgroup", "cgroup2", k.MS_RDONLY | k.MS_NOSUID, None)]


@pytest.mark.root
def test_sysfs_not_permitted_falls_back_to_the_hosts_sys(bundle: str) -> None:
    config = minimal_config()
    config["mounts"] = [{"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro", "nosuid"]}]
    fake = PathRecorder()
    fake.fail_on("mount", errno.EPERM, lambda args: args[2] == "sysfs")
    prepare_rootfs(spec_from(config), bundle, fake)
    sys_dir = os.path.join(bundle, "rootfs", "sys")
    calls = mounts(fake)[2:5]
    assert calls[0][2] == "sysfs"
    assert calls[1] == ("/sys", sys_dir, None, k.MS_BIND | k.MS_REC, None)
    assert calls[2] == (None, sys_dir, None,
                        k.MS_BIND | k.MS_REMOUNT | k.MS_RDONLY | k.MS_NOSUID | locked_flags("/sys"), None)


def test_console_after_pivot(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from styrolite.rootfs import mount_console

    (tmp_path / "dev").mkdir()
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *a, **kw: real_open(tmp_path if path == "/" else path, *a, **kw))
    fake = PathRecorder()
    mount_console("/dev/pts/0", fake)
    assert mounts(fake) == [("/dev/pts/0", f"{tmp_path}/dev/console", None, k.MS_BIND, None)]
