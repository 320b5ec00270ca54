"""Every mount PID 1 makes, remembered so shutdown can undo them in reverse order."""

from __future__ import annotations

import errno
import os
from collections import namedtuple
from collections.abc import Callable

from styrolite.syscalls import LINUX, KernelError, Syscalls
from styrolite.syscalls.constants import MNT_DETACH, MS_BIND, MS_RDONLY, MS_REMOUNT

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB
if TYPE_CHECKING:
    pass


# source: str | None; target: str; fstype: str | None; flags: int; data: str | None; essential: bool (proc,
# sys, dev...: left in place at shutdown, PID 1 still uses them). A collections.namedtuple: typing.NamedTuple's
# class syntax would import typing into PID 1.
MountRecord = namedtuple("MountRecord", ("source", "target", "fstype", "flags", "data", "essential"),
                         defaults=(False,))


class MountTable:
    def __init__(self, sys: Syscalls = LINUX) -> None:
        self.sys = sys
        self.records: list[MountRecord] = []
        # Called with a file system type the kernel does not know (mount: ENODEV); returns True if it loaded
        # the module, and the mount is retried once. File system modules are thus loaded only when used.
        self.load_fstype: Callable[[str], bool] | None = None

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None,
              *, essential: bool = False, mkdir: bool = True, tolerate_busy: bool = False) -> MountRecord | None:
        """Mount and remember. ``tolerate_busy``: EBUSY means something is already mounted there (returns None)."""
        if mkdir:
            os.makedirs(target, mode=0o755, exist_ok=True)
        try:
            self._mount_loading_fstype(source, target, fstype, flags, data)
        except KernelError as e:
            if tolerate_busy and e.errno == errno.EBUSY:
                return None
            raise
        record = MountRecord(source, target, fstype, flags, data, essential)
        self.records.append(record)
        return record

    def _mount_loading_fstype(self, source: str | None, target: str, fstype: str | None, flags: int,
                              data: str | None) -> None:
        try:
            self.sys.mount(source, target, fstype, flags, data)
        except KernelError as e:
            if e.errno != errno.ENODEV or not fstype or self.load_fstype is None or not self.load_fstype(fstype):
                raise
            self.sys.mount(source, target, fstype, flags, data)

    def bind(self, source: str, target: str, *, readonly: bool = False) -> MountRecord | None:
        if not os.path.exists(target):
            if os.path.isdir(source):
                os.makedirs(target, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                open(target, "a").close()
        record = self.mount(source, target, None, MS_BIND, mkdir=False)
        if readonly:
            self.sys.mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
        return record

    def forget_under(self, prefix: str) -> list[MountRecord]:
        """Drop (and return) the records at or below ``prefix``, newest first, for the caller to unmount."""
        prefix = prefix.rstrip("/")
        mine = [r for r in self.records if r.target == prefix or r.target.startswith(prefix + "/")]
        self.records = [r for r in self.records if r not in mine]
        return list(reversed(mine))

    def unmount_under(self, prefix: str) -> list[tuple[str, BaseException]]:
        return self._unmount(self.forget_under(prefix))

    def unmount_all(self, include_essential: bool = False) -> list[tuple[str, BaseException]]:
        """Unmount in reverse order of mounting; a busy mount is detached lazily. Returns the failures."""
        todo = [r for r in reversed(self.records) if include_essential or not r.essential]
        self.records = [r for r in self.records if r not in todo]
        return self._unmount(todo)

    def _unmount(self, records: list[MountRecord]) -> list[tuple[str, BaseException]]:
        failures: list[tuple[str, BaseException]] = []
        for record in records:
            try:
                self.sys.umount2(record.target, 0)
            except KernelError as e:
                if e.errno == errno.EBUSY:
                    try:
                        self.sys.umount2(record.target, MNT_DETACH)
                        continue
                    except KernelError as detach_error:
                        failures.append((record.target, detach_error))
                        continue
                if e.errno not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not mounted any more
                    failures.append((record.target, e))
        return failures
