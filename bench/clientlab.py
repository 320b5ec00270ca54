"""Real podman, docker and containerd, each started with state of its own under a temporary directory, for
tests/clients (behaviour next to runc) and bench/client_run.py (speed next to runc).

- ``Podman``: its own containers.conf (cgroupfs, file events and locks, ulimits below this host's hard
  limits), storage.conf (vfs, graph root and run root under the directory) and the ``styrolite`` runtime.
- ``Dockerd``: a dockerd with its own data root, exec root, pid file and unix socket, no iptables and no
  bridge (containers use ``--network none``), ``--add-runtime styrolite=...``; it starts its own containerd
  under the exec root. ``stop()`` ends it.
- ``Containerd``: a containerd with its own root, state and socket (the CRI plugin off), driven by ``ctr``
  in a namespace unique to the run; the runc v2 shim with ``--runc-binary`` (its BinaryName) for styrolite.

Each ``run(runtime, *args)`` runs one client command with the runtime chosen by name ("runc" or
"styrolite") where the command takes one. ``styrolite_launcher`` writes the ``styrolite`` they run (the
launcher the host installs, zonebuild.styrolite_binary); ``busybox_archive`` builds the image they load
(no registry, no network); ``run_in_pty`` drives ``-it``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

# this host: the open-files hard limit is 20000, max user processes ~96000, and root lacks CAP_SYS_RESOURCE,
# so a container may not ask for more (with runc as with styrolite)
NOFILE = "nofile=10000:10000"
NPROC = "nproc=4096:4096"


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(0.1)


def terminate(process: subprocess.Popen) -> None:
    """SIGTERM a daemon we started (its own session), SIGKILL its group if it does not go within 30 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def remove_cgroup(name: str) -> None:
    """rmdir /sys/fs/cgroup/<hierarchy>/<name> and what is below it, in every hierarchy (the parent cgroup a
    daemon made for its containers; they are gone by now)."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / name
        if top.is_dir() and not top.is_symlink():
            for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()


def unique_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def output_of(result: subprocess.CompletedProcess) -> str:
    """stdout and stderr, for assertions and their messages."""
    return result.stdout.decode() + result.stderr.decode()


def run_in_pty(argv: list[str], keys: bytes, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str]:
    """Run ``argv`` with a pty as its stdin/stdout/stderr (what ``-it`` needs), type ``keys``, collect the
    screen output until it exits. Returns (exit code, output)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
                            preexec_fn=lambda: _set_controlling_tty(0))
    os.close(slave)
    output = bytearray()
    typed = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    chunk = b""
                if not chunk and proc.poll() is not None:
                    break
                output += chunk
            if not typed and (b"#" in output or time.monotonic() > deadline - timeout + 3):
                os.write(master, keys)  # once the shell prompted (or after 3 s)
                typed = True
            if proc.poll() is not None and not ready:
                break
        else:
            proc.kill()
        code = proc.wait(timeout=10)
    finally:
        os.close(master)
    return code, output.decode(errors="replace")


def _set_controlling_tty(fd: int) -> None:
    import fcntl
    import termios

    fcntl.ioctl(fd, termios.TIOCSCTTY, 0)


class Client:
    name = "client"

    def __init__(self, base: Path, styrolite: Path, more_runtimes: dict[str, Path] | None = None) -> None:
        """``more_runtimes``: other runtime executables by name (a benchmark compares several styrolites)."""
        self.base = base
        self.styrolite = styrolite
        self.runtimes = {"styrolite": styrolite, **(more_runtimes or {})}
        self.env = dict(os.environ)

    def command(self, runtime: str, args: tuple[str, ...]) -> list[str]:
        raise NotImplementedError

    def run(self, runtime: str, *args: str, timeout: float = 120, input: bytes | None = None,
            check: bool = False) -> subprocess.CompletedProcess:
        argv = self.command(runtime, args)
        result = subprocess.run(argv, input=input, capture_output=True, timeout=timeout, env=self.env, cwd="/")
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.decode()}")
        return result

    def pty(self, runtime: str, *args: str, keys: bytes) -> tuple[int, str]:
        return run_in_pty(self.command(runtime, args), keys, env=self.env)


class Podman(Client):
    name = "podman"

    def __init__(self, base: Path, styrolite: Path, image_archive: Path,
                 more_runtimes: dict[str, Path] | None = None) -> None:
        super().__init__(base, styrolite, more_runtimes)
        runtimes = "".join(f'{name} = ["{path}"]\n' for name, path in self.runtimes.items())
        (base / "tmp").mkdir(parents=True)
        (base / "containers.conf").write_text(f"""
[containers]
default_ulimits = ["{NOFILE}", "{NPROC}"]
netns = "none"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{base}/events.log"
lock_type = "file"
tmp_dir = "{base}/tmp"
static_dir = "{base}/root/libpod"
volume_path = "{base}/root/volumes"
[engine.runtimes]
{runtimes}""")
        (base / "storage.conf").write_text(f"""
[storage]
driver = "vfs"
graphroot = "{base}/root"
runroot = "{base}/run"
""")
        self.cgroup_parent = f"styrolite-test-podman-{uuid.uuid4().hex[:8]}"
        self.env.update(CONTAINERS_CONF=str(base / "containers.conf"),
                        CONTAINERS_STORAGE_CONF=str(base / "storage.conf"))
        self.run("runc", "load", "-i", str(image_archive), check=True)

    def command(self, runtime: str, args: tuple[str, ...]) -> list[str]:
        if args and args[0] in ("run", "create"):  # a cgroup parent of the run's own, removed by stop()
            return ["podman", "--runtime", runtime, args[0], "--cgroup-parent", f"/{self.cgroup_parent}", *args[1:]]
        return ["podman", "--runtime", runtime, *args]

    def stop(self) -> None:
        """Remove every container (each with the runtime it was created with); podman has no daemon."""
        self.run("runc", "rm", "--all", "--force", "--time", "0", timeout=120)
        remove_cgroup(self.cgroup_parent)


class Dockerd(Client):
    name = "docker"
    CLI = "/usr/bin/docker"  # docker.io's 20.10 client, the daemon's own version

    def __init__(self, base: Path, styrolite: Path, image_archive: Path,
                 more_runtimes: dict[str, Path] | None = None) -> None:
        super().__init__(base, styrolite, more_runtimes)
        (base / "daemon.json").write_text("{}")
        self.socket = base / "docker.sock"
        self.cgroup_parent = f"styrolite-test-docker-{uuid.uuid4().hex[:8]}"
        self.log = open(base / "dockerd.log", "wb")  # noqa: SIM115 (open while the daemon runs)
        self.process = subprocess.Popen(
            ["dockerd", "--config-file", str(base / "daemon.json"), "--data-root", str(base / "data"),
             "--exec-root", str(base / "exec"), "--pidfile", str(base / "docker.pid"),
             "--host", f"unix://{self.socket}", "--iptables=false", "--ip6tables=false", "--bridge=none",
             "--ip-forward=false", "--ip-masq=false", "--storage-driver", "vfs",
             "--exec-opt", "native.cgroupdriver=cgroupfs", "--cgroup-parent", f"/{self.cgroup_parent}",
             *(f"--add-runtime={name}={path}" for name, path in self.runtimes.items()),
             "--default-ulimit", NOFILE, "--default-ulimit", NPROC],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
        self.env.update(DOCKER_HOST=f"unix://{self.socket}", DOCKER_CONFIG=str(base / "cli"))
        try:
            wait_for(lambda: self.process.poll() is None and self.run("runc", "version").returncode == 0, 60,
                     "dockerd")
        except TimeoutError as e:
            self.stop()
            raise RuntimeError(f"{e}: {(base / 'dockerd.log').read_text()[-2000:]}") from None
        self.run("runc", "load", "-i", str(image_archive), check=True)

    def command(self, runtime: str, args: tuple[str, ...]) -> list[str]:
        if args and args[0] in ("run", "create"):
            return [self.CLI, args[0], "--runtime", runtime, *args[1:]]
        return [self.CLI, *args]

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(Exception):
                ids = self.run("runc", "ps", "-aq", timeout=30).stdout.decode().split()
                if ids:
                    self.run("runc", "rm", "-f", *ids, timeout=60)
        terminate(self.process)
        self.log.close()
        remove_cgroup(self.cgroup_parent)


class Containerd(Client):
    name = "containerd"

    def __init__(self, base: Path, styrolite: Path, image_archive: Path,
                 more_runtimes: dict[str, Path] | None = None) -> None:
        super().__init__(base, styrolite, more_runtimes)
        self.socket = base / "containerd.sock"
        self.namespace = f"styrolite-test-{uuid.uuid4().hex[:8]}"  # also the cgroup parent of its containers
        (base / "config.toml").write_text(f"""
version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[debug]
  address = ""
""")
        self.log = open(base / "containerd.log", "wb")  # noqa: SIM115 (open while the daemon runs)
        self.process = subprocess.Popen(["containerd", "-c", str(base / "config.toml")], stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
        try:
            wait_for(lambda: self.process.poll() is None and self.ctr("version").returncode == 0, 60, "containerd")
        except TimeoutError as e:
            self.stop()
            raise RuntimeError(f"{e}: {(base / 'containerd.log').read_text()[-2000:]}") from None
        result = self.ctr("image", "import", "--snapshotter", "native", str(image_archive))
        if result.returncode != 0:
            raise RuntimeError(f"ctr image import: {result.stderr.decode()}")

    IMAGE = "docker.io/library/busybox:latest"

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["ctr", "--address", str(self.socket), "--namespace", self.namespace, *args],
                              capture_output=True, timeout=timeout, env=self.env, cwd="/")

    def binary(self, runtime: str) -> str:
        return str(self.runtimes[runtime]) if runtime in self.runtimes else shutil.which("runc") or "runc"

    def command(self, runtime: str, args: tuple[str, ...]) -> list[str]:
        base = ["ctr", "--address", str(self.socket), "--namespace", self.namespace]
        if args and args[0] == "run":
            return [*base, "run", "--snapshotter", "native", "--runc-binary", self.binary(runtime), *args[1:]]
        return [*base, *args]

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(Exception):
                for task in self.ctr("task", "ls", "-q", timeout=30).stdout.decode().split():
                    self.ctr("task", "kill", "-s", "SIGKILL", task, timeout=30)
                    self.ctr("task", "delete", "-f", task, timeout=30)
                for container in self.ctr("container", "ls", "-q", timeout=30).stdout.decode().split():
                    self.ctr("container", "delete", container, timeout=30)
        terminate(self.process)
        self.log.close()
        remove_cgroup(self.namespace)


def styrolite_launcher(directory: Path) -> Path:
    """The ``styrolite`` the clients run: the launcher the host installs (zonebuild.styrolite_binary), for
    the interpreter running this code. Its default state root is private to the run (clients that pass
    ``--root`` still choose their own)."""
    from host.zonebuild_import import ensure_zonebuild

    ensure_zonebuild()
    from zonebuild.styrolite_binary import write_launcher

    return write_launcher(directory / "styrolite", environment={"STYROLITE_ROOT": str(directory / "state")})


# --- the busybox image ---------------------------------------------------------------------------------------
# zonebuild.busybox_image writes an OCI image layout; docker 20.10 and ``ctr image import`` want a docker-archive
# (``docker save`` format), which podman loads too, so that is what the clients get.

TAG = "busybox:latest"


def busybox_archive(work: Path) -> Path:
    """busybox-static as a docker-archive (docker load, podman load, ctr image import), built under ``work``."""
    from host.zonebuild_import import ensure_zonebuild

    ensure_zonebuild()
    from zonebuild.busybox_image import build_busybox_image

    return docker_archive(build_busybox_image(work / "layout"), work / "busybox.tar")


def _blob(layout: Path, digest: str) -> Path:
    algorithm, hex_digest = digest.split(":", 1)
    return layout / "blobs" / algorithm / hex_digest


def docker_archive(layout: Path, out: Path, tag: str = TAG) -> Path:
    """Repack the single-manifest OCI layout ``layout`` as the docker-archive ``out`` named ``tag``."""
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]).read_text())
    config_digest = manifest["config"]["digest"]
    layers = [layer["digest"] for layer in manifest["layers"]]
    if any(not layer["mediaType"].endswith("tar") for layer in manifest["layers"]):
        raise ValueError("only uncompressed layers are repacked")
    entry = {"Config": config_digest.split(":", 1)[1] + ".json", "RepoTags": [tag],
             "Layers": [f"{digest.split(':', 1)[1]}/layer.tar" for digest in layers]}
    with tarfile.open(out, "w") as archive:
        archive.add(_blob(layout, config_digest), arcname=entry["Config"])
        for digest, name in zip(layers, entry["Layers"], strict=True):
            archive.add(_blob(layout, digest), arcname=name)
        manifest_file = out.with_suffix(".manifest.json")
        manifest_file.write_text(json.dumps([entry]))
        archive.add(manifest_file, arcname="manifest.json")
    manifest_file.unlink()
    return out


def pty_supported() -> bool:
    try:
        master, slave = pty.openpty()
    except OSError:
        return False
    os.close(master)
    os.close(slave)
    return True
