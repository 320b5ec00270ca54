"""Make ``zonebuild`` importable when the project is not pip-installed (pyproject maps it to build/)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

if "zonebuild" not in sys.modules and importlib.util.find_spec("zonebuild") is None:
    spec = importlib.util.spec_from_file_location(
        "zonebuild", REPO / "build" / "__init__.py", submodule_search_locations=[str(REPO / "build")]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["zonebuild"] = module
    spec.loader.exec_module(module)
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import shutil  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402

KEEP_MODULES = ("virtio", "squashfs", "loop.ko", "overlay", "xen-blkfront", "libcrc32c", "erofs", "dummy.ko")


@pytest.fixture(scope="session")
def small_kernel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(vmlinuz, lib/modules/<version>) cut from the cached Debian cloud kernel: a handful of real modules,
    so depmod and mksquashfs stay quick."""
    from zonebuild.kernel_image import download_package, extract_deb

    try:
        deb = download_package()
    except Exception as e:  # no apt index or no network here
        pytest.skip(f"kernel package unavailable: {e}")
    tmp = tmp_path_factory.mktemp("kernel")
    full = extract_deb(deb, tmp / "deb")
    modules = tmp / "modules" / full.version
    for ko in full.modules.rglob("*.ko*"):
        rel = ko.relative_to(full.modules)
        if any(k in rel.name for k in KEEP_MODULES):
            (modules / rel.parent).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ko, modules / rel)
    for name in ("modules.builtin", "modules.order", "modules.builtin.modinfo"):
        if (full.modules / name).exists():
            shutil.copyfile(full.modules / name, modules / name)
    subprocess.run(["rm", "-rf", str(tmp / "deb" / "lib")], check=True)
    return full.vmlinuz, modules
