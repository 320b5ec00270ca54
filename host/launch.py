"""Bring a zone up: the CLI's arguments -> a zone definition -> its images (``prepare_images``: the kernel, the
initrd, the app image and the system extensions, each a path or a reference pulled into the content store,
verified and cached by content) -> boot files and the config disk -> a booted zone; and ``run``, which follows
the main container to its exit code.

The container's definition takes one path to the config disk: :func:`zone_config` resolves the image's
Entrypoint/Cmd/Env/WorkingDir/User against the command line's overrides (``zonebuild.configdisk``), pins each
disk by sha256 and size, records the digest of every component (kernel, initrd, app, extensions), and
validates the whole config with the zone's own parser; :func:`prepare_boot` writes it (``config.img``, and
``config.json`` beside it to read).

``run`` boots the zone, waits for the ``zone.ready`` event, follows the main container's output over IDM
(``container.logs`` with ``follow``) and exits with its exit code. The zone powers itself off when its main
container exits (config option ``poweroff_on_exit``); we wait for that and kill it only after a timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from host import images, output
from host.backends import Backend, backend_for
from host.bootplan import BootFiles, block_device, extension_device, root_image_device
from host.errors import BackendError, HostError
from host.hostconfig import HostConfig, load_host_config
from host.lifecycle import (
    ZoneExited,
    acknowledge_exit,
    follow_output,
    format_timing,
    last_console_line,
    stop_zone,
    wait_ready,
)
from host.link import ZoneLink
from host.sources import BUILTIN_APP, ImageResolver, check_image_argument
from host.state import ZoneDir, zone_dir
from host.zonebuild_import import ensure_zonebuild
from host.zonedef import MAIN_CONTAINER, NetworkDef, ZoneDef, parse_env

if TYPE_CHECKING:
    from host.backends.nics import TapNic
    from zoneinit.config.document import ZoneConfig

POWEROFF_WAIT = 30.0


# --- what a zone boots from ------------------------------------------------------------------------------------

def definition_from_args(args: argparse.Namespace, config: HostConfig | None = None) -> ZoneDef:
    """``zonehost run``'s arguments (over the host config's defaults) as a zone definition, validated before the
    slow defaults are built or anything is pulled."""
    config = config or load_host_config()
    network = None
    if args.net or args.address:
        network = NetworkDef(address=args.address) if args.address else NetworkDef()
    definition = ZoneDef(
        name=args.name or f"zone-{uuid.uuid4().hex[:8]}",
        kernel_image=args.kernel or config.kernel or "",
        initrd=args.initrd or "",
        app_image=None if args.image in BUILTIN_APP else args.image,
        command=list(args.command) or None,
        env=parse_env(args.env),
        memory_mib=args.memory,
        vcpus=args.vcpus,
        network=network,
        backend=args.backend,
        remove_on_exit=args.rm,
        user_namespace=args.userns,
        cmdline_extra=list(args.kernel_arg),
        extensions=[*config.extensions, *(getattr(args, "extension", None) or [])],
        modules=list(getattr(args, "module", None) or []),
        pull=getattr(args, "pull", None) or config.pull,
    )
    if args.initrd and not Path(args.initrd).is_file():
        raise HostError(f"initrd {args.initrd!r}: no such file")
    for given, what in ((args.image, "image"), (definition.kernel_image, "kernel image"),
                        *((e, "extension") for e in definition.extensions)):
        if given:
            check_image_argument(given, what)
    probe = ZoneDef(**{**definition.__dict__, "kernel_image": definition.kernel_image or "-",
                       "initrd": definition.initrd or "-"})
    probe.validate()
    if not definition.kernel_image:   # none on the command line, in the host config or ZONE_KERNEL: built here
        definition.kernel_image = str(images.default_kernel_image())
    if not definition.initrd:
        definition.initrd = str(images.default_initrd(dev=os.environ.get("ZONE_DEV_INITRD") == "1"))
    return definition


@dataclass
class ZoneImages:
    """Everything a zone boots from, prepared (pulled, verified, unpacked, turned into disks; cached by
    content) before its state directory exists: a pull that fails or an extension that does not fit the kernel
    leaves nothing behind."""

    kernel: images.PreparedKernel
    initrd: Path                              # ours with the kernel's boot modules appended
    root: images.PreparedRoot
    extensions: list[images.PreparedExtension] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)   # kind, ref, digest: the config records them


def prepare_images(definition: ZoneDef, resolver: ImageResolver | None = None) -> ZoneImages:
    """Resolve and prepare the kernel, initrd, app image and system extensions of ``definition``."""
    ensure_zonebuild()
    from zonebuild.digests import sha256_file

    own = resolver is None
    resolver = resolver or ImageResolver(policy=definition.pull)
    try:
        kernel_source = resolver.resolve(definition.kernel_image, "kernel image")
        kernel = images.prepare_kernel(kernel_source.layout)
        initrd = Path(definition.initrd)
        boot_initrd = images.boot_initrd(initrd, kernel)
        app_source = resolver.resolve(definition.app_image or "busybox", "image", builtin=images.default_app_image)
        root = images.prepare_root_image(app_source.layout, user_namespace=definition.user_namespace)
        release = kernel.metadata["KERNEL_VERSION"]
        extensions: list[images.PreparedExtension] = []
        extension_components = []
        for given in definition.extensions:
            source = resolver.resolve(given, "extension")
            extension = images.prepare_extension(source.layout, release, source.label)
            clash = next((e for e in extensions if e.name == extension.name), None)
            if clash is not None:
                raise HostError(f"extension {source.label}: a second extension named {extension.name!r}")
            extensions.append(extension)
            extension_components.append(source.component("extension", extension.name))
    finally:
        if own:
            resolver.close()
    components = [kernel_source.component("kernel"),
                  {"kind": "initrd", "digest": sha256_file(initrd), "ref": str(initrd)},
                  app_source.component("app", MAIN_CONTAINER), *extension_components]
    return ZoneImages(kernel, boot_initrd, root, extensions, components)


def zone_config(definition: ZoneDef, kernel: images.PreparedKernel, root: images.PreparedRoot,
                disk_prefix: str = "vd", extensions: list[images.PreparedExtension] | None = None,
                components: list[dict[str, Any]] | None = None) -> ZoneConfig:
    """The zone config for one main container on root image 0 (and the system extensions' disks after it),
    validated by the zone's own parser (HostError naming the bad field otherwise: a bad -e or user fails here,
    before anything boots)."""
    ensure_zonebuild()
    from zonebuild.configdisk import build_config, container_from_image, disk_entry
    from zoneinit.errors import ZoneConfigError

    try:
        container = container_from_image(MAIN_CONTAINER, "root0", root.config, command=definition.command,
                                         env=definition.env, main=True)
    except ValueError as e:   # a user the image names but the host cannot resolve
        raise HostError("zone config") from e
    document: dict[str, Any] = {
        "version": 1,
        "name": definition.name,
        "hostname": definition.name.replace("_", "-").replace(".", "-"),
        "disks": [
            disk_entry("addons", "addons", block_device(0, disk_prefix), kernel.addons),
            disk_entry("root0", "root", root_image_device(0, disk_prefix), root.path, root.fstype,
                       root.owner_shift),
        ],
        "containers": [container],
        "options": {"poweroff_on_exit": True},
    }
    for i, extension in enumerate(extensions or []):
        document["disks"].append(disk_entry(f"ext{i}", "extension", extension_device(i, 1, disk_prefix),
                                            extension.path))
        document.setdefault("extensions", []).append({
            "name": extension.name, "disk": f"ext{i}", "kernel_releases": list(extension.manifest.kernel_releases),
            "modules": list(extension.manifest.load), "tools": bool(extension.manifest.tools)})
    if definition.modules:
        document["modules"] = list(definition.modules)
    if components:
        document["components"] = components
    if definition.network is not None and definition.network.address:
        document["network"] = network_config(definition.network)
    try:
        return build_config(document)
    except ZoneConfigError as e:
        raise HostError("zone config") from e


def network_config(network: NetworkDef) -> dict[str, Any]:
    import ipaddress

    interface = ipaddress.ip_interface(network.address or "")
    family = "ipv4" if interface.version == 4 else "ipv6"
    address: dict[str, Any] = {"address": str(interface.ip), "prefix": interface.network.prefixlen}
    if network.gateway:
        address["gateway"] = network.gateway
    return {"interface": "eth0", family: address, "dns": list(network.dns)}


def given_config(document: dict[str, Any], kernel: images.PreparedKernel, disk_prefix: str = "vd") -> ZoneConfig:
    """A config document the caller wrote (a pod's: name, hostname, network, options, usually no containers)
    completed with the kernel's addons disk, pinned, and validated by the zone's own parser (HostError naming
    the bad field). Root images the caller lists must already be pinned entries."""
    ensure_zonebuild()
    from zonebuild.configdisk import build_config, disk_entry
    from zoneinit.errors import ZoneConfigError

    document = dict(document)
    disks = [d for d in document.get("disks", []) if not (isinstance(d, dict) and d.get("role") == "addons")]
    document["disks"] = [disk_entry("addons", "addons", block_device(0, disk_prefix), kernel.addons), *disks]
    try:
        return build_config(document)
    except ZoneConfigError as e:
        raise HostError("zone config") from e


def prepare_kernel_only(definition: ZoneDef) -> tuple[images.PreparedKernel, Path, dict[str, Any]]:
    """The kernel (a layout or a reference, resolved like ``zonehost run --kernel``) and the initrd with its
    boot modules, for a zone whose containers come later (a pod's); and the kernel's component record."""
    resolver = ImageResolver(policy=definition.pull)
    try:
        source = resolver.resolve(definition.kernel_image, "kernel image")
        kernel = images.prepare_kernel(source.layout)
    finally:
        resolver.close()
    return kernel, images.boot_initrd(Path(definition.initrd), kernel), source.component("kernel")


def prepare_boot(definition: ZoneDef, zone: ZoneDir, backend: Backend, prepared: ZoneImages | None = None,
                 document: dict[str, Any] | None = None) -> BootFiles:
    """The kernel, initrd, root image and extension disks (``prepared``, else prepared now; cached by
    content) and the zone's own config disk; with ``document``, that config (``given_config``: a pod's) on the
    kernel and initrd alone, no root image of ours."""
    ensure_zonebuild()
    from zonebuild.configdisk import write_config_disk

    if document is not None:
        kernel, initrd, component = prepare_kernel_only(definition)
        document = {**document, "components": [component, *document.get("components", [])]}
        config = given_config(document, kernel, backend.disk_prefix)
        config_disk = write_config_disk(config, zone.disks / "config.img", readable=zone.disks / "config.json")
        return BootFiles(kernel=kernel.image, initrd=initrd, addons=kernel.addons, config_disk=config_disk)
    prepared = prepared or prepare_images(definition)
    config = zone_config(definition, prepared.kernel, prepared.root, backend.disk_prefix, prepared.extensions,
                         prepared.components)
    config_disk = write_config_disk(config, zone.disks / "config.img", readable=zone.disks / "config.json")
    return BootFiles(kernel=prepared.kernel.image, initrd=prepared.initrd, addons=prepared.kernel.addons,
                     config_disk=config_disk, root_images=[prepared.root.path],
                     extensions=[e.path for e in prepared.extensions])


def create_and_boot(definition: ZoneDef, *, daemonize: bool, root: Path | None = None,
                    prepared: ZoneImages | None = None, document: dict[str, Any] | None = None,
                    nics: Sequence[TapNic] = ()) -> tuple[ZoneDir, Backend]:
    """Claim the zone's state dir, prepare its disks and start the hypervisor; returns (zone, backend).

    A pod's shim gives the config ``document`` itself (no image of ours: its containers come later over
    IDM, on hot-plugged disks) and the pod's ``nics``; the VMM inherits their fds (close yours after)."""
    zone = zone_dir(definition.name, root)
    zone.create(definition)
    backend = backend_for(zone, definition)
    try:
        boot = prepare_boot(definition, zone, backend, prepared, document)
        with output.step(f"starting zone {definition.name} ({definition.backend})"):
            backend.boot(definition, boot, daemonize=daemonize, nics=nics)
    except BaseException:
        with contextlib.suppress(HostError, OSError):
            backend.kill()
        zone.remove()
        raise
    return zone, backend


# --- run ----------------------------------------------------------------------------------------------------

def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_zone(args: argparse.Namespace) -> int:
    """``zonehost run``: boot, wait until ready, follow the main container (or detach); its exit code."""
    config = load_host_config()
    definition = definition_from_args(args, config)
    resolver = ImageResolver.from_args(args, config)
    try:
        prepared = prepare_images(definition, resolver)
    finally:
        resolver.close()
    zone, backend = create_and_boot(definition, daemonize=args.detach, prepared=prepared)
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)   # `kill zonehost` stops the zone too
    link = None
    try:
        with output.step(f"booting zone {zone.name} (until PID 1 answers on IDM)"):
            try:
                link = ZoneLink.open(zone, timeout=args.timeout)
            except BackendError as e:
                if backend.wait(2.0):   # the VM is gone: its console says why
                    raise BackendError(f"zone {zone.name!r} stopped during boot (console: "
                                       f"{last_console_line(zone)})") from e
                raise
        ready = wait_ready(link, zone, args.timeout)
        if args.timing:
            print(f"zonehost: {format_timing(ready)}", file=sys.stderr, flush=True)
        if args.detach:
            output.result({"name": zone.name, "ready": ready.get("boot")}, zone.name)
            return 0
        main = ready.get("main") or MAIN_CONTAINER
        with link.share(zone):   # ps/kill/stop/logs from other shells meanwhile
            code = follow_output(link, main)
            acknowledge_exit(link, main)
        zone.update_runtime(exit_code=code)
    except ZoneExited as e:
        _close(link)
        zone.update_runtime(exit_code=e.exit_code)
        print(f"zonehost: {e}", file=sys.stderr, flush=True)
        backend.wait(POWEROFF_WAIT) or stop_zone(zone, timeout=10)
        if definition.remove_on_exit:
            zone.remove()
        return e.exit_code if isinstance(e.exit_code, int) else 1
    except KeyboardInterrupt:
        output.note(f"interrupted: stopping zone {zone.name}")
        _close(link)
        stop_zone(zone, timeout=10)
        if definition.remove_on_exit:
            zone.remove()
        return 130
    except BaseException:
        _close(link)
        if not args.detach or not backend.alive():
            output.note(f"zone {zone.name}: console log in {zone.console_log}")
        with contextlib.suppress(HostError, OSError):
            backend.kill()
        if definition.remove_on_exit:
            zone.remove()
        raise
    finally:
        _close(link)
        signal.signal(signal.SIGTERM, previous_term)
    if not backend.wait(POWEROFF_WAIT):
        output.note(f"zone {zone.name} did not power off within {POWEROFF_WAIT:.0f} s: stopping it")
        stop_zone(zone, timeout=10)
    if definition.remove_on_exit:
        zone.remove()
    return code


def _close(link: ZoneLink | None) -> None:
    if link is not None:
        link.close()
