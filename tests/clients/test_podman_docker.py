"""Real podman 4.3 and docker 20.10 with runc and with styrolite, side by side, operation by operation.

Each test is parametrized by client (podman: its own storage and config; docker: a dockerd started for the
module) and by runtime ("runc", the reference, and "styrolite"): both must give the same observable result.
"""

from __future__ import annotations

import json
import time

import pytest
from clientlab import output_of as text
from clientlab import unique_name as name

IMAGE = "busybox:latest"
pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]


@pytest.fixture(scope="module", params=["podman", "docker"])
def client(request):
    return request.getfixturevalue(request.param)




def inspect(client, runtime: str, container: str, field: str) -> str:
    result = client.run(runtime, "inspect", "--format", "{{json " + field + "}}", container, check=True)
    return json.loads(result.stdout)


def wait_status(client, runtime: str, container: str, wanted: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while inspect(client, runtime, container, ".State.Status") != wanted:
        assert time.monotonic() < deadline, f"{container} never became {wanted}"
        time.sleep(0.2)


def test_run_output_and_exit_code(client, runtime):
    result = client.run(runtime, "run", "--rm", "--network", "none", IMAGE, "sh", "-c",
                        "echo out; echo err >&2; exit 3")
    assert result.returncode == 3, text(result)
    assert result.stdout.decode() == "out\n" and "err" in result.stderr.decode()


@pytest.mark.parametrize(("argv", "code", "words"), [
    (["/etc/passwd"], 126, "permission denied"),
    (["/bin/absent"], 127, "no such file or directory"),
])
def test_command_that_cannot_run(client, runtime, argv, code, words):
    result = client.run(runtime, "run", "--rm", "--network", "none", IMAGE, *argv)
    assert result.returncode == code, text(result)
    assert words in text(result).lower()


def test_interactive_tty(client, runtime):
    code, screen = client.pty(runtime, "run", "--rm", "-it", "--network", "none", IMAGE, "sh",
                              keys=b"tty; echo in-$((6*7)); exit 5\r")
    assert code == 5, screen
    assert "in-42" in screen and "/dev/pts/" in screen


def test_detach_exec_stop(client, runtime):
    container = name()
    client.run(runtime, "run", "-d", "--name", container, "--network", "none", IMAGE, "sleep", "300", check=True)
    try:
        result = client.run(runtime, "exec", container, "sh", "-c", "echo from-exec; exit 4")
        assert result.returncode == 4 and result.stdout.decode() == "from-exec\n", text(result)
        piped = client.run(runtime, "exec", "-i", container, "cat", input=b"through stdin\n")
        assert piped.stdout.decode() == "through stdin\n", text(piped)
        client.run(runtime, "stop", "-t", "1", container, check=True)  # pid 1 ignores SIGTERM: SIGKILL after 1 s
        assert inspect(client, runtime, container, ".State.ExitCode") == 137
    finally:
        client.run(runtime, "rm", "-f", container)


def test_stop_with_a_term_handler(client, runtime):
    container = name()
    client.run(runtime, "run", "-d", "--name", container, "--network", "none", IMAGE, "sh", "-c",
               "trap 'exit 7' TERM; while true; do sleep 0.1; done", check=True)
    try:
        client.run(runtime, "stop", "-t", "20", container, check=True)
        assert inspect(client, runtime, container, ".State.ExitCode") == 7
    finally:
        client.run(runtime, "rm", "-f", container)


def test_kill(client, runtime):
    container = name()
    client.run(runtime, "run", "-d", "--name", container, "--network", "none", IMAGE, "sleep", "300", check=True)
    try:
        client.run(runtime, "kill", "-s", "KILL", container, check=True)
        assert client.run(runtime, "wait", container).stdout.decode().split()[-1] == "137"
    finally:
        client.run(runtime, "rm", "-f", container)


def test_pause_and_unpause(client, runtime):
    container = name()
    client.run(runtime, "run", "-d", "--name", container, "--network", "none", IMAGE, "sleep", "300", check=True)
    try:
        client.run(runtime, "pause", container, check=True)
        wait_status(client, runtime, container, "paused")
        client.run(runtime, "unpause", container, check=True)
        wait_status(client, runtime, container, "running")
        result = client.run(runtime, "exec", container, "echo", "awake")
        assert result.stdout.decode() == "awake\n", text(result)
    finally:
        client.run(runtime, "rm", "-f", container)


def test_update(client, runtime):
    container = name()
    client.run(runtime, "run", "-d", "--name", container, "--network", "none", "--memory", "64m",
               "--memory-swap", "64m", "--pids-limit", "100", IMAGE, "sleep", "300", check=True)
    try:
        extra = ["--pids-limit", "50"] if client.name == "docker" else []  # podman 4.3 update has no pids flag
        result = client.run(runtime, "update", "--memory", "96m", "--memory-swap", "96m", "--cpu-shares", "512",
                            *extra, container)
        assert result.returncode == 0, text(result)
        files = ["/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/cpu/cpu.shares",
                 "/sys/fs/cgroup/pids/pids.max"]
        limits = client.run(runtime, "exec", container, "cat", *files, check=True).stdout.decode().split()
        assert limits == [str(96 << 20), "512", "50" if extra else "100"]
    finally:
        client.run(runtime, "rm", "-f", container)


def test_read_only(client, runtime):
    result = client.run(runtime, "run", "--rm", "--network", "none", "--read-only", IMAGE, "sh", "-c",
                        "touch /x 2>/dev/null || echo root-read-only; grep -c ' / ' /proc/mounts")
    assert result.returncode == 0, text(result)
    assert "root-read-only" in result.stdout.decode()


def test_read_only_keeps_writable_tmp_on_podman(client, runtime):
    if client.name != "podman":
        pytest.skip("podman's --read-only-tmpfs (tmpfs with tmpcopyup on /tmp, /var/tmp, /run)")
    result = client.run(runtime, "run", "--rm", "--network", "none", "--read-only", IMAGE, "sh", "-c",
                        "touch /tmp/ok && stat -f -c %T /tmp")
    assert result.returncode == 0 and result.stdout.decode() == "tmpfs\n", text(result)


def test_tmpfs(client, runtime):
    result = client.run(runtime, "run", "--rm", "--network", "none", "--tmpfs", "/data:size=8m", IMAGE, "sh", "-c",
                        "stat -f -c %T /data; touch /data/f && echo writable")
    assert result.returncode == 0, text(result)
    assert result.stdout.decode().split() == ["tmpfs", "writable"]


def test_tmpfs_over_an_image_directory(client, runtime):
    """podman adds tmpcopyup to every --tmpfs: the image's files are copied into the new tmpfs."""
    result = client.run(runtime, "run", "--rm", "--network", "none", "--tmpfs", "/etc", IMAGE, "sh", "-c",
                        "stat -f -c %T /etc; cat /etc/group | head -1")
    assert result.returncode == 0, text(result)
    lines = result.stdout.decode().split()
    assert lines[0] == "tmpfs"
    if client.name == "podman":
        assert lines[1] == "root:x:0:"


def test_device(client, runtime):
    result = client.run(runtime, "run", "--rm", "--network", "none", "--device", "/dev/zero:/dev/zz", IMAGE, "sh",
                        "-c", "head -c 4 /dev/zz | od -An -tx1; ls -l /dev/zz | cut -c1-10")
    assert result.returncode == 0, text(result)
    assert result.stdout.decode().split() == ["00", "00", "00", "00", "crw-rw-rw-"]


def test_privileged(client, runtime):
    result = client.run(runtime, "run", "--rm", "--network", "none", "--privileged", IMAGE, "sh", "-c",
                        "mount -t tmpfs scratch /tmp && echo mounted; ls /dev | grep -c .")
    if runtime == "runc" and "unable to apply caps" in text(result):
        # docker asks for every capability, CAP_SYS_RESOURCE too, which root lacks on this host
        pytest.skip(f"runc cannot run it on this host: {text(result).strip()}")
    assert result.returncode == 0, text(result)
    lines = result.stdout.decode().split()
    assert lines[0] == "mounted" and int(lines[1]) > 20  # the host's devices


@pytest.mark.parametrize("userns", [False, True], ids=["own-ids", "uidmap"])
def test_privileged_ptmx_is_the_containers_devpts(client, runtime, userns):
    """--privileged lists the host's /dev/ptmx among the devices: it stays the link to the container's own
    devpts (opening it makes pty 0 there) -- in a user namespace too, where the other devices are bind-mounted."""
    if userns and client.name != "podman":
        pytest.skip("docker maps users only daemon-wide (userns-remap)")
    ids = ["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"] if userns else []
    result = client.run(runtime, "run", "--rm", "--network", "none", "--privileged", *ids, IMAGE, "sh", "-c",
                        "readlink /dev/ptmx; ls /dev/kmsg; exec 3<>/dev/ptmx; ls /dev/pts")
    if runtime == "runc" and "unable to apply caps" in text(result):
        pytest.skip(f"runc cannot run it on this host: {text(result).strip()}")
    assert result.returncode == 0, text(result)
    lines = result.stdout.decode().split()
    assert lines == ["pts/ptmx", "/dev/kmsg", "0", "ptmx"], text(result)   # pty 0 of its own devpts instance


def test_memory_limit_oom_is_137(client, runtime):
    result = client.run(runtime, "run", "--rm", "--network", "none", "--memory", "32m", "--memory-swap", "32m",
                        IMAGE, "sh", "-c", "tail /dev/zero")
    assert result.returncode == 137, text(result)


def test_pids_limit(client, runtime):
    script = "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 5 & done; echo started"
    result = client.run(runtime, "run", "--rm", "--network", "none", "--pids-limit", "6", IMAGE, "sh", "-c", script)
    assert "can't fork" in text(result) or "Resource temporarily unavailable" in text(result), text(result)


def test_user(client, runtime):
    result = client.run(runtime, "run", "--rm", "--network", "none", "--user", "1234:5678", IMAGE, "sh", "-c",
                        "id -u; id -g; grep CapEff /proc/self/status")
    assert result.returncode == 0, text(result)
    uid, gid, _, cap_eff = result.stdout.decode().split()
    assert (uid, gid, cap_eff) == ("1234", "5678", "0000000000000000")


def test_user_namespace(client, runtime):
    if client.name != "podman":
        pytest.skip("docker maps users only daemon-wide (userns-remap)")
    result = client.run(runtime, "run", "--rm", "--network", "none", "--uidmap", "0:100000:65536",
                        "--gidmap", "0:100000:65536", IMAGE, "sh", "-c",
                        "cat /proc/self/uid_map; id -u; touch /tmp/x && echo writable")
    assert result.returncode == 0, text(result)
    assert result.stdout.decode().split() == ["0", "100000", "65536", "0", "writable"]


def test_process_setup_failure_fails_the_run_like_runc(client):
    """A limit this host cannot grant (hard open files above 20000, no CAP_SYS_RESOURCE) fails `create`, so
    the client reports the runtime's error with the same exit code (podman 126) instead of a container that
    starts and dies."""
    codes = {}
    for runtime in ("runc", "styrolite"):
        result = client.run(runtime, "run", "--rm", "--network", "none", "--ulimit", "nofile=40000:40000", IMAGE,
                            "true")
        codes[runtime] = result.returncode
        assert result.returncode != 0, text(result)
        assert "nofile" in text(result).lower() or "rlimit" in text(result).lower(), text(result)
    assert codes["styrolite"] == codes["runc"]
    if client.name == "podman":
        assert codes["styrolite"] == 126
