"""System extension images (docs/images.md, "System extension images"), PID 1's side.

Each extension the config lists is on a disk of role ``extension``. In the config's order:

1. an extension whose modules are built for other kernel releases is refused (the host refuses it before
   booting; this is the zone's own check, and it fails closed: the disk is not even mounted);
2. its disk is verified (sha256, in a forked child) and mounted read-only at /run/zone/extensions/<name>, like
   every disk (``DiskStore``);
3. its ``modules/<release>`` tree is indexed (its own modules.dep: the extension carries what its modules
   need) and the modules the config asks for are loaded from it, dependencies first;
4. its ``firmware/`` joins the firmware search path;
5. its ``bin/`` and ``lib/`` are recorded for zone-level exec when the config offers its tools. Containers
   never see them: nothing of /run/zone is in a container's root.

One extension that fails is reported and the others go on. Imported only when the config has extensions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zoneinit.errors import ZoneInitError

if TYPE_CHECKING:
    from zoneinit.config.plan import ExtensionPlan
    from zoneinit.modules.policy import ZoneModules
    from zoneinit.mounts.disks import DiskStore


class ExtensionMismatch(ZoneInitError):
    """The extension's modules are built for other kernel releases than the one the zone runs."""


def fits(extension: ExtensionPlan, release: str) -> bool:
    """An extension without modules fits every kernel; one with modules only the releases it names."""
    return not extension.kernel_releases or release in extension.kernel_releases


def attach(extension: ExtensionPlan, disks: DiskStore, modules: ZoneModules, *, base: str,
           release: str) -> dict[str, Any]:
    """Verify, mount and use one extension; its entry for zone.info (and zone-level exec)."""
    if not fits(extension, release):
        raise ExtensionMismatch(f"extension {extension.name} is built for kernel "
                                f"{', '.join(extension.kernel_releases)}, this zone runs {release}: not mounted")
    root = disks.path(extension.disk, target=os.path.join(base, extension.name))
    info: dict[str, Any] = {"name": extension.name, "disk": extension.disk, "path": root,
                            "modules": list(extension.modules), "tools": False}
    if extension.kernel_releases:
        tree = os.path.join(root, "modules", release)
        if os.path.exists(os.path.join(tree, "modules.dep")):
            modules.use_extension(extension.name, tree)
            info["modules_dir"] = tree
        elif extension.modules:
            raise ZoneInitError(f"extension {extension.name}: no modules/{release}/modules.dep on its disk")
    if extension.modules:
        modules.load_named(list(extension.modules), extension=extension.name)
    if extension.tools:
        bin_dir, lib_dir = os.path.join(root, "bin"), os.path.join(root, "lib")
        info.update(tools=os.path.isdir(bin_dir), bin=bin_dir, lib=lib_dir if os.path.isdir(lib_dir) else None)
    firmware = os.path.join(root, "firmware")
    if os.path.isdir(firmware):
        info["firmware"] = firmware
    return info


def attach_all(extensions: list[ExtensionPlan], disks: DiskStore, modules: ZoneModules, *, base: str,
               firmware_path: str, addons_dir: str | None, report: Callable[[str, BaseException], None],
               release: str | None = None, firmware_param: str | None = None) -> list[dict[str, Any]]:
    """Every extension in order; then one firmware search path over the addons' and theirs."""
    release = release or os.uname().release
    attached = []
    for extension in extensions:
        try:
            attached.append(attach(extension, disks, modules, base=base, release=release))
        except Exception as e:
            report(f"extension {extension.name}", e)
    sources = [info["firmware"] for info in attached if "firmware" in info]
    if sources:
        from zoneinit.modules.firmware import SEARCH_PATH, link_tree, set_search_path

        addons_firmware = os.path.join(addons_dir, "firmware") if addons_dir else None
        if addons_firmware and os.path.isdir(addons_firmware):
            sources.insert(0, addons_firmware)
        try:
            link_tree(sources, firmware_path)
            set_search_path(firmware_path, firmware_param or SEARCH_PATH)
        except OSError as e:
            report("extension firmware search path", e)
    return attached
