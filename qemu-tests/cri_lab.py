"""A Kubernetes node in a box, for the pod tests and the CRI benchmarks: Debian's containerd 1.6 with its CRI
plugin, CNI, a local registry and crictl, all started here with their own state and stopped again.

* a **network namespace of its own** (``zlab-<hex>``) is the node's network: the CNI bridge, the pods' veths,
  the registry and containerd's streaming server live there, so nothing touches the machine's own routes and
  several labs run side by side. Everything that talks over the network (containerd, the registry, skopeo,
  crictl, whose exec/attach go through containerd's streaming server) runs in it (``nsenter --net``); the
  mount namespace stays the machine's.
* **images** are built here from Debian's busybox (zonebuild's busybox image layer) and pushed with skopeo
  to a ``docker-registry`` on 127.0.0.1:<a free port>; containerd's registry config (``certs.d``) sends
  ``registry.k8s.io``, ``docker.io`` and ``gcr.io`` there, so image names stay as a user writes them.
* **CNI**: Debian's ``bridge`` + ``host-local`` (and ``loopback``, which containerd adds itself; ``portmap``
  for host ports on request), conf and IPAM state under the lab directory, a bridge name unique to the lab.
* **containerd**: root, state, sockets under the lab directory; runtime handlers ``runc`` and ``edera``
  (``runtime_type = "io.containerd.zone.v2"``, ``options.ConfigPath`` = the shim's config file, the shim found
  on containerd's PATH).

``Lab.leftovers()`` lists what a test must not leave behind: QEMU processes, shims, mounts, taps (a tap lives
in a pod netns: containerd's netns files), loop devices over the lab's or the rootfs cache's files.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SANDBOX_IMAGE = "registry.k8s.io/pause:3.6"
BUSYBOX_IMAGE = "docker.io/library/busybox:1.36"
MIRRORED = ("registry.k8s.io", "docker.io", "gcr.io", "k8s.gcr.io", "quay.io")
SHIM = "containerd-shim-zone-v2"
SUBNET = "10.77.0.0/24"   # inside the lab's own network namespace: no clash with the machine's networks
PID_POD = 0                # CRI NamespaceMode POD (the proto default): the pod's pid namespace
PID_CONTAINER = 1          # CRI NamespaceMode CONTAINER


def crictl_binary() -> str:
    """crictl from cri-tools v1.26.1: on PATH, else in the cache (/work/shared/tools/build-cri-tools.sh builds it)."""
    found = shutil.which("crictl")
    if found:
        return found
    cache = Path(os.environ.get("ZONE_CACHE", "/var/cache/zone")) / "cri-tools" / "crictl"
    if cache.exists():
        return str(cache)
    raise FileNotFoundError("crictl not found: run /work/shared/tools/build-cri-tools.sh "
                            f"{cache.parent} (or .ci/setup)")


def missing_tools() -> list[str]:
    """What this lab needs and this machine lacks (Debian package names)."""
    tools = (("containerd", "containerd"), ("docker-registry", "docker-registry"), ("skopeo", "skopeo"),
             ("nsenter", "util-linux"), ("ip", "iproute2"), ("qemu-system-x86_64", "qemu-system-x86"),
             ("mkfs.erofs", "erofs-utils"), ("busybox", "busybox-static"))
    missing = [pkg for tool, pkg in tools if shutil.which(tool) is None]
    if not Path("/usr/lib/cni/bridge").exists():
        missing.append("containernetworking-plugins")
    try:
        crictl_binary()
    except FileNotFoundError:
        missing.append("crictl (cri-tools)")
    return missing


# --- images -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Image:
    layout: Path
    ref: str          # ref name inside the layout
    name: str         # the name pods use (registry/repository:tag)


def build_images(out: Path) -> list[Image]:
    """The lab's images, from zonebuild's busybox image layer: busybox (Cmd sh) and a sandbox (pause) image
    whose process only sleeps (runc runs it; a zone runs no process for it)."""
    from host.zonebuild_import import ensure_zonebuild

    ensure_zonebuild()
    from zonebuild.busybox_image import cached_busybox_image
    from zonebuild.ocilayout import MEDIA_LAYER_TAR, LayoutWriter

    source = cached_busybox_image()
    index = json.loads((source / "index.json").read_text())
    manifest = json.loads(_blob(source, index["manifests"][0]["digest"]).read_bytes())
    config = json.loads(_blob(source, manifest["config"]["digest"]).read_bytes())
    layer_digest = manifest["layers"][0]["digest"]
    variants = {
        "busybox": ({"Cmd": ["sh"]}, BUSYBOX_IMAGE),
        "pause": ({"Entrypoint": ["/bin/sleep", "2147483647"], "Cmd": None}, SANDBOX_IMAGE),
    }
    images = []
    for name, (overrides, reference) in variants.items():
        layout = out / name
        if layout.exists():
            shutil.rmtree(layout)
        writer = LayoutWriter(layout)
        scratch = out / f".{name}.layer"
        shutil.copyfile(_blob(source, layer_digest), scratch)
        layer = writer.add_file(scratch, MEDIA_LAYER_TAR)
        image_config = json.loads(json.dumps(config))
        for key, value in overrides.items():
            if value is None:
                image_config["config"].pop(key, None)
            else:
                image_config["config"][key] = value
        writer.add_image(image_config, [layer], ref_name="img")
        images.append(Image(layout, "img", reference))
    return images


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


# --- processes in the lab's network namespace ---------------------------------------------------------------

def _free_port(netns: str) -> int:
    from host.pod.netns import run_in_netns

    def bind() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    return run_in_netns(f"/run/netns/{netns}", bind)


def _wait(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        time.sleep(interval)


def _stop(process: subprocess.Popen[Any] | None, timeout: float = 20.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class CrictlError(AssertionError):
    def __init__(self, args: list[str], result: subprocess.CompletedProcess[bytes]) -> None:
        self.returncode = result.returncode
        self.stderr = result.stderr.decode(errors="replace")
        super().__init__(f"crictl {' '.join(args)} exited {result.returncode}: {self.stderr.strip()[-2000:]}")


@dataclass
class ShimOptions:
    """The shim's config file for handler edera (docs/kubernetes.md lists every key)."""

    kernel: str = ""
    initrd: str = ""
    memory_mib: int = 384
    vcpus: int = 1
    boot_timeout: float = 240.0
    extra: dict[str, Any] | None = None

    def toml(self, state_dir: Path) -> str:
        lines = [f'state_dir = "{state_dir}"', f"memory_mib = {self.memory_mib}", f"vcpus = {self.vcpus}",
                 f"boot_timeout = {self.boot_timeout}"]
        if self.kernel:
            lines.append(f'kernel = "{self.kernel}"')
        if self.initrd:
            lines.append(f'initrd = "{self.initrd}"')
        for key, value in (self.extra or {}).items():
            lines.append(f"{key} = {json.dumps(value)}")
        return "\n".join(lines) + "\n"


class Lab:
    """One node: start with ``Lab(root, shim_options)``, stop with ``stop()`` (also after a failed start)."""

    def __init__(self, root: Path, shim: ShimOptions, *, images: list[Image] | None = None,
                 handlers: dict[str, ShimOptions] | None = None, runtime_timeout: str = "300s",
                 portmap: bool = False, debug: bool = False) -> None:
        self.root = root
        self.tag = secrets.token_hex(3)
        self.netns = f"zlab-{self.tag}"
        self.bridge = f"zlab{self.tag}"
        self.address = str(root / "containerd.sock")
        self.timeout = runtime_timeout
        self.portmap = portmap
        self.registry: subprocess.Popen[bytes] | None = None
        self.containerd: subprocess.Popen[bytes] | None = None
        self._netns_before = set(self._pod_netns())
        self.crictl_path = crictl_binary()
        for name in ("bin", "etc", "cni/net.d", "cni/ipam", "registry", "logs", "zones", "pods", "shim-sockets"):
            (root / name).mkdir(parents=True, exist_ok=True)
        subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
        try:
            self._in_netns(["ip", "link", "set", "lo", "up"], check=True)
            self._start_registry()
            for image in images if images is not None else build_images(root / "images"):
                self.push(image)
            self._write_configs({"edera": shim, **(handlers or {})})
            self._start_containerd(debug)
        except BaseException:
            self.stop()
            raise

    # --- plumbing ------------------------------------------------------------------------------------------
    def nsenter(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--"]

    def _in_netns(self, argv: list[str], check: bool = False, timeout: float = 120,
                  **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*self.nsenter(), *argv], capture_output=True, timeout=timeout, check=check, **kwargs)

    def _start_registry(self) -> None:
        port = _free_port(self.netns)
        self.registry_address = f"127.0.0.1:{port}"
        config = self.root / "etc" / "registry.yml"
        config.write_text(f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {self.root / 'registry'}
http:
  addr: {self.registry_address}
""")
        log = open(self.root / "logs" / "registry.log", "wb")  # noqa: SIM115 - the child holds it
        self.registry = subprocess.Popen([*self.nsenter(), "docker-registry", "serve", str(config)],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

        def up() -> bool:
            if self.registry is not None and self.registry.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {(self.root / 'logs' / 'registry.log').read_text()}")
            return self._registry_answers()

        _wait(up, 30, "the registry did not answer")

    def _registry_answers(self) -> bool:
        from host.pod.netns import run_in_netns

        def probe() -> bool:
            try:
                with urllib.request.urlopen(f"http://{self.registry_address}/v2/", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        return run_in_netns(f"/run/netns/{self.netns}", probe)

    def push(self, image: Image) -> None:
        """Put ``image`` into the lab registry under its name's repository (its registry host is mirrored)."""
        repository = image.name.split("/", 1)[1]
        result = self._in_netns(["skopeo", "copy", "-q", "--preserve-digests", "--dest-tls-verify=false",
                                 f"oci:{image.layout}:{image.ref}", f"docker://{self.registry_address}/{repository}"],
                                timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"skopeo copy {image.name}: {result.stderr.decode(errors='replace')}")

    def _write_configs(self, handlers: dict[str, ShimOptions]) -> None:
        (self.root / "cni" / "net.d" / "10-zlab.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "zlab",
            "plugins": [{"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": False,
                         "hairpinMode": True,
                         "ipam": {"type": "host-local", "dataDir": str(self.root / "cni" / "ipam"),
                                  "ranges": [[{"subnet": SUBNET}]], "routes": [{"dst": "0.0.0.0/0"}]}},
                        *([{"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}]
                          if self.portmap else [])]},
            indent=1))
        certs = self.root / "etc" / "certs.d"
        for host in (*MIRRORED, self.registry_address):
            (certs / host).mkdir(parents=True, exist_ok=True)
            (certs / host / "hosts.toml").write_text(
                f'server = "http://{self.registry_address}"\n[host."http://{self.registry_address}"]\n'
                '  capabilities = ["pull", "resolve"]\n')
        runtime = 'plugins."io.containerd.grpc.v1.cri".containerd.runtimes'
        zone_runtimes = ""
        for handler, options in handlers.items():
            config = self.root / "etc" / f"zone-shim-{handler}.toml"
            config.write_text(options.toml(self.root / "zones"))
            zone_runtimes += f"""    [{runtime}.{handler}]
      runtime_type = "io.containerd.zone.v2"
      [{runtime}.{handler}.options]
        ConfigPath = "{config}"
"""
        self.shim_config = self.root / "etc" / "zone-shim-edera.toml"
        shim_binary = Path(sys.executable).parent / SHIM
        if not shim_binary.exists():
            raise FileNotFoundError(f"{shim_binary}: the console script of this checkout (pip install -e .)")
        link = self.root / "bin" / SHIM
        link.unlink(missing_ok=True)
        link.symlink_to(shim_binary)
        (self.root / "etc" / "containerd.toml").write_text(f"""version = 2
root = "{self.root}/containerd/root"
state = "{self.root}/containerd/state"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{self.address}"
[ttrpc]
  address = "{self.address}.ttrpc"
[debug]
  level = "debug"
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.root}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{runtime}.runc]
      runtime_type = "io.containerd.runc.v2"
      [{runtime}.runc.options]
        BinaryName = "{shutil.which('runc') or '/usr/sbin/runc'}"
        Root = "{self.root}/containerd/runc"
{zone_runtimes}  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{self.root}/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs}"
""")

    def _start_containerd(self, debug: bool) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ZONE_SHIM", "PYTHON"))}
        env["PATH"] = f"{self.root / 'bin'}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        env["ZONE_SHIM_SOCKET_DIR"] = str(self.root / "shim-sockets")
        if debug:
            env["ZONE_SHIM_DEBUG"] = "1"
        log = open(self.root / "logs" / "containerd.log", "wb")  # noqa: SIM115 - the child holds it
        self.containerd = subprocess.Popen(
            [*self.nsenter(), "containerd", "--config", str(self.root / "etc" / "containerd.toml")],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.close()

        def up() -> bool:
            if self.containerd is not None and self.containerd.poll() is not None:
                raise RuntimeError(f"containerd exited: {self.containerd_log()[-3000:]}")
            return os.path.exists(self.address) and self.crictl_result("version").returncode == 0

        _wait(up, 60, "containerd did not answer", interval=0.2)

    def containerd_log(self) -> str:
        return (self.root / "logs" / "containerd.log").read_text(errors="replace")

    # --- crictl -------------------------------------------------------------------------------------------
    def crictl_argv(self, *args: str, timeout: str | None = None) -> list[str]:
        return [*self.nsenter(), self.crictl_path, "-r", f"unix://{self.address}", "-i", f"unix://{self.address}",
                "-t", timeout or self.timeout, *args]

    def crictl_result(self, *args: str, input: bytes | None = None, timeout: float = 600,
                      crictl_timeout: str | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self.crictl_argv(*args, timeout=crictl_timeout), input=input, capture_output=True,
                              timeout=timeout)

    def crictl(self, *args: str, input: bytes | None = None, timeout: float = 600) -> str:
        result = self.crictl_result(*args, input=input, timeout=timeout)
        if result.returncode != 0:
            raise CrictlError(list(args), result)
        return result.stdout.decode(errors="replace")

    def ctr(self, *args: str) -> str:
        """containerd's own client on the lab's containerd (namespace k8s.io, where CRI keeps its tasks)."""
        result = subprocess.run(["ctr", "--address", self.address, "--namespace", "k8s.io", *args],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
        return result.stdout

    def write_json(self, name: str, document: dict[str, Any]) -> str:
        path = self.root / "pods" / name
        path.write_text(json.dumps(document))
        return str(path)

    def pod_config(self, name: str, **extra: Any) -> str:
        """A pod as kubelet describes one: each container gets its own pid namespace (kubelet's default; crictl's
        zero value would share one, shareProcessNamespace)."""
        document = {"metadata": {"name": name, "namespace": "zlab", "uid": f"{name}-{self.tag}", "attempt": 1},
                    "hostname": name, "log_directory": str(self.root / "pods" / f"{name}-logs"),
                    "linux": {"security_context": {"namespace_options": {"pid": PID_CONTAINER}}}, **extra}
        return self.write_json(f"{name}.pod.json", document)

    def container_config(self, name: str, command: list[str], image: str = BUSYBOX_IMAGE, **extra: Any) -> str:
        document = {"metadata": {"name": name}, "image": {"image": image}, "command": command,
                    "log_path": f"{name}.log",
                    "linux": {"security_context": {"namespace_options": {"pid": PID_CONTAINER}}}, **extra}
        return self.write_json(f"{name}.ctr.json", document)

    def pull(self, image: str) -> None:
        self.crictl("pull", image)

    # --- what is left -------------------------------------------------------------------------------------
    @staticmethod
    def _pod_netns() -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return sorted(p.name for p in Path("/var/run/netns").iterdir() if p.name.startswith("cni-"))
        return []

    def processes(self, needle: str) -> list[tuple[int, str]]:
        """(pid, command line) of processes whose command line or working directory mentions ``needle``."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                cwd = os.readlink(f"/proc/{entry}/cwd")
                if needle in argv or cwd.startswith(needle):
                    found.append((int(entry), argv.strip()))
        return found

    def qemu_processes(self) -> list[tuple[int, str]]:
        return [p for p in self.processes(str(self.root / "zones")) if "qemu" in p[1]]

    def shim_processes(self) -> list[tuple[int, str]]:
        return [p for p in self.processes(str(self.root / "containerd" / "state")) if "shim" in p[1]]

    def leftovers(self) -> list[str]:
        """Everything pods of this lab left on the machine (empty once every pod is removed)."""
        left = [f"QEMU {pid}: {argv[:120]}" for pid, argv in self.qemu_processes()]
        left += [f"shim {pid}: {argv[:120]}" for pid, argv in self.shim_processes()]
        with open("/proc/self/mountinfo") as f:
            for line in f:
                target = line.split()[4]
                if target.startswith(str(self.root)):
                    left.append(f"mount {target}")
        left += [f"pod netns {name} (its tap)" for name in set(self._pod_netns()) - self._netns_before]
        losetup = subprocess.run(["losetup", "--json", "--list"], capture_output=True, text=True, check=False)
        with contextlib.suppress(ValueError):
            for device in json.loads(losetup.stdout or "{}").get("loopdevices", []):
                backing = device.get("back-file") or ""
                if backing.startswith(str(self.root)) or "pod-rootfs" in backing:
                    left.append(f"loop {device.get('name')} over {backing}")
        if self.zone_dirs():
            left.append(f"zone state {', '.join(self.zone_dirs())}")
        return left

    def zone_dirs(self) -> list[str]:
        zones = self.root / "zones"
        return sorted(p.name for p in zones.iterdir()) if zones.is_dir() else []

    def wait_no_leftovers(self, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return left

    # --- teardown -----------------------------------------------------------------------------------------
    def remove_all_pods(self) -> None:
        if self.containerd is not None and self.containerd.poll() is None:
            self.crictl_result("rmp", "-a", "-f", timeout=300)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.remove_all_pods()
        _stop(self.containerd)
        # a shim or QEMU a failed test left behind: by pid, never by name
        for pid, _argv in [*self.shim_processes(), *self.qemu_processes()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _stop(self.registry)
        with open("/proc/self/mountinfo") as f:
            targets = [line.split()[4] for line in f if line.split()[4].startswith(str(self.root) + "/")]
        for target in sorted(targets, key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
        for name in set(self._pod_netns()) - self._netns_before:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)
