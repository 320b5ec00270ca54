"""Kubernetes' view: containerd 1.6's CRI plugin runs pods on handler `edera` through the shim, driven by
crictl (cri-tools v1.26.1, matching containerd 1.6). One shim per pod: the sandbox and both containers of
the pod are served by one shim process. The backend is the host-process double, the pod on the host
network (CNI is the zone backend's business): this checks the containerd side — task mapping, stdio for
logs and `exec -s`/`exec -i`, CRI decoding the shim's cgroup Metrics, stop/remove, no shim left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from containerd_lab import Containerd, crictl_binary, minimal_oci_archive

pytestmark = [pytest.mark.root, pytest.mark.slow]

CRICTL = crictl_binary()
if os.geteuid() != 0 or shutil.which("containerd") is None or CRICTL is None:
    pytest.skip("needs root, Debian's containerd and crictl (cri-tools, built into $ZONE_CACHE/cri-tools)",
                allow_module_level=True)

APP_IMAGE = "zonetest.local/app:1"


class Cri:
    def __init__(self, containerd: Containerd) -> None:
        self.containerd = containerd
        self.base = [str(CRICTL), "-r", f"unix://{containerd.address}", "-i", f"unix://{containerd.address}",
                     "-t", "60s"]

    def __call__(self, *args: str, input: bytes | None = None, check: bool = True) -> str:
        result = subprocess.run([*self.base, *args], input=input, capture_output=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"crictl {' '.join(args)}: {result.stderr.decode()}\n"
                                 f"{self.containerd.logs()[-3000:]}")
        return result.stdout.decode()


@pytest.fixture
def cri() -> Iterator[Cri]:
    root = Path(tempfile.mkdtemp(prefix="zsk", dir="/tmp"))
    for name in ("cni-bin", "cni-conf", "logs"):
        (root / name).mkdir()
    containerd = Containerd(root, "shim_backend_double:create", cri=True, namespace="k8s.io")
    try:
        archive = root / "images.tar"
        minimal_oci_archive(archive, ["registry.k8s.io/pause:3.6", APP_IMAGE])
        containerd.ctr("images", "import", str(archive))
        cri = Cri(containerd)
        yield cri
        cri("rmp", "--force", "--all", check=False)  # whatever a failed test left
    finally:
        containerd.stop()
        shutil.rmtree(root, ignore_errors=True)


def write(path: Path, value: dict) -> str:
    path.write_text(json.dumps(value))
    return str(path)


def test_a_pod_on_handler_edera(cri: Cri) -> None:
    root = cri.containerd.dir
    pod = write(root / "pod.json", {
        "metadata": {"name": "zpod", "namespace": "zt", "uid": "zpod-uid", "attempt": 1},
        "log_directory": str(root / "logs"),
        "linux": {"security_context": {"namespace_options": {"network": 2}}}})  # host network: no CNI here

    def container(name: str, text: str) -> str:
        return write(root / f"{name}.json", {
            "metadata": {"name": name}, "image": {"image": APP_IMAGE}, "log_path": f"{name}.log", "linux": {},
            "command": ["sh", "-c", f"echo {text}; while true; do sleep 1; done"]})

    pod_id = cri("runp", "--runtime", "edera", pod).strip()
    assert json.loads(cri("inspectp", pod_id))["status"]["state"] == "SANDBOX_READY"
    first = cri("create", pod_id, container("c1", "hello-from-c1"), pod).strip()
    second = cri("create", pod_id, container("c2", "hello-from-c2"), pod).strip()
    cri("start", first)
    cri("start", second)
    assert len(cri.containerd.shim_daemons()) == 1  # one shim for the sandbox and both containers

    assert cri("exec", "-s", first, "sh", "-c", "echo exec-sync; exit 0").strip() == "exec-sync"
    assert cri("exec", "-i", first, "cat", input=b"streamed through exec -i\n") == "streamed through exec -i\n"
    failing = subprocess.run([*cri.base, "exec", "-s", first, "sh", "-c", "exit 3"], capture_output=True,
                             timeout=60)
    assert failing.returncode != 0 and b"exited with 3" in failing.stderr

    deadline = time.monotonic() + 10
    while "hello-from-c2" not in cri("logs", second) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "hello-from-c1" in cri("logs", first) and "hello-from-c2" in cri("logs", second)

    stats = json.loads(cri("stats", "-o", "json", "--id", first))["stats"][0]
    assert int(stats["memory"]["workingSetBytes"]["value"]) > 0  # CRI decoded the shim's cgroup v2 Metrics
    assert "cpu" in stats

    cri("stop", "-t", "2", first)
    assert json.loads(cri("inspect", first))["status"]["state"] == "CONTAINER_EXITED"
    cri("stopp", pod_id)
    cri("rmp", pod_id)
    assert cri("pods", "-q").strip() == ""
    assert cri.containerd.wait_no_shims() == []
