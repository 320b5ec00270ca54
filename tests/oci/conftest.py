"""Session fixtures: one real registry (TLS + htpasswd) filled by skopeo with the test images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ocisupport import PushedImages, busybox_layer, random_layer
from registrylab import LayoutBuilder, Registry, running_registry, tar_of

from zoneoci.client import RegistryClient
from zoneoci.hosts import RegistryHosts
from zoneoci.store import ContentStore


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="session")
def images(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> PushedImages:
    """Pushed with skopeo: app (busybox + one layer) as Docker v2s2 and as OCI; multi (4 layers); an index
    with linux/amd64 and linux/arm64; a single linux/arm64 image."""
    layout = tmp_path_factory.mktemp("layouts") / "src"
    builder = LayoutBuilder(layout)
    base = busybox_layer()
    extra = tar_of({"etc/app.conf": b"answer=42\n"})
    app = builder.image([base, extra], cmd=["cat", "/etc/app.conf"])
    builder.name(app, "app")
    multi = builder.image([base] + [random_layer(f"data/blob{i}", 256 << 10, i) for i in range(3)])
    builder.name(multi, "multi")
    amd = builder.image([base, tar_of({"arch": b"amd64\n"})], arch="amd64")
    arm = builder.image([base, tar_of({"arch": b"arm64\n"})], arch="arm64")
    builder.index([amd, arm], "multiarch")
    builder.name(arm, "armonly")
    repos = {"v2s2": "test/app:v2s2", "oci": "test/app:oci", "multi": "test/multi:1", "index": "test/multiarch:1",
             "armonly": "test/armonly:1"}
    registry.skopeo_copy(f"oci:{layout}:app", repos["v2s2"], fmt="v2s2")
    registry.skopeo_copy(f"oci:{layout}:app", repos["oci"], fmt="oci")
    registry.skopeo_copy(f"oci:{layout}:multi", repos["multi"], fmt="oci")
    registry.skopeo_copy(f"oci:{layout}:multiarch", repos["index"], all_images=True)
    registry.skopeo_copy(f"oci:{layout}:armonly", repos["armonly"], fmt="oci")
    return PushedImages(base, layout, repos)


@pytest.fixture
def hosts(registry: Registry) -> RegistryHosts:
    return RegistryHosts.load(registry.registries_conf, (registry.certs_d,))


@pytest.fixture
def client(registry: Registry, hosts: RegistryHosts) -> Iterator[RegistryClient]:
    with RegistryClient(hosts, auth_paths=[registry.authfile]) as c:
        yield c


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "store")
