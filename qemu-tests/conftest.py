"""Fixtures for the QEMU zone tests: the kernel OCI image, our Nuitka initrd and the busybox app image,
each built once (cached by content in zonebuild's cache: $ZONE_CACHE, else /var/cache/zone), and a ``zonehost``
runner that drives the real CLI in a subprocess against a private state directory.

Every test here boots real zones under QEMU (TCG on this machine), so the directory is skipped as a whole,
with the reason, only when qemu-system-x86_64 is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = float(os.environ.get("ZONE_TEST_BOOT_TIMEOUT", "240"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if shutil.which(QEMU) is None:
        skip = pytest.mark.skip(reason=f"{QEMU} is not installed (apt-get install qemu-system-x86)")
        for item in items:
            item.add_marker(skip)


@dataclass(frozen=True)
class ZoneInputs:
    kernel_image: Path     # OCI layout
    initrd: Path           # Nuitka initrd (compressed cpio)
    busybox_image: Path    # OCI layout


@pytest.fixture(scope="session")
def kernel_image() -> Path:
    """The kernel OCI image (ZONE_TEST_KERNEL, or built from Debian's linux-image-cloud-amd64, cached)."""
    from host import images

    override = os.environ.get("ZONE_TEST_KERNEL")
    return Path(override) if override else images.default_kernel_image()


@pytest.fixture(scope="session")
def zone_inputs(kernel_image: Path) -> ZoneInputs:
    """Kernel image + our Nuitka initrd (ZONE_TEST_INITRD, or built from this tree, cached) + busybox image."""
    from host import images

    override = os.environ.get("ZONE_TEST_INITRD")
    initrd = Path(override) if override else images.default_initrd(dev=False)
    return ZoneInputs(kernel_image, initrd, images.default_app_image())


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class ZoneHost:
    """Runs ``python -m host.cli`` with our images and a private state directory."""

    def __init__(self, inputs: ZoneInputs, state: Path) -> None:
        self.inputs = inputs
        self.state = state
        self.boot_timeout = BOOT_TIMEOUT
        self.env = dict(os.environ, ZONE_STATE=str(state), PYTHONPATH=str(REPO))

    def __call__(self, *args: str, input: str | None = None, timeout: float = BOOT_TIMEOUT + 60) -> Result:
        result = subprocess.run([sys.executable, "-m", "host.cli", *args], cwd=REPO, env=self.env, input=input,
                                capture_output=True, text=True, timeout=timeout, check=False)
        return Result(result.returncode, result.stdout, result.stderr)

    def run(self, *args: str, **kwargs: object) -> Result:
        """``zonehost run`` with the session's kernel and initrd."""
        return self("run", "--kernel", str(self.inputs.kernel_image), "--initrd", str(self.inputs.initrd),
                    "--timeout", str(BOOT_TIMEOUT), *args, **kwargs)

    def spawn(self, *args: str, **popen: Any) -> subprocess.Popen[bytes]:
        """Any zonehost command in the background, with caller-chosen stdio (e.g. a pty)."""
        return subprocess.Popen([sys.executable, "-m", "host.cli", *args], cwd=REPO, env=self.env, **popen)

    def spawn_run(self, *args: str) -> subprocess.Popen[str]:
        """``zonehost run`` in the background (for tests that act on the zone while it runs)."""
        return subprocess.Popen([sys.executable, "-m", "host.cli", "run", "--kernel", str(self.inputs.kernel_image),
                                 "--initrd", str(self.inputs.initrd), "--timeout", str(BOOT_TIMEOUT), *args],
                                cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def console(self, name: str) -> str:
        try:
            return (self.state / name / "console.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop_all(self) -> None:
        for zone in sorted(p.name for p in self.state.iterdir()) if self.state.is_dir() else []:
            self("rm", "-f", zone, timeout=60)


@pytest.fixture(scope="session")
def zonehost(zone_inputs: ZoneInputs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZoneHost]:
    host = ZoneHost(zone_inputs, tmp_path_factory.mktemp("zones"))
    yield host
    host.stop_all()
