"""Fixtures for tests/rootfs: a fresh busybox bundle per test (Debian's busybox-static)."""

from __future__ import annotations

import os
import shutil

import pytest
from rootfs_harness import BUSYBOX, make_busybox_rootfs


@pytest.fixture(scope="session")
def busybox_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    if not os.path.exists(BUSYBOX):
        pytest.skip("needs busybox-static")
    rootfs = str(tmp_path_factory.mktemp("template") / "rootfs")
    make_busybox_rootfs(rootfs)
    return rootfs


@pytest.fixture
def bundle(tmp_path, busybox_template: str) -> str:
    """A bundle directory whose ``rootfs`` is a copy of the busybox template."""
    shutil.copytree(busybox_template, tmp_path / "rootfs", symlinks=True)
    return str(tmp_path)


@pytest.fixture
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
