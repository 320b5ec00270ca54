"""Kubernetes pods in real zones: containerd 1.6's CRI plugin runs them through containerd-shim-zone-v2 on
runtime handler ``edera``, driven by crictl (cri-tools v1.26.1). Everything is real: QEMU (TCG here), the
zone kernel and our initrd, containerd with its own root/state/sockets, CNI (bridge + host-local +
loopback), a local docker-registry filled by skopeo with busybox-based images, all in a network namespace
of the test's own (qemu-tests/cri_lab.py).

A zone boot costs 10-40 s under TCG, so each pod serves several checks:

* one pod, one container at a time: runp, create, start, logs, exec (-s, -i, -it through a pty), stats,
  ``uname -r`` (the zone kernel's, not the host's), stop, rm; a malformed ttrpc request to its shim; then
  its QEMU is killed: containerd sees the container's exit and the pod stop, and ``rmp`` cleans up;
* a two-container pod: localhost between them, the pod IP answering from the host side of the CNI bridge;
  then its shim is killed and ``crictl rmp -f`` still cleans up;
* a zone that cannot boot fails RunPodSandbox with the reason from its console.

After every test: no QEMU, shim, mount, pod netns (its tap), loop device or zone state is left.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cri_lab import BUSYBOX_IMAGE, PID_POD, Lab, ShimOptions, missing_tools

MISSING = missing_tools()
pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.skipif(bool(MISSING), reason=f"missing: {', '.join(MISSING)} (run .ci/setup)")]

SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; echo hello-from-the-zone; while true; do sleep 1; done"]


@pytest.fixture(scope="module")
def lab(zone_inputs: Any) -> Iterator[Lab]:
    root = Path(tempfile.mkdtemp(prefix="zl", dir="/tmp"))   # short: unix socket paths live under it
    options = ShimOptions(kernel=str(zone_inputs.kernel_image), initrd=str(zone_inputs.initrd))
    broken = ShimOptions(kernel=str(zone_inputs.kernel_image), initrd=str(zone_inputs.initrd),
                         boot_timeout=120.0, extra={"kernel_args": ["rdinit=/no-such-init"]})
    node = Lab(root, options, handlers={"edera-broken": broken})
    try:
        node.pull(BUSYBOX_IMAGE)
        yield node
    finally:
        node.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def node(lab: Lab) -> Iterator[Lab]:
    """The lab; after the test, every pod is gone and nothing of them is left on the machine."""
    yield lab
    lab.remove_all_pods()
    left = lab.wait_no_leftovers(60)
    assert left == [], f"left behind: {left}"


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s")
        time.sleep(0.5)


def run_pod(lab: Lab, name: str, handler: str = "edera") -> str:
    return lab.crictl("runp", "--runtime", handler, lab.pod_config(name)).strip()


def start_container(lab: Lab, pod: str, pod_name: str, name: str, command: list[str], **extra: Any) -> str:
    container = lab.crictl("create", pod, lab.container_config(name, command, **extra),
                           str(lab.root / "pods" / f"{pod_name}.pod.json")).strip()
    lab.crictl("start", container)
    return container


def inspect(lab: Lab, container: str) -> dict[str, Any]:
    return json.loads(lab.crictl("inspect", container))


def logs(lab: Lab, container: str) -> str:
    return lab.crictl("logs", container)


def on_a_pty(lab: Lab, args: list[str], keys: bytes, expect: bytes, timeout: float = 120,
             size: tuple[int, int] = (31, 97), end: bytes = b"exit\r") -> bytes:
    """crictl on a pseudo-terminal of ``size`` (rows, cols): type ``keys``, read until ``expect`` shows, then
    ``end``."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    process = subprocess.Popen(lab.crictl_argv(*args), stdin=slave, stdout=slave, stderr=slave,
                               start_new_session=True)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + timeout
        os.write(master, keys)
        while expect not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
        os.write(master, end)
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return seen


def shim_address(lab: Lab, task: str) -> str:
    state = lab.root / "containerd" / "state" / "io.containerd.runtime.v2.task" / "k8s.io" / task
    return (state / "address").read_text().strip()


def test_a_pod_in_a_zone(node: Lab, zone_inputs: Any) -> None:
    lab = node
    pod = run_pod(lab, "solo")
    status = json.loads(lab.crictl("inspectp", pod))
    assert status["status"]["state"] == "SANDBOX_READY"
    assert status["info"]["runtimeType"] == "io.containerd.zone.v2"
    vmm = status["info"]["pid"]
    assert "qemu" in Path(f"/proc/{vmm}/cmdline").read_bytes().decode(errors="replace")

    c1 = start_container(lab, pod, "solo", "c1", SLEEPER)
    wait_for(lambda: "hello-from-the-zone" in logs(lab, c1), 60, "the container's first output in its log")
    assert inspect(lab, c1)["status"]["state"] == "CONTAINER_RUNNING"

    # the container runs on the zone's kernel, not on the host's
    release = lab.crictl("exec", "-s", c1, "uname", "-r").strip()
    assert release != os.uname().release and release.endswith("cloud-amd64"), release
    assert lab.crictl("exec", "-s", c1, "sh", "-c", "echo out; echo err >&2").split() == ["out", "err"]
    failed = lab.crictl_result("exec", "-s", c1, "sh", "-c", "exit 3")
    assert failed.returncode != 0 and b"exited with 3" in failed.stderr
    assert lab.crictl("exec", "-i", c1, "cat", input=b"through stdin\n") == "through stdin\n"
    # exec -it: the terminal's size reaches the process (ResizePty), what is typed reaches the shell
    seen = on_a_pty(lab, ["exec", "-it", c1, "sh"], b"stty size; echo $((6*7))-answer\r", b"42-answer")
    assert b"42-answer" in seen and b"31 97" in seen, seen

    stats = json.loads(lab.crictl("stats", "-o", "json", "--id", c1))["stats"][0]
    assert int(stats["memory"]["workingSetBytes"]["value"]) > 0 and "cpu" in stats

    # new resources for the running container (UpdateContainerResources), seen from inside it
    lab.crictl("update", "--memory", str(96 << 20), c1)
    assert lab.crictl("exec", "-s", c1, "cat", "/sys/fs/cgroup/memory.max").strip() == str(96 << 20)
    # pause and resume (containerd's task API; CRI has no verb for it): the zone's cgroup freezer
    lab.ctr("task", "pause", c1)
    assert "PAUSED" in lab.ctr("task", "ls")
    lab.ctr("task", "resume", c1)
    assert lab.crictl("exec", "-s", c1, "echo", "resumed").strip() == "resumed"

    # a malformed or hostile ttrpc request to the pod's shim: a clear error, and the shim goes on
    check_hostile_ttrpc(shim_address(lab, pod))
    assert lab.crictl("exec", "-s", c1, "echo", "still-answering").strip() == "still-answering"

    lab.crictl("stop", "-t", "10", c1)
    exited = inspect(lab, c1)["status"]
    assert exited["state"] == "CONTAINER_EXITED" and exited["exitCode"] == 0   # it trapped SIGTERM
    lab.crictl("rm", c1)

    # attach: a container with a terminal and stdin, its own process's stdio through the zone
    tty = start_container(lab, pod, "solo", "tty", ["sh"], stdin=True, tty=True)
    seen = on_a_pty(lab, ["attach", "-i", "-t", tty], b"\recho $((7*6))-attached\r", b"42-attached",
                    end=b"exit\r")
    assert b"42-attached" in seen, seen
    wait_for(lambda: inspect(lab, tty)["status"]["state"] == "CONTAINER_EXITED", 60, "the attached shell's exit")
    lab.crictl("rm", tty)

    # an OOM kill in the zone reaches containerd as TaskOOM: CRI reports the container OOMKilled
    hog = start_container(lab, pod, "solo", "hog", ["sh", "-c", "x=a; while true; do x=$x$x; done"],
                          linux={"resources": {"memory_limit_in_bytes": 32 << 20},
                                 "security_context": {"namespace_options": {"pid": 1}}})
    wait_for(lambda: inspect(lab, hog)["status"]["state"] == "CONTAINER_EXITED", 120, "the hog's OOM kill")
    assert inspect(lab, hog)["status"]["reason"] == "OOMKilled", inspect(lab, hog)["status"]
    lab.crictl("rm", hog)

    # the zone dies under a running container: containerd sees the exit, and the pod stops
    c2 = start_container(lab, pod, "solo", "c2", SLEEPER)
    wait_for(lambda: "hello-from-the-zone" in logs(lab, c2), 60, "c2's output")
    os.kill(vmm, signal.SIGKILL)
    wait_for(lambda: inspect(lab, c2)["status"]["state"] == "CONTAINER_EXITED", 60, "c2 seen as exited")
    assert inspect(lab, c2)["status"]["exitCode"] == 137
    wait_for(lambda: json.loads(lab.crictl("inspectp", pod))["status"]["state"] == "SANDBOX_NOTREADY", 60,
             "the sandbox seen as not ready")
    lab.crictl("rmp", "-f", pod)


def check_hostile_ttrpc(address: str) -> None:
    """Raw bytes to the shim's socket: each kind of bad input gets its ttrpc error on its own stream."""
    from shim.protos import shim_pb2, ttrpc_pb2
    from shim.ttrpc.client import Client
    from shim.ttrpc.framing import HEADER

    path = address.removeprefix("unix://")

    def exchange(frames: bytes, expect: int) -> list[tuple[int, ttrpc_pb2.Response]]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(path)
            sock.sendall(frames)
            answers = []
            buffer = b""
            while len(answers) < expect:
                chunk = sock.recv(65536)
                assert chunk, "the shim closed the connection instead of answering"
                buffer += chunk
                while len(buffer) >= 10:
                    length, stream, _kind, _flags = HEADER.unpack(buffer[:10])
                    if len(buffer) < 10 + length:
                        break
                    response = ttrpc_pb2.Response()
                    response.ParseFromString(buffer[10:10 + length])
                    answers.append((stream, response))
                    buffer = buffer[10 + length:]
            return answers

    def frame(stream: int, data: bytes, kind: int = 1) -> bytes:
        return HEADER.pack(len(data), stream, kind, 0) + data

    bad_payload = ttrpc_pb2.Request(service="containerd.task.v2.Task", method="State", payload=b"\xff\xff\xff")
    unknown = ttrpc_pb2.Request(service="containerd.task.v2.Task", method="Explode", payload=b"")
    answers = dict(exchange(frame(1, b"\x0a\xff\xff\xff not protobuf") + frame(3, bad_payload.SerializeToString())
                            + frame(5, unknown.SerializeToString()) + frame(2, b"even stream"), 4))
    assert answers[1].status.code == 3 and answers[3].status.code == 3       # InvalidArgument
    assert answers[5].status.code == 12 and "Explode" in answers[5].status.message   # Unimplemented
    assert answers[2].status.code == 3
    oversized = exchange(HEADER.pack(5 << 20, 7, 1, 0) + b"\0" * (5 << 20), 1)
    assert oversized[0][1].status.code == 8   # ResourceExhausted, the connection kept
    with Client.connect(address) as client:
        connected = client.call("containerd.task.v2.Task", "Connect", shim_pb2.ConnectRequest(id="x"),
                                shim_pb2.ConnectResponse, timeout=30)
    assert connected.shim_pid > 0


def test_two_containers_in_one_zone(node: Lab) -> None:
    lab = node
    pod = lab.crictl("runp", "--runtime", "edera", lab.pod_config("duo", dns_config={
        "servers": ["10.77.0.53"], "searches": ["zlab.svc.cluster.local"], "options": ["ndots:5"]})).strip()
    ip = json.loads(lab.crictl("inspectp", pod))["status"]["network"]["ip"]
    # volumes as kubelet lays them out: an emptyDir both containers mount, a read-only host file
    shared = lab.root / "kubelet" / "pods" / "duo-uid" / "volumes" / "kubernetes.io~empty-dir" / "shared"
    shared.mkdir(parents=True)
    note = lab.root / "note.txt"
    note.write_text("a read-only host file, copied in\n")
    mounts = [{"container_path": "/shared", "host_path": str(shared)},
              {"container_path": "/etc/note.txt", "host_path": str(note), "readonly": True}]
    server = start_container(lab, pod, "duo", "server", [
        "sh", "-c", "mkdir -p /www && echo served-by-the-zone > /www/index.html && echo hi > /shared/from-server "
                    "&& echo serving && exec httpd -f -p 8080 -h /www"], mounts=mounts)
    client = start_container(lab, pod, "duo", "client", [
        "sh", "-c", "until wget -q -O - http://localhost:8080/index.html; do sleep 1; done; "
                    "while true; do sleep 1; done"], mounts=mounts[:1])
    wait_for(lambda: "served-by-the-zone" in logs(lab, client), 120, "the client's fetch over localhost")
    assert "serving" in logs(lab, server)
    assert lab.crictl("exec", "-s", client, "cat", "/shared/from-server").strip() == "hi"   # one emptyDir
    assert lab.crictl("exec", "-s", server, "cat", "/etc/note.txt").strip() == note.read_text().strip()
    resolv = lab.crictl("exec", "-s", client, "cat", "/etc/resolv.conf")
    assert "nameserver 10.77.0.53" in resolv and "search zlab.svc.cluster.local" in resolv, resolv
    assert lab.crictl("exec", "-s", client, "hostname").strip() == "duo"
    # a host directory read-write: refused when its task is created (containerd 1.6's CRI creates the task at
    # StartContainer), naming the mount; the pod runs on
    rw = lab.crictl("create", pod, lab.container_config("rw", ["true"], mounts=[
        {"container_path": "/data", "host_path": str(lab.root / "pods")}]), str(lab.root / "pods" / "duo.pod.json"))
    refused = lab.crictl_result("start", rw.strip())
    assert refused.returncode != 0
    assert b"cannot share host directory" in refused.stderr and b"mount /data" in refused.stderr, refused.stderr
    lab.crictl("rm", rw.strip())
    assert "served-by-the-zone" in lab.crictl("exec", "-s", client, "wget", "-q", "-O", "-",
                                              "http://localhost:8080/index.html")
    shims = {pid for pid, _ in lab.shim_processes() if "start" not in _ and "delete" not in _}
    assert len(shims) == 1, f"one shim serves the pod: {lab.shim_processes()}"
    qemus = lab.qemu_processes()
    assert len(qemus) == 1, f"one zone holds both containers: {qemus}"

    # the pod IP answers from the host side of the CNI bridge (the lab's network namespace)
    ping = subprocess.run([*lab.nsenter(), "busybox", "ping", "-c", "2", "-W", "5", ip], capture_output=True,
                          text=True, timeout=60)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    fetched = subprocess.run([*lab.nsenter(), "busybox", "wget", "-q", "-O", "-", f"http://{ip}:8080/index.html"],
                             capture_output=True, text=True, timeout=60)
    assert fetched.stdout.strip() == "served-by-the-zone", fetched.stderr

    # the shim dies: `crictl rmp -f` still removes the pod and everything its zone held
    os.kill(shims.pop(), signal.SIGKILL)
    lab.crictl("rmp", "-f", pod)


def test_a_pod_sharing_its_pid_namespace(node: Lab) -> None:
    """shareProcessNamespace: kubelet sets CRI's POD pid mode on the sandbox and every container; containerd
    names the sandbox's pid namespace in each container's config; in the zone they share the pod's, whose pid
    1 is its holder (docs/pods-contract.md). A container of the same pod in CONTAINER mode sees only its own."""
    lab = node
    shared = {"security_context": {"namespace_options": {"pid": PID_POD}}}
    pod = lab.crictl("runp", "--runtime", "edera", lab.pod_config("pids", linux=shared)).strip()
    start_container(lab, pod, "pids", "sleeper", ["sleep", "4242"], linux=shared)
    looker = start_container(lab, pod, "pids", "looker", SLEEPER, linux=shared)
    alone = start_container(lab, pod, "pids", "alone", SLEEPER)
    wait_for(lambda: "hello-from-the-zone" in logs(lab, looker), 120, "the looker's start")
    seen = lab.crictl("exec", "-s", looker, "ps", "-o", "pid,args")
    assert "sleep 4242" in seen, seen
    assert lab.crictl("exec", "-s", looker, "cat", "/proc/1/comm").strip() == "pod-pid-holder"
    own = lab.crictl("exec", "-s", alone, "ps", "-o", "pid,args")
    assert "sleep 4242" not in own and "pod-pid-holder" not in own, own
    lab.crictl("rmp", "-f", pod)   # the holder is no container: the zone stops with the pod (node: no leftovers)


def test_a_zone_that_cannot_boot_fails_the_pod_with_its_reason(node: Lab) -> None:
    result = node.crictl_result("runp", "--runtime", "edera-broken", node.pod_config("broken"))
    message = result.stderr.decode(errors="replace")
    assert result.returncode != 0
    assert "stopped during boot" in message and "Kernel panic" in message, message
