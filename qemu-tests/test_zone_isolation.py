"""Isolation of a zone's containers, checked from inside a container of one real zone (QEMU TCG).

Every check runs as an exec in the zone's main container (which gets the container's own process settings:
capabilities, seccomp, namespaces) and, where it matters, also looks at the container's init (its PID 1).
Syscall denials are probed with a tiny static C program (built here with gcc, sent over the exec's stdin)
whose arguments are chosen so that, without the seccomp filter, most calls would fail with EFAULT/EINVAL/EBADF
rather than EPERM: an EPERM answer is the filter speaking.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

LONG_RUNNING = ["sh", "-c", "trap 'exit 0' TERM; echo started; while true; do sleep 1; done"]
NAME = "isolation"

# CAP_* numbers (linux/capability.h) that the default set must not contain
FORBIDDEN_CAPS = {"DAC_READ_SEARCH": 2, "NET_ADMIN": 12, "NET_RAW": 13, "SYS_MODULE": 16, "SYS_RAWIO": 17,
                  "SYS_PTRACE": 19, "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYSLOG": 34}

DENIED_SYSCALLS = ("kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
                   "open_by_handle_at", "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "mount",
                   "umount2", "pivot_root", "unshare", "setns", "ptrace", "reboot", "syslog", "userfaultfd",
                   "io_uring_setup", "socket_vsock", "clone_newuser")
ALLOWED_SYSCALLS = ("personality_query", "getpid", "fork")

PROBE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, long rc) { printf("%s %ld %d\n", name, rc, rc < 0 ? errno : 0); }
static int child(void *arg) { (void)arg; return 0; }
static char stack[65536];

int main(void) {
    report("kexec_load", syscall(SYS_kexec_load, 0, 0, 0, 0));
    report("kexec_file_load", syscall(SYS_kexec_file_load, -1, -1, 0, "", 0));
    report("init_module", syscall(SYS_init_module, 0, 0, ""));
    report("finit_module", syscall(SYS_finit_module, -1, "", 0));
    report("delete_module", syscall(SYS_delete_module, "zz_none", 0));
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, -1, 0, 0));
    report("bpf", syscall(SYS_bpf, -1, 0, 0));
    report("perf_event_open", syscall(SYS_perf_event_open, 0, 0, -1, -1, 0));
    report("keyctl", syscall(SYS_keyctl, -1, 0, 0, 0, 0));
    report("add_key", syscall(SYS_add_key, 0, 0, 0, 0, 0));
    report("request_key", syscall(SYS_request_key, 0, 0, 0, 0));
    report("mount", syscall(SYS_mount, 0, 0, 0, 0, 0));
    report("umount2", syscall(SYS_umount2, 0, 0));
    report("pivot_root", syscall(SYS_pivot_root, 0, 0));
    report("unshare", syscall(SYS_unshare, CLONE_NEWUSER));
    report("setns", syscall(SYS_setns, -1, 0));
    report("ptrace", syscall(SYS_ptrace, 0x4206, 1, 0, 0));
    report("reboot", syscall(SYS_reboot, 0, 0, 0, 0));
    report("syslog", syscall(SYS_syslog, 3, 0, 0));
    report("userfaultfd", syscall(SYS_userfaultfd, 0));
    report("io_uring_setup", syscall(SYS_io_uring_setup, 1, 0));
    report("socket_vsock", syscall(SYS_socket, 40, SOCK_STREAM, 0));
    long pid = clone(child, stack + sizeof stack, CLONE_NEWUSER | SIGCHLD, 0);
    report("clone_newuser", pid);
    if (pid > 0) waitpid(pid, 0, 0);
    report("personality_query", syscall(SYS_personality, 0xffffffff));
    report("getpid", syscall(SYS_getpid));
    pid = fork();
    if (pid == 0) _exit(0);
    report("fork", pid);
    if (pid > 0) waitpid(pid, 0, 0);
    return 0;
}
"""


class Zone:
    def __init__(self, zonehost: Any, name: str) -> None:
        from host.state import ZoneDir

        self.dir = ZoneDir(zonehost.state, name)
        self.zonehost = zonehost
        self.name = name

    def sh(self, script: str, stdin: bytes = b"") -> tuple[str, str, int]:
        from idm.client import IdmClient

        with IdmClient.connect_unix(str(self.dir.idm_socket), events=False, name="isolation-test", timeout=60) as c:
            out, err, code = c.exec(["sh", "-c", script]).communicate(stdin, timeout=180)
        return out.decode(errors="replace"), err.decode(errors="replace"), code

    def call(self, type_: str, payload: Any = None) -> Any:
        from idm.client import IdmClient

        with IdmClient.connect_unix(str(self.dir.idm_socket), events=False, name="isolation-test", timeout=60) as c:
            return c.call(type_, payload)


@pytest.fixture(scope="module")
def zone(zonehost: Any) -> Iterator[Zone]:
    result = zonehost.run("--json", "-d", "--name", NAME, "busybox", "--", *LONG_RUNNING)
    assert result.returncode == 0, f"{result}\n{zonehost.console(NAME)[-3000:]}"
    yield Zone(zonehost, NAME)
    zonehost("rm", "-f", NAME, timeout=120)


def _status(text: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


@pytest.mark.parametrize("who", ["self", "1"])   # the exec'd process and the container's init
def test_capabilities_exclude_the_dangerous_ones(zone: Zone, who: str) -> None:
    out, err, code = zone.sh(f"cat /proc/{who}/status")
    assert code == 0, err
    status = _status(out)
    for field in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        mask = int(status[field], 16)
        present = [name for name, bit in FORBIDDEN_CAPS.items() if mask & (1 << bit)]
        assert not present, f"{field} of /proc/{who} holds {present} ({status[field]})"


@pytest.mark.parametrize("who", ["self", "1"])
def test_seccomp_filter_is_on(zone: Zone, who: str) -> None:
    out, _err, _code = zone.sh(f"cat /proc/{who}/status")
    status = _status(out)
    assert status["Seccomp"] == "2", status
    assert status.get("NoNewPrivs") == "1", status


def test_masked_and_readonly_proc_paths_are_not_writable(zone: Zone) -> None:
    script = r"""
for f in /proc/sysrq-trigger /proc/sys/kernel/panic /proc/sys/vm/drop_caches /proc/irq/default_smp_affinity \
         /proc/bus/pci/devices /sys/kernel/mm/transparent_hugepage/enabled; do
    if [ -e "$f" ] && (echo 1 > "$f") 2>/dev/null; then echo "WRITABLE $f"; else echo "denied $f"; fi
done
for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /sys/firmware; do
    if [ -d "$f" ]; then n=$(ls -A "$f" 2>/dev/null | wc -l); [ "$n" = 0 ] && echo "masked $f" || echo "VISIBLE $f"
    elif [ -e "$f" ]; then n=$(head -c 16 "$f" 2>/dev/null | wc -c)
        [ "$n" = 0 ] && echo "masked $f" || echo "VISIBLE $f"
    else echo "absent $f"; fi
done
"""
    out, err, code = zone.sh(script)
    assert code == 0, err
    assert "WRITABLE" not in out and "VISIBLE" not in out, out
    assert "denied /proc/sysrq-trigger" in out, out


def test_busybox_privileged_applets_fail(zone: Zone) -> None:
    script = """
mkdir -p /tmp/m
mount -t tmpfs none /tmp/m 2>/dev/null && echo "ALLOWED mount" || echo "denied mount"
unshare -U true 2>/dev/null && echo "ALLOWED unshare-user" || echo "denied unshare-user"
unshare -m true 2>/dev/null && echo "ALLOWED unshare-mount" || echo "denied unshare-mount"
unshare -n true 2>/dev/null && echo "ALLOWED unshare-net" || echo "denied unshare-net"
umount /proc 2>/dev/null && echo "ALLOWED umount" || echo "denied umount"
insmod /nonexistent.ko 2>/dev/null && echo "ALLOWED insmod" || echo "denied insmod"
hostname evil 2>/dev/null && echo "ALLOWED hostname" || echo "denied hostname"
"""
    out, err, code = zone.sh(script)
    assert code == 0, err
    assert "ALLOWED" not in out, out
    assert out.count("denied") == 7, out


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: cannot build the syscall probe")
    work = tmp_path_factory.mktemp("probe")
    (work / "probe.c").write_text(PROBE_C)
    result = subprocess.run(["gcc", "-static", "-Os", "-o", str(work / "probe"), str(work / "probe.c")],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot build a static probe (libc6-dev?): {result.stderr[-500:]}")
    return Path(work / "probe").read_bytes()


def test_dangerous_syscalls_are_denied_by_seccomp(zone: Zone, probe: bytes) -> None:
    out, err, code = zone.sh("cat > /tmp/probe && chmod +x /tmp/probe && /tmp/probe", stdin=probe)
    assert code == 0, err
    results = {name: (int(rc), int(err_no)) for name, rc, err_no in (line.split() for line in out.splitlines())}
    for name in DENIED_SYSCALLS:
        rc, err_no = results[name]
        assert rc == -1 and err_no == errno.EPERM, f"{name}: rc={rc} errno={errno.errorcode.get(err_no, err_no)}"
    for name in ALLOWED_SYSCALLS:
        rc, err_no = results[name]
        assert rc >= 0, f"{name} should work: errno={errno.errorcode.get(err_no, err_no)}"


def _namespaces(zone: Zone, who: str) -> dict[str, str]:
    out, _err, _code = zone.sh(f"for n in pid ipc net uts mnt user cgroup; do echo $n $(readlink /proc/{who}/ns/$n); "
                               "done")
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


@pytest.mark.parametrize("ns", ["pid", "ipc", "mnt", "uts", "net", "user", "cgroup"])
def test_namespaces_differ_from_pid1s(zone: Zone, ns: str) -> None:
    """net: the zone's containers share a workload namespace holding the NIC; PID 1's own has no interface."""
    zone_ns = zone.call("zone.info")["init_namespaces"]
    container = _namespaces(zone, "self")
    assert container[ns].startswith(f"{ns}:["), container
    assert container[ns] != zone_ns[ns], (container, zone_ns)


def test_container_pid_namespace_hides_the_zone(zone: Zone) -> None:
    out, _err, code = zone.sh("ls -d /proc/[0-9]* | wc -l; cat /proc/1/cmdline | tr '\\0' ' '")
    assert code == 0
    count, cmdline = out.splitlines()[:2]
    assert int(count) < 10, out                # only the container's own processes
    assert cmdline.split()[:2] == ["sh", "-c"], cmdline   # PID 1 here is the container's init, not the zone's


def test_zone_devices_are_absent_and_unreachable(zone: Zone) -> None:
    script = r"""
for d in /dev/vport* /dev/hvc* /dev/vd* /dev/xvd* /dev/sd* /dev/mem /dev/kmem /dev/port /dev/kmsg; do
    [ -e "$d" ] && echo "PRESENT $d"
done
# even knowing the numbers, a node made by hand must not open (device cgroup)
for dev in /sys/class/virtio-ports/*/dev /sys/block/*/dev; do
    [ -r "$dev" ] || continue
    mm=$(cat "$dev"); maj=${mm%:*}; min=${mm#*:}
    case "$dev" in */virtio-ports/*) t=c ;; *) t=b ;; esac
    node=/tmp/node-$maj-$min; rm -f "$node"
    if mknod "$node" $t "$maj" "$min" 2>/dev/null; then
        if head -c 1 "$node" >/dev/null 2>&1; then echo "OPENED $dev"; else echo "denied-open $dev"; fi
    else echo "denied-mknod $dev"; fi
done
echo done
"""
    out, err, code = zone.sh(script)
    assert code == 0, err
    assert "PRESENT" not in out and "OPENED" not in out, out
    assert out.rstrip().endswith("done"), out


def test_container_root_is_not_zone_root(zone: Zone) -> None:
    """The zone's containers run in a user namespace: uid 0 inside is zone uid 65536 (the root image was
    ownership-shifted to match), and the zone's own root-owned files are nobody's inside."""
    out, err, code = zone.sh("cat /proc/self/uid_map /proc/self/gid_map; id -u; stat -c %u:%g /; "
                             "stat -c %u /proc/1/root 2>&1; echo x > /probe && echo wrote-own-root")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["0", "65536", "65536"] and lines[1].split() == ["0", "65536", "65536"], out
    assert lines[2] == "0" and lines[3] == "0:0", out  # root inside, owning its own image
    assert "wrote-own-root" in out



def test_container_root_cannot_reconfigure_the_shared_network(zone: Zone) -> None:
    """The workload namespace belongs to the zone's user namespace: container root (no CAP_NET_ADMIN there,
    and none in its bounding set) can neither take lo down nor add an address, yet binds a low port."""
    out, err, code = zone.sh("ip link set lo down 2>&1; echo rc=$?; ip addr add 10.99.0.1/24 dev lo 2>&1; "
                             "echo rc=$?; (nc -l -p 80 & p=$!; sleep 1; kill $p) 2>&1; echo bound-80")
    assert code == 0, err
    codes = [line for line in out.splitlines() if line.startswith("rc=")]
    assert len(codes) == 2 and "rc=0" not in codes, out
    assert "not permitted" in out, out
    assert "bound-80" in out and "bind" not in out.lower(), out  # nc would print "nc: bind: ..." if refused
