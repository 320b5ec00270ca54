"""Fixtures for the client tests: the styrolite executable, the busybox image, one client per module.

A client that is not installed skips its module with the reason; everything else must work (a client
that is installed but fails to start is an error, not a skip).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from clientlab import Containerd, Dockerd, Podman, busybox_archive, styrolite_launcher  # noqa: E402

RUNTIMES = ("runc", "styrolite")


def require(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (apt-get install podman docker.io containerd runc)")


@pytest.fixture(params=RUNTIMES)
def runtime(request) -> str:
    """Each client test runs once with runc (the reference) and once with styrolite."""
    return request.param


@pytest.fixture(scope="session")
def styrolite_executable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the clients run as the ``styrolite`` runtime: the launcher the host installs. A fixture, so a
    compiled binary can replace it in one place."""
    return styrolite_launcher(tmp_path_factory.mktemp("styrolite-bin"))


@pytest.fixture(scope="session")
def busybox_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """busybox-static as a docker-archive (docker load, podman load, ctr image import), built here."""
    return busybox_archive(tmp_path_factory.mktemp("busybox-image"))


@pytest.fixture(scope="module")
def podman(tmp_path_factory, styrolite_executable, busybox_image) -> Iterator[Podman]:
    require("podman", "conmon", "runc")
    client = Podman(tmp_path_factory.mktemp("podman"), styrolite_executable, busybox_image)
    try:
        yield client
    finally:
        client.stop()


@pytest.fixture(scope="module")
def docker(tmp_path_factory, styrolite_executable, busybox_image) -> Iterator[Dockerd]:
    require("dockerd", "containerd", "runc")
    if not Path(Dockerd.CLI).exists():
        pytest.skip(f"not installed: {Dockerd.CLI} (apt-get install docker.io)")
    client = Dockerd(tmp_path_factory.mktemp("docker"), styrolite_executable, busybox_image)
    try:
        yield client
    finally:
        client.stop()


@pytest.fixture(scope="module")
def containerd(tmp_path_factory, styrolite_executable, busybox_image) -> Iterator[Containerd]:
    require("containerd", "ctr", "containerd-shim-runc-v2", "runc")
    client = Containerd(tmp_path_factory.mktemp("containerd"), styrolite_executable, busybox_image)
    try:
        yield client
    finally:
        client.stop()
