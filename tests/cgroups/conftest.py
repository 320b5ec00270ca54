"""Fixtures for the cgroup tests: real cgroups on this host (always removed) and fake cgroupfs trees."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from styrolite.cgroups import CgroupManager, V1Manager, V2Manager, open_cgroup
from styrolite.cgroups.layout import detect_layout

TEST_PARENT = "styrolite-tests"


def _remove_parent_dirs(manager: CgroupManager) -> None:
    """The shared test parent goes too once empty (other tests may still use it: then it stays)."""
    directories = []
    if isinstance(manager, V1Manager):
        directories = list(manager.directories.values())
        if manager.unified is not None:
            directories.append(manager.unified.directory)
    elif isinstance(manager, V2Manager):
        directories = [manager.directory]
    for directory in set(directories):
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(directory))


@pytest.fixture
def make_cgroup() -> Iterator[Callable[..., CgroupManager]]:
    """Create real cgroups (``root`` picks the hierarchy); each is killed and removed at teardown."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    created: list[CgroupManager] = []

    def make(root: str = "/sys/fs/cgroup", create: bool = True) -> CgroupManager:
        manager = open_cgroup(f"/{TEST_PARENT}/{uuid.uuid4().hex[:12]}", "unused", root)
        created.append(manager)
        if create:
            manager.create()
        return manager

    yield make
    for manager in created:
        try:
            if manager.exists():
                if manager.state() == "frozen":
                    manager.thaw()
                manager.destroy(kill=True)
        finally:
            _remove_parent_dirs(manager)


@pytest.fixture(scope="session")
def host_layout():
    return detect_layout()


@pytest.fixture
def v1_cgroup(make_cgroup, host_layout) -> V1Manager:
    if host_layout.mode == "unified":
        pytest.skip("this host has no cgroup v1 hierarchies")
    return make_cgroup()


@pytest.fixture
def unified_cgroup(make_cgroup, host_layout) -> V2Manager:
    """A real cgroup v2 directory: the whole hierarchy on unified hosts, ``<root>/unified`` on hybrid ones."""
    if host_layout.unified is None:
        pytest.skip("this host has no cgroup2 hierarchy")
    return make_cgroup(root=host_layout.unified.mountpoint)


class Waiting:
    """A child python process that waits on stdin until it is released, so it can be moved into a cgroup first."""

    def __init__(self, code: str) -> None:
        prelude = "import sys, os\nsys.stdin.buffer.read(1)\n"
        self.process = subprocess.Popen([sys.executable, "-c", prelude + code], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.pid = self.process.pid

    def release(self) -> None:
        self.process.stdin.write(b"x")
        self.process.stdin.flush()

    def readline(self) -> str:
        """One line, read unbuffered so ``readable_within`` sees exactly what is left in the pipe."""
        data = b""
        while not data.endswith(b"\n"):
            chunk = os.read(self.process.stdout.fileno(), 1)
            if not chunk:
                break
            data += chunk
        return data.decode().strip()

    def read(self, size: int) -> bytes:
        return os.read(self.process.stdout.fileno(), size)

    def readable_within(self, seconds: float) -> bool:
        ready, _, _ = select.select([self.process.stdout], [], [], seconds)
        return bool(ready)

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out.decode(), err.decode()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def spawn_waiting() -> Iterator[Callable[[str], Waiting]]:
    children: list[Waiting] = []

    def spawn(code: str) -> Waiting:
        child = Waiting(code)
        children.append(child)
        return child

    yield spawn
    for child in children:
        child.kill()


def write_tree(root: Path, files: dict[str, str]) -> None:
    """A fake cgroupfs: ``{"a/b/memory.max": "max"}`` -> directories and files under ``root``."""
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


@pytest.fixture
def fake_tree(tmp_path: Path) -> Callable[[dict[str, str]], Path]:
    def make(files: dict[str, str]) -> Path:
        write_tree(tmp_path, files)
        return tmp_path

    return make
