"""Which kernel modules the zone loads, and when.

* the boot set, at boot (``boot-modules`` phase): the initramfs tree's ``modules.load``/``modules.boot`` list
  (else all of it), minus the file-system modules (loaded on the first mount that needs one) and, outside
  Xen, the ``xen*`` drivers; a driver whose device is absent (ENODEV) is skipped quietly;
* by name (``zone.modules=``, the config's ``modules``, a NIC driver), from the addons tree, else a system
  extension's (in the config's order), else the initramfs one; when the addons image is deferred
  (``defer_addons``) a module the initramfs has is loaded from it, and the addons are mounted (and verified)
  the first time a module is looked for beyond it;
* an extension's own list (the config's ``extensions[].modules``), from that extension's tree;
* a file system's module when a mount meets an unknown type (``MountTable.load_fstype``).

``dep`` and ``loader`` are imported only when a module is actually loaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from styrolite.syscalls import Syscalls

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB

if TYPE_CHECKING:
    from zoneinit.console import ConsoleLog
    from zoneinit.modules.dep import ModuleIndex
    from zoneinit.modules.loader import ModuleLoader

# Loaded when a mount first needs them, not at boot (a zone that never mounts erofs never loads it); the NIC
# drivers when the network phase configures an interface.
LAZY_MODULES = frozenset({"squashfs", "erofs", "overlay", "loop", "ext4", "isofs", "vfat", "fat",
                          "virtio_net", "xen_netfront"})
FSTYPE_MODULES = {"iso9660": "isofs"}

Report = Callable[[str, BaseException], None]


def on_xen() -> bool:
    """Booted as a Xen guest (the drivers to load differ: xen_netfront, xen_evtchn...)."""
    try:
        with open("/sys/hypervisor/type", encoding="ascii") as f:
            return f.read().strip() == "xen"
    except OSError:
        return False


class ZoneModules:
    """The initramfs and addons module trees and the one loader, with the zone's rules for using them."""

    def __init__(self, sys: Syscalls, log: ConsoleLog, report: Report) -> None:
        self.sys = sys
        self.log = log
        self.report = report
        self.boot_index: ModuleIndex | None = None
        self.addons_index: ModuleIndex | None = None
        self.extension_indexes: dict[str, ModuleIndex] = {}   # extension name -> its modules/<release> tree
        self._attach_addons: Callable[[], None] | None = None
        self._loader: ModuleLoader | None = None

    def loader(self) -> ModuleLoader:
        if self._loader is None:
            from zoneinit.modules.loader import ModuleLoader

            self._loader = ModuleLoader.from_kernel(self.sys)
        return self._loader

    def load_boot_set(self, modules_base: str) -> None:
        """The modules shipped in the initramfs that the zone needs at once."""
        from zoneinit.errors import ModuleError
        from zoneinit.modules.dep import ModuleIndex, boot_module_names, modules_root
        from zoneinit.modules.loader import is_no_device

        root = modules_root(modules_base)
        if not os.path.exists(os.path.join(root, "modules.dep")):
            return
        self.boot_index = ModuleIndex.load(root)
        loaded: list[str] = []
        absent: list[str] = []
        listed = boot_module_names(root, self.boot_index)
        needed_by_others = {dep for name in listed for dep in self.boot_index.deps.get(name, [])}
        # the modules asked for (not mere dependencies), minus those that wait (their deps come with them)
        for name in [n for n in listed if n not in needed_by_others and self.wanted_at_boot(n)]:
            try:
                results = self.loader().load(self.boot_index, [name])
            except ModuleError as e:
                if not is_no_device(e):
                    self.report(f"boot module {name}", e)
                else:
                    absent.append(name)
                continue
            loaded += [r.name for r in results if r.outcome == "loaded"]
        self.log.info(f"boot modules: {' '.join(loaded) or 'none'}"
                      + (f" (no device for {' '.join(absent)})" if absent else ""))

    @staticmethod
    def wanted_at_boot(name: str) -> bool:
        """File system modules wait until a mount needs them; Xen drivers are only worth loading under Xen.
        Everything else in the boot set is loaded at once."""
        if name in LAZY_MODULES:
            return False
        if name.startswith("xen"):
            return on_xen()
        return True

    def use_addons(self, addons_dir: str) -> None:
        """Index the modules tree of the mounted addons image (``modules/<release>``, ``lib/modules/...``)."""
        from zoneinit.modules.dep import ModuleIndex, find_addons_modules

        root = find_addons_modules(addons_dir)
        if root is not None:
            self.addons_index = ModuleIndex.load(root)

    def defer_addons(self, attach: Callable[[], None]) -> None:
        """``attach`` mounts the addons image and calls :meth:`use_addons`; it runs the first time a module is
        looked for beyond the initramfs tree (:meth:`ensure_addons`), not now."""
        self._attach_addons = attach

    def ensure_addons(self) -> None:
        """Attach the deferred addons image now (once); a failure is reported, and the addons stay absent."""
        attach, self._attach_addons = self._attach_addons, None
        if attach is not None:
            try:
                attach()
            except Exception as e:
                self.report("addons", e)

    def _beyond_boot_tree(self, name: str) -> None:
        if self.addons_index is None and (self.boot_index is None or name not in self.boot_index):
            self.ensure_addons()

    def use_extension(self, name: str, modules_dir: str) -> None:
        """Index a system extension's ``modules/<release>`` tree (its own modules.dep: it carries the modules
        its modules need, so it resolves on its own)."""
        from zoneinit.modules.dep import ModuleIndex

        self.extension_indexes[name] = ModuleIndex.load(modules_dir)

    def load_named(self, names: list[str], extension: str | None = None) -> None:
        """Load by name from the addons tree, an extension's, or the initramfs one (``extension``: from that
        extension's tree only); each failure is reported on its own."""
        from zoneinit.errors import ModuleError

        if extension is not None:
            indexes = [self.extension_indexes.get(extension)]
            where = f"extension {extension}"
        else:
            indexes = [self.addons_index, *self.extension_indexes.values(), self.boot_index]
            where = "the addons, the extensions or the initramfs modules"
        for name in names:
            if extension is None:
                self._beyond_boot_tree(name)
                indexes = [self.addons_index, *self.extension_indexes.values(), self.boot_index]
            index = next((i for i in indexes if i is not None and name in i), None)
            try:
                if index is None:
                    raise ModuleError(f"module {name!r} is not in {where}")
                results = self.loader().load(index, [name])
                self.log.info(f"module {name}: " + ", ".join(f"{r.name} {r.outcome}" for r in results))
            except ModuleError as e:
                self.report(f"load module {name}", e)

    def load_fstype(self, fstype: str) -> bool:
        """Load the module of a file system the kernel does not know yet (from addons, else the initramfs)."""
        name = FSTYPE_MODULES.get(fstype, fstype)
        self._beyond_boot_tree(name)
        for index in (self.boot_index, self.addons_index):
            if index is not None and name in index:
                try:
                    self.loader().load(index, [name])
                    self.log.info(f"module {name} loaded for a {fstype} mount")
                    return True
                except Exception as e:
                    self.report(f"load module {name} for {fstype}", e)
                    return False
        return False
