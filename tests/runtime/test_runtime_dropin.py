"""Where styrolite used to differ from runc and crun (issue 10, section 3): each difference, now the same.

Every test drives the styrolite command line the way podman, docker and containerd do (create/start/
delete or run), on a busybox bundle.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from helpers import err, out, state_of

pytestmark = pytest.mark.root

MINIMAL_STATIC_SYSCALLS = [  # what static busybox needs for `echo` (strace), and nothing else
    "execve", "arch_prctl", "set_tid_address", "set_robust_list", "rseq", "prlimit64", "brk", "mprotect",
    "readlink", "getrandom", "getuid", "prctl", "write", "exit_group", "exit",
]


def run(make_bundle, styrolite, args: list[str], edit=None, cid: str = "c1"):
    bundle = make_bundle(args, edit=edit)
    return bundle, styrolite("run", "-b", str(bundle), cid)


def test_seccomp_filter_is_the_last_step_before_execve(make_bundle, styrolite):
    """A default-deny profile that allows only what a minimal static program needs: nothing of the runtime
    may run after the filter is loaded (close_range used to, and the init died with 127 after start)."""
    def edit(c):
        c["process"]["noNewPrivileges"] = True
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                                 "syscalls": [{"names": MINIMAL_STATIC_SYSCALLS, "action": "SCMP_ACT_ALLOW"}]}

    _, result = run(make_bundle, styrolite, ["/bin/busybox", "echo", "seccomp-ok"], edit)
    assert result.returncode == 0, err(result)
    assert out(result) == "seccomp-ok\n"


def test_seccomp_and_execve_are_one_seam_step():
    from styrolite.container import process_setup
    from styrolite.security import compile_filter
    from styrolite.spec.model import Seccomp, SeccompSyscall
    from styrolite.syscalls.fake import RecordingSyscalls

    fake = RecordingSyscalls()
    seccomp = compile_filter(Seccomp(default_action="SCMP_ACT_ERRNO",
                                     syscalls=[SeccompSyscall(names=["execve"], action="SCMP_ACT_ALLOW")]))
    ready = process_setup.ReadyProcess(executable="/bin/true", args=["true"], env=["A=b"], late_filter=seccomp)
    with pytest.raises(process_setup.ExecutableError):
        process_setup.execute(ready, fake)  # the fake's execve returns, which is reported as a failure
    assert fake.names() == ["execve"]
    assert fake.of("execve")[0] == ("/bin/true", ["true"], ["A=b"], seccomp.program, seccomp.flags)


def test_oci_version_1_3_is_accepted_and_features_say_so(make_bundle, styrolite):
    _, result = run(make_bundle, styrolite, ["true"], lambda c: c.update(ociVersion="1.3.0"))
    assert result.returncode == 0, err(result)
    features = json.loads(out(styrolite("features", check=True)))
    assert features["ociVersionMin"] == "1.0.0" and features["ociVersionMax"] == "1.3.0"
    linux = features["linux"]
    assert linux["intelRdt"]["enabled"] is False and linux["netDevices"]["enabled"] is False
    assert "tmpcopyup" in features["mountOptions"]


def test_prestart_and_create_runtime_hooks_get_state_created(make_bundle, styrolite, tmp_path):
    records = {phase: tmp_path / f"{phase}.json" for phase in ("prestart", "createRuntime")}

    def edit(c):
        c["hooks"] = {phase: [{"path": "/bin/sh", "args": ["sh", "-c", f"cat > {path}"]}]
                      for phase, path in records.items()}

    _, result = run(make_bundle, styrolite, ["true"], edit)
    assert result.returncode == 0, err(result)
    for path in records.values():
        state = json.loads(path.read_text())
        assert state["status"] == "created" and state["pid"] > 0


def test_hook_without_env_gets_the_runtimes_environment(make_bundle, styrolite, tmp_path):
    record = tmp_path / "env"

    def edit(c):
        c["hooks"] = {"poststop": [{"path": "/bin/sh", "args": ["sh", "-c", f"echo $HOOK_PROBE > {record}"]}]}

    bundle = make_bundle(["true"], edit=edit)
    result = styrolite("run", "-b", str(bundle), "c1", env={**os.environ, "HOOK_PROBE": "inherited"})
    assert result.returncode == 0, err(result)
    assert record.read_text() == "inherited\n"


def test_joined_mount_namespace_still_gets_the_rootfs(make_bundle, styrolite):
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "60"])
    try:
        deadline = time.time() + 5
        while os.readlink(f"/proc/{holder.pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
            assert time.time() < deadline
            time.sleep(0.01)

        def edit(c):
            for ns in c["linux"]["namespaces"]:
                if ns["type"] == "mount":
                    ns["path"] = f"/proc/{holder.pid}/ns/mnt"

        _, result = run(make_bundle, styrolite, ["sh", "-c", "cat /etc/hostname; readlink /proc/self/ns/mnt"], edit)
        assert result.returncode == 0, err(result)
        hostname, mnt = out(result).split()
        assert hostname == "zone"  # the busybox bundle's file: the process runs in the bundle's rootfs
        assert mnt == os.readlink(f"/proc/{holder.pid}/ns/mnt")
    finally:
        holder.kill()
        holder.wait()


def test_config_without_a_mount_namespace_runs_chrooted(make_bundle, styrolite):
    def edit(c):
        c["linux"]["namespaces"] = [ns for ns in c["linux"]["namespaces"] if ns["type"] != "mount"]
        c["mounts"] = [m for m in c["mounts"] if m["destination"] == "/proc"]
        c["linux"]["maskedPaths"] = c["linux"]["readonlyPaths"] = []

    bundle, result = run(make_bundle, styrolite, ["sh", "-c", "cat /etc/hostname; readlink /proc/self/ns/mnt"],
                         edit)
    assert result.returncode == 0, err(result)
    hostname, mnt = out(result).split()
    assert hostname == "zone" and mnt == os.readlink("/proc/self/ns/mnt")
    # the proc mount it made in the shared namespace is gone with the container
    with open("/proc/self/mountinfo") as f:
        assert str(bundle / "rootfs") not in f.read()


def test_readonly_root_without_a_mount_namespace_is_refused(make_bundle, styrolite, state_root):
    def edit(c):
        c["linux"]["namespaces"] = [ns for ns in c["linux"]["namespaces"] if ns["type"] != "mount"]
        c["root"]["readonly"] = True

    bundle = make_bundle(["true"], edit=edit)
    result = styrolite("create", "-b", str(bundle), "c1")
    assert result.returncode != 0 and "root.readonly" in err(result)


def test_block_io_weight_zero_means_unset(make_bundle, styrolite):
    def edit(c):
        c["linux"]["resources"]["blockIO"] = {"weight": 0}

    bundle = make_bundle(["sleep", "60"], edit=edit)
    styrolite("run", "-d", "-b", str(bundle), "c1", check=True)
    styrolite("update", "--blkio-weight", "0", "c1", check=True)
    styrolite("update", "--pids-limit", "0", "c1", check=True)
    styrolite("delete", "--force", "c1", check=True)


def test_pids_limit_zero_is_accepted(make_bundle, styrolite):
    _, result = run(make_bundle, styrolite, ["true"], lambda c: c["linux"]["resources"].update(pids={"limit": 0}))
    assert result.returncode == 0, err(result)


def test_tmpcopyup_copies_the_image_directory_into_the_tmpfs(make_bundle, styrolite):
    def edit(c):
        c["mounts"].append({"destination": "/etc", "type": "tmpfs", "source": "tmpfs",
                            "options": ["nosuid", "nodev", "tmpcopyup"]})

    script = "stat -f -c %T /etc; cat /etc/hostname; ls -l /etc/passwd | cut -c1-10; echo new > /etc/added"
    bundle, result = run(make_bundle, styrolite, ["sh", "-c", script], edit)
    assert result.returncode == 0, err(result)
    assert out(result).split() == ["tmpfs", "zone", "-rw-r--r--"]
    assert not (bundle / "rootfs" / "etc" / "added").exists()  # written to the tmpfs, not the image


def test_tmpcopyup_read_only(make_bundle, styrolite):
    def edit(c):
        c["mounts"].append({"destination": "/etc", "type": "tmpfs", "options": ["ro", "tmpcopyup"]})

    _, result = run(make_bundle, styrolite, ["sh", "-c", "cat /etc/hostname; touch /etc/x 2>&1 || echo refused"],
                    edit)
    assert result.returncode == 0, err(result)
    assert out(result).splitlines()[0] == "zone" and "refused" in out(result)


def test_device_file_mode_with_type_bits(make_bundle, styrolite):
    def edit(c):
        c["linux"]["devices"] = [{"type": "c", "path": "/dev/null2", "major": 1, "minor": 3, "fileMode": 0o20640}]

    _, result = run(make_bundle, styrolite, ["sh", "-c", "ls -l /dev/null2 | cut -c1-10"], edit)
    assert result.returncode == 0, err(result)
    assert out(result).strip() == "crw-r-----"


def test_device_path_outside_dev(make_bundle, styrolite):
    def edit(c):
        c["linux"]["devices"] = [{"type": "c", "path": "/opt/zero", "major": 1, "minor": 5, "fileMode": 0o666}]

    _, result = run(make_bundle, styrolite, ["sh", "-c", "head -c 3 /opt/zero | od -An -tx1"], edit)
    assert result.returncode == 0, err(result)
    assert out(result).split() == ["00", "00", "00"]


@pytest.mark.parametrize(("edit", "fragment"), [
    # the hard limit here is 20000 and root lacks CAP_SYS_RESOURCE: raising it cannot work
    (lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "soft": 1 << 30, "hard": 1 << 30}]),
     "RLIMIT_NOFILE"),
    (lambda c: c["process"].update(args=["/etc/passwd"]), "permission denied"),
    (lambda c: c["process"].update(args=["/bin/absent"]), "no such file or directory"),
    (lambda c: c["process"].update(args=["absent"]), "executable file not found in $PATH"),
])
def test_process_setup_failures_fail_create(make_bundle, styrolite, state_root, edit, fragment):
    """Everything that can fail is done before the container is `created`: create fails, as with runc."""
    bundle = make_bundle(["true"], edit=edit)
    result = styrolite("create", "-b", str(bundle), "c1")
    assert result.returncode != 0, err(result)
    assert fragment in err(result)
    assert not (state_root / "c1").exists()


def test_created_container_has_its_user_and_capabilities_already(make_bundle, styrolite):
    def edit(c):
        c["process"]["user"] = {"uid": 65534, "gid": 65534}

    bundle = make_bundle(["sleep", "60"], edit=edit)
    styrolite("create", "-b", str(bundle), "c1", check=True)
    pid = state_of(styrolite, "c1")["pid"]
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f)
    from styrolite.security import names_to_mask
    from styrolite.spec import DEFAULT_CAPABILITIES

    assert status["Uid"].split() == ["65534"] * 4 and status["Gid"].split() == ["65534"] * 4
    assert int(status["CapBnd"], 16) == names_to_mask(list(DEFAULT_CAPABILITIES))
    styrolite("delete", "c1", check=True)  # a created container can be deleted without --force


def test_exit_codes_for_commands_that_cannot_run(make_bundle, styrolite):
    """run: the shell's codes, 126 for found-but-not-executable, 127 for missing (runc's create errors
    carry the same words, which podman and docker turn into these codes)."""
    bundle = make_bundle(["/etc/passwd"])
    result = styrolite("run", "-b", str(bundle), "c1")
    assert result.returncode != 0 and "permission denied" in err(result)


def test_delete_force_of_a_missing_container_succeeds(styrolite):
    assert styrolite("delete", "--force", "never-created").returncode == 0
    missing = styrolite("delete", "never-created")
    assert missing.returncode != 0 and "does not exist" in err(missing)


def test_delete_of_a_created_container(make_bundle, styrolite, state_root):
    bundle = make_bundle(["sleep", "60"])
    styrolite("create", "-b", str(bundle), "c1", check=True)
    pid = state_of(styrolite, "c1")["pid"]
    styrolite("delete", "c1", check=True)
    assert not (state_root / "c1").exists()
    deadline = time.time() + 5
    while os.path.exists(f"/proc/{pid}") and "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]:
        assert time.time() < deadline
        time.sleep(0.02)


@pytest.mark.parametrize(("uid", "home"), [(0, "/root"), (65534, "/home"), (4242, "/")])
def test_home_from_the_containers_passwd(make_bundle, styrolite, uid, home):
    def edit(c):
        c["process"]["user"] = {"uid": uid, "gid": uid}
        c["process"]["env"] = [e for e in c["process"]["env"] if not e.startswith("HOME=")]

    _, result = run(make_bundle, styrolite, ["sh", "-c", "echo $HOME"], edit)
    assert result.returncode == 0, err(result)
    assert out(result).strip() == home


def test_home_from_the_config_wins(make_bundle, styrolite):
    _, result = run(make_bundle, styrolite, ["sh", "-c", "echo $HOME"],
                    lambda c: c["process"]["env"].append("HOME=/elsewhere"))
    assert out(result).strip() == "/elsewhere"


def test_bind_source_is_opened_before_the_user_namespace(make_bundle, styrolite, tmp_path):
    secret = tmp_path / "secret"  # only the host's root may search it
    (secret / "shared").mkdir(parents=True)
    (secret / "shared" / "note").write_text("reached\n")
    os.chmod(secret, 0o700)
    os.chmod(secret / "shared", 0o755)
    os.chmod(secret / "shared" / "note", 0o644)

    def edit(c):
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["mounts"] = [m for m in c["mounts"] if m["destination"] not in ("/sys", "/sys/fs/cgroup")]
        c["mounts"].append({"destination": "/home", "type": "bind", "source": str(secret / "shared"),
                            "options": ["rbind", "ro"]})

    bundle = make_bundle(["cat", "/home/note"], edit=edit)
    for parent in (bundle / "rootfs").parents:  # the mapped root must reach its rootfs, as with runc
        os.chmod(parent, os.stat(parent).st_mode | 0o011)
    os.chmod(secret, 0o700)
    result = styrolite("run", "-b", str(bundle), "c1")
    assert result.returncode == 0, err(result)
    assert out(result) == "reached\n"


def test_missing_cwd_is_created(make_bundle, styrolite):
    _, result = run(make_bundle, styrolite, ["sh", "-c", "pwd"], lambda c: c["process"].update(cwd="/work/deep/dir"))
    assert result.returncode == 0, err(result)
    assert out(result) == "/work/deep/dir\n"


def test_bind_onto_a_dangling_symlink_follows_it_inside_the_rootfs(make_bundle, styrolite, tmp_path):
    source = tmp_path / "resolv.conf"
    source.write_text("nameserver 192.0.2.1\n")

    def edit(c):
        c["mounts"].append({"destination": "/etc/resolv.conf", "type": "bind", "source": str(source),
                            "options": ["rbind", "ro"]})

    bundle = make_bundle(["cat", "/run/systemd/resolve/stub-resolv.conf"], edit=edit)
    link = bundle / "rootfs" / "etc" / "resolv.conf"
    link.symlink_to("/run/systemd/resolve/stub-resolv.conf")  # dangling in the image, as on many distros
    result = styrolite("run", "-b", str(bundle), "c1")
    assert result.returncode == 0, err(result)
    assert out(result) == "nameserver 192.0.2.1\n"
    assert (bundle / "rootfs" / "run" / "systemd" / "resolve" / "stub-resolv.conf").is_file()  # made in the root


def test_loopback_is_up_in_a_new_network_namespace(make_bundle, styrolite):
    script = "ip -o link show lo; nc -l -p 7777 -w 5 & sleep 0.2; echo hi | nc -w 2 127.0.0.1 7777 && echo tcp-ok"
    _, result = run(make_bundle, styrolite, ["sh", "-c", script])
    assert result.returncode == 0, err(result)
    assert ",UP" in out(result) and "tcp-ok" in out(result)


def test_unknown_capability_is_a_warning(make_bundle, styrolite):
    def edit(c):
        for name in ("bounding", "effective", "permitted"):
            c["process"]["capabilities"][name].append("CAP_FROM_THE_FUTURE")

    _, result = run(make_bundle, styrolite, ["sh", "-c", "grep CapEff /proc/self/status"], edit)
    assert result.returncode == 0, err(result)
    assert "unknown capability 'CAP_FROM_THE_FUTURE' ignored" in err(result)


def test_hostname_sysctl_is_refused_with_a_uts_namespace(make_bundle, styrolite):
    bundle = make_bundle(["true"], edit=lambda c: c["linux"].update(sysctl={"kernel.hostname": "x"}))
    result = styrolite("create", "-b", str(bundle), "c1")
    assert result.returncode != 0 and "kernel.hostname" in err(result) and "hostname" in err(result)


def test_features_into_a_closed_pipe_is_quiet():
    import sys

    result = subprocess.run(f"{sys.executable} -m styrolite.cli features | head -c 10 >/dev/null", shell=True,
                            capture_output=True, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0 and result.stderr == b""


@pytest.mark.skipif(not os.path.exists("/sys/fs/cgroup/cpu/cpu.rt_runtime_us"),
                    reason="needs cgroup v1 cpu with CONFIG_RT_GROUP_SCHED")
def test_v1_realtime_budget_reaches_the_container_through_its_parents(make_bundle, styrolite):
    def edit(c):
        c["linux"]["resources"]["cpu"] = {"realtimePeriod": 1000000, "realtimeRuntime": 5000}

    bundle = make_bundle(["sleep", "60"], edit=edit)
    styrolite("run", "-d", "-b", str(bundle), "c1", check=True)
    try:
        config = json.loads((bundle / "config.json").read_text())
        parts = config["linux"]["cgroupsPath"].strip("/").split("/")
        cpu = Path("/sys/fs/cgroup/cpu")
        assert (cpu / parts[0] / "cpu.rt_runtime_us").read_text().strip() != "0"
        assert (cpu / parts[0] / parts[1] / "cpu.rt_runtime_us").read_text().strip() == "5000"
    finally:
        styrolite("delete", "--force", "c1", check=True)
