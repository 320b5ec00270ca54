"""Zones composed from images pulled by reference, up to the config disk (no VM: qemu-tests boot one): zonehost's
image verbs, the default kernel reference from the host config, the digests the config records, and an extension
built for another kernel refused before anything boots. Against a real registry (tests/registrylab.py: Debian's
docker-registry with TLS and htpasswd, filled with skopeo), started and stopped here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from registrylab import LayoutBuilder, Registry, running_registry, tar_of  # noqa: E402

pytestmark = pytest.mark.slow
OLD_RELEASE = "5.10.0-bogus"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def app_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    layout = tmp_path_factory.mktemp("layouts") / "app"
    builder = LayoutBuilder(layout)
    builder.name(builder.image([tar_of({"bin/hello": b"#!/bin/sh\necho hi\n"}), tar_of({"etc/app": b"1\n"})],
                               cmd=["/bin/hello"]), "app")
    return layout


def _extension_layout(tmp_path: Path, name: str, release: str | None) -> Path:
    from zonebuild.extension import ExtensionManifest, write_extension_image

    tree = tmp_path / f"{name}-tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "hello-ext").write_text("#!/bin/sh\necho ext\n")
    (tree / "bin" / "hello-ext").chmod(0o755)
    modules: tuple[str, ...] = ()
    if release:
        (tree / "modules" / release / "kernel").mkdir(parents=True)
        (tree / "modules" / release / "kernel" / "oldfs.ko").write_bytes(b"\0")
        (tree / "modules" / release / "modules.dep").write_text("kernel/oldfs.ko:\n")
        modules = ("oldfs",)
    manifest = ExtensionManifest(name, "1", (release,) if release else (), modules, ("hello-ext",))
    return write_extension_image(tree, manifest, tmp_path / f"{name}-layout", tmp_path / f"{name}-work")


def zonehost(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "host.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def skopeo_digest(registry: Registry, ref: str) -> str:
    done = subprocess.run(["skopeo", "inspect", "--cert-dir", str(registry.certs_d / registry.host), "--creds",
                           "zoneuser:s3cret-pass", f"docker://{ref}"], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)["Digest"]


def test_image_verbs(registry: Registry, app_layout: Path, tmp_path: Path) -> None:
    registry.skopeo_copy(f"oci:{app_layout}:app", "compose/app:1", fmt="v2s2")
    ref = f"{registry.host}/compose/app:1"
    store = ["--store", str(tmp_path / "store"), *registry.client_options()]
    first = zonehost("pull", ref, *store)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == skopeo_digest(registry, ref)
    assert "3 blobs" in first.stderr
    second = zonehost("pull", ref, *store)
    assert second.returncode == 0 and "0 B downloaded" in second.stderr, second.stderr
    listed = json.loads(zonehost("--json", "images", *store).stdout)
    assert [(i["name"], i["digest"]) for i in listed] == [(ref, first.stdout.strip())]
    pushed = zonehost("push", ref, f"{registry.host}/compose/copy:1", *store)
    assert pushed.returncode == 0, pushed.stderr
    assert skopeo_digest(registry, f"{registry.host}/compose/copy:1") == first.stdout.strip()
    removed = zonehost("rmi", ref, *store)
    assert removed.returncode == 0 and f"untagged: {ref}" in removed.stdout
    assert json.loads(zonehost("--json", "images", *store).stdout) == []
    assert zonehost("prune", *store).returncode == 0
    missing = zonehost("pull", f"{registry.host}/compose/nothing:1", *store)
    assert missing.returncode == 1
    assert missing.stderr.splitlines()[-1].startswith(f"zonehost: pull {registry.host}/compose/nothing:1: ")
    usage = zonehost("rmi")
    assert usage.returncode == 2 and len(usage.stderr.splitlines()) == 1


@pytest.fixture(scope="module")
def kernel_ref(registry: Registry) -> str:
    """The kernel image zonebuild builds here, published with zonebuild.publish (our push)."""
    done = subprocess.run([sys.executable, "-m", "zonebuild.publish", registry.host, "--only", "kernel", "--json",
                           "-q", *registry.client_options()], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["kernel"]


def _host_config(tmp_path: Path, registry: Registry, kernel: str) -> dict[str, str]:
    config = tmp_path / "zonehost.toml"
    config.write_text(f'[images]\nkernel = "{kernel}"\npull = "missing"\n\n[registry]\n'
                      f'store = "{tmp_path / "store"}"\nauthfile = "{registry.authfile}"\n'
                      f'cert_dir = "{registry.certs_d}"\nregistries_conf = "{registry.registries_conf}"\n')
    return {"ZONE_HOST_CONFIG": str(config), "ZONE_STATE": str(tmp_path / "zones")}


@pytest.mark.root
def test_an_extension_for_another_kernel_is_refused_before_boot(registry: Registry, kernel_ref: str,
                                                                 tmp_path: Path) -> None:
    layout = _extension_layout(tmp_path, "oldfs", OLD_RELEASE)
    registry.skopeo_copy(f"oci:{layout}", "compose/oldfs:1", fmt="oci")
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"\0" * 512)   # never booted: the refusal comes first
    env = _host_config(tmp_path, registry, kernel_ref)
    done = zonehost("-q", "run", "--initrd", str(initrd), "--extension", f"{registry.host}/compose/oldfs:1",
                    "--name", "misfit", "busybox", env=env)
    assert done.returncode == 1
    release = kernel_ref.split("@")[0].rsplit(":", 1)[1]
    pinned = f"{registry.host}/compose/oldfs:1@{skopeo_digest(registry, f'{registry.host}/compose/oldfs:1')}"
    assert done.stderr.splitlines() == [f"zonehost: extension oldfs 1 ({pinned}) is built for kernel {OLD_RELEASE}; "
                                        f"the zone's kernel is {release}: refused before boot"]
    assert not (tmp_path / "zones").exists() or not any((tmp_path / "zones").iterdir())
    # the default kernel reference (host config) was pulled into the store named there
    names = [i["name"] for i in json.loads(zonehost("--json", "images", env=env).stdout)]
    kernel_name, kernel_digest = kernel_ref.split("@")
    assert f"{kernel_name.rsplit(':', 1)[0]}@{kernel_digest}" in names and f"{registry.host}/compose/oldfs:1" in names


@pytest.mark.root
def test_the_config_disk_records_every_component(registry: Registry, kernel_ref: str, app_layout: Path,
                                                 tmp_path: Path) -> None:
    from host.launch import prepare_images, zone_config
    from host.sources import ImageResolver
    from host.zonedef import ZoneDef

    registry.skopeo_copy(f"oci:{app_layout}:app", "compose/app:oci", fmt="oci")
    app = f"{registry.host}/compose/app:oci"
    tools = _extension_layout(tmp_path, "hello-tools", None)
    registry.skopeo_copy(f"oci:{tools}", "compose/hello-tools:1", fmt="oci")
    tools_digest = skopeo_digest(registry, f"{registry.host}/compose/hello-tools:1")
    pinned_tools = f"{registry.host}/compose/hello-tools@{tools_digest}"
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"initrd\n")
    options = dict(store=str(tmp_path / "store"), authfile=str(registry.authfile), cert_dir=str(registry.certs_d),
                   registries_conf=str(registry.registries_conf))
    definition = ZoneDef(name="composed", kernel_image=kernel_ref, initrd=str(initrd), app_image=app,
                         extensions=[pinned_tools], modules=["dummy"])
    resolver = ImageResolver(policy="missing", **options)
    try:
        prepared = prepare_images(definition, resolver)
    finally:
        resolver.close()
    config = zone_config(definition, prepared.kernel, prepared.root, extensions=prepared.extensions,
                         components=prepared.components)
    by_kind = {c.kind: c for c in config.components}
    assert by_kind["kernel"].digest == kernel_ref.split("@")[1] and by_kind["kernel"].ref == kernel_ref
    assert by_kind["app"].digest == skopeo_digest(registry, app) and by_kind["app"].ref.startswith(app)
    assert by_kind["extension"].digest == tools_digest and by_kind["extension"].name == "hello-tools"
    assert by_kind["initrd"].digest.startswith("sha256:")
    (extension,) = config.extensions
    assert (extension.name, extension.disk, extension.tools, extension.kernel_releases) == \
        ("hello-tools", "ext0", True, [])
    assert config.disk("ext0").device == "/dev/vdd" and config.disk("ext0").role == "extension"
    assert config.modules == ["dummy"]
    # pinned by digest, everything is in the store now: with pull "never" there is not even a registry client
    offline = ImageResolver(policy="never", **options)
    again = prepare_images(ZoneDef(name="again", kernel_image=kernel_ref, initrd=str(initrd),
                                   app_image=f"{app.split(':oci')[0]}@{by_kind['app'].digest}",
                                   extensions=[pinned_tools]), offline)
    assert [c["digest"] for c in again.components] == [c.digest for c in config.components]


def test_extension_disks_follow_the_root_images(tmp_path: Path) -> None:
    from host.backends.qemu import qemu_command
    from host.bootplan import BootFiles, extension_device
    from host.state import zone_dir
    from host.zonedef import ZoneDef

    files = {name: tmp_path / name for name in ("k", "i", "a", "c", "r", "e0", "e1")}
    boot = BootFiles(kernel=files["k"], initrd=files["i"], addons=files["a"], config_disk=files["c"],
                     root_images=[files["r"]], extensions=[files["e0"], files["e1"]])
    assert [(d.role, d.serial) for d in boot.disks()] == [
        ("addons", "zone-addons"), ("config", "zone-config"), ("root0", "zone-root0"), ("ext0", "zone-ext0"),
        ("ext1", "zone-ext1")]
    assert (extension_device(0), extension_device(1, prefix="xvd"), extension_device(0, root_images=2)) == \
        ("/dev/vdd", "/dev/xvde", "/dev/vde")
    argv = qemu_command(ZoneDef(name="z", kernel_image="k", initrd="i"), zone_dir("z", tmp_path), boot)
    drives = [a for a in argv if a.startswith("file=")]
    assert [d.split(",")[0] for d in drives][-2:] == [f"file={files['e0']}", f"file={files['e1']}"]
    assert all("readonly=on" in d for d in drives)
