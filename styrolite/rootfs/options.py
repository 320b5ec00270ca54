"""OCI mount ``options`` -> mount(2) flags, propagation changes, recursive attributes and fs data.

The table follows runc's: each name sets or clears a flag, applied in order so ``ro,rw`` ends rw;
``r``-prefixed names (``rro``, ``rnosuid``...) become mount_setattr(AT_RECURSIVE) attributes, since
mount(2) cannot change flags of a whole subtree; propagation names become separate mount(2) calls,
because the kernel accepts only one propagation change per call; anything unknown is filesystem data
(``mode=755``, ``size=65536k``, ``newinstance``...).
"""

from __future__ import annotations

from styrolite.records import field, record
from styrolite.syscalls import constants as k

# name -> (clear?, MS_* flag)
_FLAGS: dict[str, tuple[bool, int]] = {
    "defaults": (False, 0),
    "ro": (False, k.MS_RDONLY),
    "rw": (True, k.MS_RDONLY),
    "suid": (True, k.MS_NOSUID),
    "nosuid": (False, k.MS_NOSUID),
    "dev": (True, k.MS_NODEV),
    "nodev": (False, k.MS_NODEV),
    "exec": (True, k.MS_NOEXEC),
    "noexec": (False, k.MS_NOEXEC),
    "sync": (False, k.MS_SYNCHRONOUS),
    "async": (True, k.MS_SYNCHRONOUS),
    "dirsync": (False, k.MS_DIRSYNC),
    "remount": (False, k.MS_REMOUNT),
    "mand": (False, k.MS_MANDLOCK),
    "nomand": (True, k.MS_MANDLOCK),
    "atime": (True, k.MS_NOATIME),
    "noatime": (False, k.MS_NOATIME),
    "diratime": (True, k.MS_NODIRATIME),
    "nodiratime": (False, k.MS_NODIRATIME),
    "relatime": (False, k.MS_RELATIME),
    "norelatime": (True, k.MS_RELATIME),
    "strictatime": (False, k.MS_STRICTATIME),
    "nostrictatime": (True, k.MS_STRICTATIME),
    "nosymfollow": (False, k.MS_NOSYMFOLLOW),
    "symfollow": (True, k.MS_NOSYMFOLLOW),
    "bind": (False, k.MS_BIND),
    "rbind": (False, k.MS_BIND | k.MS_REC),
}

PROPAGATION: dict[str, int] = {
    "private": k.MS_PRIVATE,
    "rprivate": k.MS_PRIVATE | k.MS_REC,
    "shared": k.MS_SHARED,
    "rshared": k.MS_SHARED | k.MS_REC,
    "slave": k.MS_SLAVE,
    "rslave": k.MS_SLAVE | k.MS_REC,
    "unbindable": k.MS_UNBINDABLE,
    "runbindable": k.MS_UNBINDABLE | k.MS_REC,
}

_ATIME_MASK = k.MOUNT_ATTR__ATIME

# name -> (clear?, MOUNT_ATTR_* bit); atime modes replace the whole atime field instead
_RECURSIVE: dict[str, tuple[bool, int]] = {
    "rro": (False, k.MOUNT_ATTR_RDONLY),
    "rrw": (True, k.MOUNT_ATTR_RDONLY),
    "rnosuid": (False, k.MOUNT_ATTR_NOSUID),
    "rsuid": (True, k.MOUNT_ATTR_NOSUID),
    "rnodev": (False, k.MOUNT_ATTR_NODEV),
    "rdev": (True, k.MOUNT_ATTR_NODEV),
    "rnoexec": (False, k.MOUNT_ATTR_NOEXEC),
    "rexec": (True, k.MOUNT_ATTR_NOEXEC),
    "rnodiratime": (False, k.MOUNT_ATTR_NODIRATIME),
    "rdiratime": (True, k.MOUNT_ATTR_NODIRATIME),
    "rnosymfollow": (False, k.MOUNT_ATTR_NOSYMFOLLOW),
    "rsymfollow": (True, k.MOUNT_ATTR_NOSYMFOLLOW),
}
_RECURSIVE_ATIME: dict[str, int] = {
    "rnoatime": k.MOUNT_ATTR_NOATIME,
    "rrelatime": k.MOUNT_ATTR_RELATIME,
    "rstrictatime": k.MOUNT_ATTR_STRICTATIME,
}

_ATIME_FLAGS = k.MS_NOATIME | k.MS_RELATIME | k.MS_STRICTATIME | k.MS_NODIRATIME


@record
class MountOptions:
    flags: int = 0  # MS_* bits to pass to mount(2)
    cleared: int = 0  # MS_* bits the options explicitly cleared (rw, suid...): never re-added from the source
    propagation: list[int] = field(default_factory=list)  # one mount(2) call each, in order
    attr_set: int = 0  # MOUNT_ATTR_* for mount_setattr(AT_RECURSIVE)
    attr_clr: int = 0
    data: list[str] = field(default_factory=list)

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & k.MS_BIND)

    @property
    def has_recursive_attrs(self) -> bool:
        return bool(self.attr_set or self.attr_clr)

    @property
    def sets_atime(self) -> bool:
        return bool((self.flags | self.cleared) & _ATIME_FLAGS)

    def data_string(self) -> str | None:
        return ",".join(self.data) or None


def parse_options(options: list[str]) -> MountOptions:
    """Fold the options in order into one ``MountOptions``."""
    result = MountOptions()
    for option in options:
        if option in _FLAGS:
            clear, flag = _FLAGS[option]
            if clear:
                result.flags &= ~flag
                result.cleared |= flag
            else:
                result.flags |= flag
                result.cleared &= ~flag
        elif option in PROPAGATION:
            result.propagation.append(PROPAGATION[option])
        elif option in _RECURSIVE:
            clear, attr = _RECURSIVE[option]
            if clear:
                result.attr_set &= ~attr
                result.attr_clr |= attr
            else:
                result.attr_set |= attr
                result.attr_clr &= ~attr
        elif option in _RECURSIVE_ATIME:
            result.attr_clr |= _ATIME_MASK
            result.attr_set = (result.attr_set & ~_ATIME_MASK) | _RECURSIVE_ATIME[option]
        else:
            result.data.append(option)
    return result


def propagation_flags(name: str, where: str) -> int:
    """``rslave`` -> MS_SLAVE|MS_REC, for ``linux.rootfsPropagation``; a ConfigError names ``where``."""
    from styrolite.errors import ConfigError

    if name not in PROPAGATION:
        raise ConfigError(where, f"unknown propagation {name!r} (expected one of {', '.join(PROPAGATION)})")
    return PROPAGATION[name]
