"""A zone composed entirely from images pulled by reference (issue 14): the kernel image and both system extensions
published by ``zonebuild.publish`` (our push) and the app pushed by skopeo (Docker v2s2), all to a real registry
(Debian's docker-registry, TLS with a CA made here, htpasswd auth) started and stopped here; booted for real
(QEMU, the Debian cloud kernel, our Nuitka initrd) with ``zonehost run --kernel REF --extension REF ... REF``.

In the zone: the kernel-modules extension's btrfs is loaded (and makes a real btrfs file system with its own
mkfs.btrfs), the debug-tools extension's strace, ip and tcpdump run through the zone-level exec, the container
sees none of it, and ``zonehost ps --json`` and zone.info report the digest of every component.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from registrylab import Registry, running_registry  # noqa: E402

NAME = "composed"
LONG_RUNNING = ["sh", "-c", "trap 'exit 0' TERM; echo started; while true; do sleep 1; done"]


def describe(zonehost, result) -> str:
    return f"rc={result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-3000:]}\nconsole:\n" \
           f"{zonehost.console(NAME)[-4000:]}"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def published(registry: Registry) -> dict[str, str]:
    """kernel, debug-tools, fs-extra (zonebuild.publish) and the app (skopeo): name -> pinned reference."""
    done = subprocess.run([sys.executable, "-m", "zonebuild.publish", registry.host, "--json", "-q",
                           *registry.client_options()], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr
    refs = json.loads(done.stdout)
    from host import images

    registry.skopeo_copy(f"oci:{images.default_app_image()}:busybox:latest", "compose/busybox:1", fmt="v2s2")
    app = f"{registry.host}/compose/busybox:1"
    refs["app"] = f"{app}@{registry.skopeo_inspect('compose/busybox:1', raw=False)['Digest']}"
    return refs


@pytest.fixture(scope="module")
def composed(zonehost, registry: Registry, published: dict[str, str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    store = tmp_path_factory.mktemp("content") / "store"
    result = zonehost("--json", "run", "-d", "--name", NAME, "--memory", "512", "--timeout", str(zonehost.boot_timeout),
                      "--initrd", str(zonehost.inputs.initrd), "--kernel", published["kernel"],
                      "--extension", published["debug-tools"], "--extension", published["fs-extra"],
                      "--module", "btrfs", "--module", "loop", "--store", str(store), *registry.client_options(),
                      f"{registry.host}/compose/busybox:1", "--", *LONG_RUNNING)
    assert result.returncode == 0, describe(zonehost, result)
    yield json.loads(result.stdout)
    zonehost("rm", "-f", NAME, timeout=120)


def test_the_kernel_modules_extension_is_loaded(zonehost, composed) -> None:
    modules = zonehost("exec", "--zone", NAME, "cat", "/proc/modules", timeout=120)
    assert modules.returncode == 0, describe(zonehost, modules)
    assert any(line.startswith("btrfs ") for line in modules.stdout.splitlines()), modules.stdout
    script = ("truncate -s 160M /tmp/b.img && mkfs.btrfs -q /tmp/b.img >/dev/null && mkdir -p /mnt/b && "
              "mount -t btrfs -o loop /tmp/b.img /mnt/b && echo on-btrfs > /mnt/b/file && cat /mnt/b/file && "
              "grep ' /mnt/b ' /proc/mounts && umount /mnt/b")
    made = zonehost("exec", "--zone", NAME, "sh", "-c", script, timeout=300)
    assert made.returncode == 0, describe(zonehost, made)
    assert made.stdout.splitlines()[0] == "on-btrfs" and " /mnt/b btrfs " in made.stdout


def test_debug_tools_run_in_the_zone_level_exec(zonehost, composed) -> None:
    traced = zonehost("exec", "--zone", NAME, "strace", "-e", "trace=uname", "uname", "-r", timeout=120)
    assert traced.returncode == 0, describe(zonehost, traced)
    assert traced.stdout.strip().endswith("cloud-amd64") and 'uname({sysname="Linux"' in traced.stderr
    # the NIC-less namespace of PID 1 and, through nsenter, the containers' workload namespace
    links = zonehost("exec", "--zone", NAME, "sh", "-c",
                     "ip -br link && nsenter --net=/run/zone/netns/workload ip -br link && tcpdump --version",
                     timeout=120)
    assert links.returncode == 0, describe(zonehost, links)
    assert links.stdout.count("lo ") == 2 and "tcpdump version 4.99" in links.stdout
    terminal = zonehost("exec", "-t", "--zone", NAME, "sh", "-c", "tty && id -u", timeout=120)
    assert terminal.returncode == 0 and "/dev/pts/" in terminal.stdout, describe(zonehost, terminal)
    where = zonehost("exec", "--zone", NAME, "sh", "-c", "command -v strace; command -v mkfs.btrfs", timeout=120)
    assert where.stdout.split() == ["/run/zone/extensions/debug-tools/bin/strace",
                                    "/run/zone/extensions/fs-extra/bin/mkfs.btrfs"]


def test_the_container_sees_no_extension(zonehost, composed) -> None:
    inside = zonehost("exec", NAME, "sh", "-c", "ls /run/zone 2>&1; command -v strace || command -v mkfs.btrfs || "
                      "command -v tcpdump || echo none-of-them", timeout=120)
    assert inside.returncode == 0, describe(zonehost, inside)
    assert "No such file or directory" in inside.stdout and inside.stdout.strip().endswith("none-of-them")
    assert "/run/zone/extensions" not in inside.stdout


def test_every_component_is_pinned_and_reported(zonehost, composed, published: dict[str, str]) -> None:
    rows = {row["name"]: row for row in json.loads(zonehost("--json", "ps").stdout)}
    components = rows[NAME]["components"]
    by_kind = {(c["kind"], c.get("name")): c for c in components}
    assert by_kind[("kernel", None)]["digest"] == published["kernel"].split("@")[1]
    assert by_kind[("extension", "debug-tools")]["digest"] == published["debug-tools"].split("@")[1]
    assert by_kind[("extension", "fs-extra")]["digest"] == published["fs-extra"].split("@")[1]
    assert by_kind[("app", "main")]["digest"] == published["app"].split("@")[1]
    assert by_kind[("initrd", None)]["digest"].startswith("sha256:")
    inspected = json.loads(zonehost("--json", "inspect", NAME).stdout)
    info = inspected["info"]
    assert info["components"] == components                        # zone.info: as the zone's config disk has it
    mounted = {e["name"]: e for e in info["extensions"]}
    assert mounted["debug-tools"]["tools"] and mounted["debug-tools"]["path"] == "/run/zone/extensions/debug-tools"
    assert mounted["fs-extra"]["modules_dir"].startswith("/run/zone/extensions/fs-extra/modules/")
    assert not info["errors"], info["errors"]
