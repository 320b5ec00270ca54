"""A real containerd 1.6 for the shim's tests: its own root, state and sockets under a temporary directory,
the shim on its PATH, the recording host-process backend double selected through ZONE_SHIM_BACKEND;
optionally its CRI plugin with runtime handler `edera`. Started and stopped by the test."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RUNTIME = "io.containerd.zone.v2"


def crictl_binary() -> str | None:
    found = shutil.which("crictl")
    if found:
        return found
    cache = Path(os.environ.get("ZONE_CACHE", "/var/cache/zone")) / "cri-tools" / "crictl"
    return str(cache) if cache.exists() else None


CRI_CONFIG = """[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.6"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{root}/cni-bin"
    conf_dir = "{root}/cni-conf"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.edera]
    runtime_type = "io.containerd.zone.v2"
"""


def minimal_oci_archive(path: Path, names: list[str]) -> None:
    """An OCI image archive (one tiny layer) under each of `names`, for `ctr images import`: CRI needs its
    images in containerd's store; the backend double never looks inside them."""
    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as layer_tar:
        info = tarfile.TarInfo("etc")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        layer_tar.addfile(info)
    layer = layer_buf.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [digest(layer)]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(layer),
                    "size": len(layer)}]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(manifest),
         "size": len(manifest), "annotations": {"io.containerd.image.name": name,
                                                "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}
        for name in names]}).encode()
    with tarfile.open(path, "w") as archive:
        for name, data in [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index),
                           *((f"blobs/sha256/{digest(d)[7:]}", d) for d in (layer, config, manifest))]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


class Containerd:
    def __init__(self, root: Path, backend: str | None, cri: bool = False, namespace: str = "zonetest") -> None:
        self.namespace = namespace
        self.dir = root
        self.address = str(root / "c.sock")
        self.sockets = root / "s"
        bindir = root / "bin"
        bindir.mkdir()
        shim = bindir / "containerd-shim-zone-v2"
        shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m shim.main "$@"\n')
        shim.chmod(0o755)
        (root / "rootfs").mkdir()
        (root / "fifo").mkdir()
        (root / "config.toml").write_text(f"""version = 2
root = "{root}/root"
state = "{root}/state"
{'' if cri else 'disabled_plugins = ["io.containerd.grpc.v1.cri"]'}
[grpc]
  address = "{self.address}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
""" + (CRI_CONFIG.format(root=root) if cri else ""))
        env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", PYTHONPATH=f"{REPO}:{HERE}",
                   ZONE_SHIM_SOCKET_DIR=str(self.sockets))
        env.pop("ZONE_SHIM_BACKEND", None)
        if backend:
            env["ZONE_SHIM_BACKEND"] = backend
        self.log = open(root / "containerd.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(["containerd", "--config", str(root / "config.toml"), "--log-level", "debug"],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.address):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not start: {self.logs()[-2000:]}")
            time.sleep(0.05)

    def logs(self) -> str:
        return (self.dir / "containerd.log").read_text(errors="replace")

    def ctr(self, *args: str, input: bytes | None = None, timeout: float = 60,
            check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["ctr", "--address", self.address, "--namespace", self.namespace, *args], input=input,
                                capture_output=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} exited {result.returncode}: {result.stderr.decode()}")
        return result

    def run(self, container_id: str, *command: str, detach: bool = False, input: bytes | None = None,
            check: bool = False) -> subprocess.CompletedProcess:
        flags = ["-d"] if detach else ["--rm"]
        return self.ctr("run", *flags, "--runtime", RUNTIME, "--fifo-dir", str(self.dir / "fifo"), "--rootfs",
                        str(self.dir / "rootfs"), container_id, *command, input=input, check=check)

    def shim_processes(self) -> list[int]:
        """Processes (shims, the double's processes) whose working directory is in this containerd's state."""
        state = str(self.dir / "state")
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/cwd").startswith(state):
                        found.append(int(entry))
        return found

    def shim_daemons(self) -> list[int]:
        """The long-running shims (this program without an action) serving this containerd."""
        found = []
        for pid in self.shim_processes():
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"shim.main" in argv and not {b"start", b"delete"} & set(argv):
                    found.append(pid)
        return found

    def wait_no_shims(self, timeout: float = 15) -> list[int]:
        deadline = time.monotonic() + timeout
        while (left := self.shim_processes()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in self.shim_processes():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self.log.close()
        # what a failed test may leave mounted (snapshots, a sandbox's /dev/shm): deepest first
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f if line.split()[1].startswith(str(self.dir) + "/")]
        for target in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)


class Events:
    def __init__(self, containerd: Containerd) -> None:
        self.path = containerd.dir / "events.log"
        self.file = open(self.path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(["ctr", "--address", containerd.address, "events"], stdout=self.file,
                                     stderr=subprocess.STDOUT)
        time.sleep(0.3)

    def wait_for(self, *needles: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.path.read_text(errors="replace")
            if all(n in text for n in needles) or time.monotonic() > deadline:
                return text
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        self.file.close()
