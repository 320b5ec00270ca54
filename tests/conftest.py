"""Shared fixtures: a busybox root filesystem built from Debian's busybox-static, and OCI bundles over it.

Tests that need root (mounts, namespaces, cgroups, mknod, chown, loop devices, the real clients) carry the
``root`` marker: as another user they are skipped, so ``pytest`` there (or ``pytest -m "not root"`` anywhere)
is the unprivileged suite."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUSYBOX = "/bin/busybox"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    needs_root = pytest.mark.skip(reason="needs root (marked root)")
    for item in items:
        if item.get_closest_marker("root") is not None:
            item.add_marker(needs_root)


def _busybox_rootfs(target: Path) -> Path:
    from host.zonebuild_import import ensure_zonebuild

    ensure_zonebuild()  # a source checkout: build/ is zonebuild only once pip-installed
    from zonebuild.busybox_image import stage_rootfs

    if not os.path.exists(BUSYBOX):
        pytest.skip("Debian's busybox-static is not installed (apt-get install busybox-static)")
    stage_rootfs(Path(BUSYBOX), target)
    return target


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-used template rootfs: copy it (make_bundle does) before a container may write into it."""
    return _busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


def base_config() -> dict:
    from styrolite.spec import default_config

    config = default_config()
    config["root"] = {"path": "rootfs", "readonly": False}
    config["process"]["terminal"] = False
    return config


# Container ids in tests are short and fixed ("c1"); the default cgroup, /styrolite/<id>, would be shared by
# every suite running on this machine at once (other worktrees), and one run's `delete` would kill another
# run's container. Each bundle gets a cgroup under a parent unique to this test run instead.
CGROUP_PARENT = f"styrolite-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session", autouse=True)
def _remove_cgroup_parent() -> Iterator[None]:
    yield
    for base, dirs, _files in os.walk("/sys/fs/cgroup"):
        if os.path.basename(base) == CGROUP_PARENT:
            for root, _subdirs, _names in sorted(os.walk(base), key=lambda w: -w[0].count("/")):
                with contextlib.suppress(OSError):
                    os.rmdir(root)
            dirs[:] = []
        elif base.count("/") > 4:
            dirs[:] = []


@pytest.fixture
def make_bundle(tmp_path: Path, busybox_rootfs: Path) -> Callable[..., Path]:
    """make_bundle(args=[...], edit=lambda cfg: ...) -> bundle dir with config.json and a private rootfs copy.

    Its cgroup is /<CGROUP_PARENT>/<bundle directory name> unless the config names one.
    """

    def make(args: list[str] | None = None, edit: Callable[[dict], None] | None = None,
             config: dict | None = None) -> Path:
        bundle = tmp_path / f"bundle-{uuid.uuid4().hex[:8]}"
        bundle.mkdir()
        shutil.copytree(busybox_rootfs, bundle / "rootfs", symlinks=True, copy_function=os.link)
        cfg = copy.deepcopy(config) if config is not None else base_config()
        cfg.setdefault("linux", {}).setdefault("cgroupsPath", f"/{CGROUP_PARENT}/{bundle.name}")
        if args is not None:
            cfg["process"]["args"] = args
        if edit is not None:
            edit(cfg)
        (bundle / "config.json").write_text(json.dumps(cfg, indent=1))
        return bundle

    return make


@pytest.fixture
def state_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "state"
    yield root
    # never leave containers behind, whatever the test did
    if root.exists():
        for cid in os.listdir(root):
            subprocess.run([sys.executable, "-m", "styrolite.cli", "--root", str(root), "delete", "--force", cid],
                           capture_output=True)


@pytest.fixture
def styrolite(state_root: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run the styrolite CLI (as a user would) against this test's state directory."""

    def run(*args: str, input: bytes | None = None, timeout: float = 60, check: bool = False,
            **kwargs) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "styrolite.cli", "--root", str(state_root), *args]
        # files, not pipes: `create` leaves the container holding the stdio it inherited (as runc does),
        # so a pipe would only reach EOF when the container exits
        with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
            code = subprocess.run(cmd, input=input, stdout=stdout, stderr=stderr, timeout=timeout, cwd=REPO,
                                  **kwargs).returncode
            stdout.seek(0)
            stderr.seek(0)
            result = subprocess.CompletedProcess(cmd, code, stdout.read(), stderr.read())
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}: {result.stderr.decode()}")
        return result

    return run
