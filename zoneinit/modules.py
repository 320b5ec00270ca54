"""Kernel modules by name, in ``modules.dep`` order, through finit_module(2).

``modules.dep`` maps each module file to the files it needs (``kernel/fs/foo.ko.xz: kernel/lib/bar.ko.xz``).
We resolve a name to its file, order its dependencies depth-first (dependencies before dependents, each
once, cycles reported) and load each with finit_module. Loading is idempotent: a module already in
/proc/modules, built in (``modules.builtin``), or answered with EEXIST counts as loaded.

Compressed modules (.ko.xz, .ko.zst, .ko.gz): if the kernel decompresses modules itself (it says which
format in /sys/module/compression) the file goes to finit_module with MODULE_INIT_COMPRESSED_FILE;
otherwise Python decompresses it into a memfd (lzma, zstandard when installed, zlib) and that is loaded.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from styrolite.syscalls import LINUX, KernelError, Syscalls
from styrolite.syscalls.constants import MODULE_INIT_COMPRESSED_FILE
from zoneinit.errors import ModuleError

COMPRESSION_BY_SUFFIX = {".xz": "xz", ".zst": "zstd", ".gz": "gzip"}


def normalize(name: str) -> str:
    """Module names treat '-' and '_' alike (the kernel stores '_')."""
    return name.strip().replace("-", "_")


def module_name(path: str) -> str:
    """``kernel/drivers/net/dummy.ko.zst`` -> ``dummy``."""
    base = os.path.basename(path)
    for suffix in COMPRESSION_BY_SUFFIX:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    if base.endswith(".ko"):
        base = base[:-3]
    return normalize(base)


def compression_of(path: str) -> str | None:
    for suffix, fmt in COMPRESSION_BY_SUFFIX.items():
        if path.endswith(suffix):
            return fmt
    return None


@dataclass
class ModuleIndex:
    """One ``/lib/modules/<release>`` tree: where each module is and what it needs."""

    root: str
    paths: dict[str, str] = field(default_factory=dict)        # name -> path relative to root
    deps: dict[str, list[str]] = field(default_factory=dict)   # name -> names it needs
    builtin: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, root: str, dep_text: str, builtin_text: str = "") -> ModuleIndex:
        index = cls(root)
        for number, raw in enumerate(dep_text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            target, sep, needs = line.partition(":")
            if not sep:
                raise ModuleError(f"{root}/modules.dep line {number}: no ':' in {raw!r}")
            name = module_name(target)
            index.paths[name] = target.strip()
            index.deps[name] = [module_name(d) for d in needs.split()]
        index.builtin = {module_name(line) for line in builtin_text.split() if line}
        return index

    @classmethod
    def load(cls, root: str) -> ModuleIndex:
        try:
            with open(os.path.join(root, "modules.dep"), encoding="utf-8") as f:
                dep_text = f.read()
        except OSError as e:
            raise ModuleError(f"read {root}/modules.dep") from e
        builtin_text = ""
        try:
            with open(os.path.join(root, "modules.builtin"), encoding="utf-8") as f:
                builtin_text = f.read()
        except OSError:
            pass  # optional: without it a built-in module is simply "not found" here
        return cls.parse(root, dep_text, builtin_text)

    def __contains__(self, name: str) -> bool:
        key = normalize(name)
        return key in self.paths or key in self.builtin

    def path_of(self, name: str) -> str:
        return os.path.join(self.root, self.paths[normalize(name)])

    def order(self, names: Iterable[str]) -> list[str]:
        """Every module needed for ``names``, dependencies first, each once (built-ins left out)."""
        ordered: list[str] = []
        done: set[str] = set()
        for requested in names:
            self._visit(normalize(requested), done, [], ordered, requested_by=None)
        return ordered

    def _visit(self, name: str, done: set[str], stack: list[str], ordered: list[str], requested_by: str | None) -> None:
        if name in done:
            return
        if name in stack:
            cycle = " -> ".join([*stack[stack.index(name):], name])
            raise ModuleError(f"dependency cycle in {self.root}/modules.dep: {cycle}")
        if name not in self.paths:
            if name in self.builtin:
                done.add(name)
                return
            needed = f" (needed by {requested_by})" if requested_by else ""
            raise ModuleError(f"module {name!r} not found in {self.root}/modules.dep{needed}")
        stack.append(name)
        for dep in self.deps.get(name, []):
            self._visit(dep, done, stack, ordered, requested_by=name)
        stack.pop()
        done.add(name)
        ordered.append(name)


def kernel_module_compression(path: str = "/sys/module/compression") -> str | None:
    """The format the kernel decompresses itself (CONFIG_MODULE_DECOMPRESS), or None."""
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None


def loaded_modules(path: str = "/proc/modules") -> set[str]:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return {line.split(" ", 1)[0] for line in f if line.strip()}
    except OSError:
        return set()


def decompress(data: bytes, fmt: str) -> bytes:
    """Decompress a module image in Python when the kernel can't."""
    if fmt == "xz":
        import lzma

        return lzma.decompress(data)
    if fmt == "gzip":
        import zlib

        return zlib.decompress(data, wbits=47)
    if fmt == "zstd":
        try:
            import zstandard
        except ImportError as e:
            raise ModuleError("zstd module but neither in-kernel zstd nor the zstandard package") from e
        return zstandard.ZstdDecompressor().stream_reader(data).read()
    raise ModuleError(f"unknown module compression {fmt!r}")


@dataclass
class LoadResult:
    name: str
    outcome: str      # "loaded", "already", "builtin"
    how: str = ""     # "plain", "kernel-decompress", "python-decompress"


class ModuleLoader:
    """Loads modules through the seam; remembers what is in the kernel so repeated calls are cheap."""

    def __init__(self, sys: Syscalls = LINUX, kernel_compression: str | None = None,
                 loaded: set[str] | None = None) -> None:
        self.sys = sys
        self.kernel_compression = kernel_compression
        self.loaded = set(loaded) if loaded is not None else set()

    @classmethod
    def from_kernel(cls, sys: Syscalls = LINUX) -> ModuleLoader:
        return cls(sys, kernel_module_compression(), loaded_modules())

    def load(self, index: ModuleIndex, names: Iterable[str], params: dict[str, str] | None = None) -> list[LoadResult]:
        """Load ``names`` and their dependencies in order; ``params`` maps a module name to its options."""
        params = {normalize(k): v for k, v in (params or {}).items()}
        wanted = [normalize(n) for n in names]
        results = [LoadResult(n, "builtin") for n in wanted if n in index.builtin and n not in index.paths]
        for name in index.order(wanted):
            results.append(self.load_file(name, index.path_of(name), params.get(name, "")))
        return results

    def load_file(self, name: str, path: str, params: str = "") -> LoadResult:
        if name in self.loaded:
            return LoadResult(name, "already")
        try:
            how = self._finit(path, params)
        except KernelError as e:
            if e.errno == errno.EEXIST:
                self.loaded.add(name)
                return LoadResult(name, "already")
            raise ModuleError(f"load module {name} from {path}") from e
        except OSError as e:
            raise ModuleError(f"load module {name} from {path}") from e
        self.loaded.add(name)
        return LoadResult(name, "loaded", how)

    def _finit(self, path: str, params: str) -> str:
        fmt = compression_of(path)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if fmt is None:
                self.sys.finit_module(fd, params, 0)
                return "plain"
            if self.kernel_compression == fmt:
                try:
                    self.sys.finit_module(fd, params, MODULE_INIT_COMPRESSED_FILE)
                    return "kernel-decompress"
                except KernelError as e:
                    if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                        raise
            with os.fdopen(os.dup(fd), "rb") as f:
                image = decompress(f.read(), fmt)
        finally:
            os.close(fd)
        memfd = os.memfd_create(f"module:{os.path.basename(path)}", os.MFD_CLOEXEC)
        try:
            view = memoryview(image)
            while view:
                view = view[os.write(memfd, view):]
            os.lseek(memfd, 0, os.SEEK_SET)
            self.sys.finit_module(memfd, params, 0)
        finally:
            os.close(memfd)
        return "python-decompress"


def modules_root(base: str = "/lib/modules", release: str | None = None) -> str:
    return os.path.join(base, release or os.uname().release)


def find_addons_modules(addons_dir: str, release: str | None = None) -> str | None:
    """Where an addons image keeps its modules tree: ``modules/<release>``, ``lib/modules/<release>`` or ``modules``."""
    release = release or os.uname().release
    for candidate in (
        os.path.join(addons_dir, "modules", release),
        os.path.join(addons_dir, "lib", "modules", release),
        os.path.join(addons_dir, "modules"),
    ):
        if os.path.exists(os.path.join(candidate, "modules.dep")):
            return candidate
    return None


def boot_module_names(root: str, index: ModuleIndex) -> list[str]:
    """Boot-critical modules shipped in the initramfs, in order: ``modules.load`` (names) or ``modules.boot``
    (paths, zonebuild's boot-modules cpio) if present, else every module of the tree."""
    for list_name in ("modules.load", "modules.boot"):
        try:
            with open(os.path.join(root, list_name), encoding="utf-8") as f:
                entries = [line.split("#", 1)[0].strip() for line in f]
        except OSError:
            continue
        return [module_name(e) for e in entries if e]
    return sorted(index.paths)


NO_DEVICE_ERRNOS = (errno.ENODEV, errno.ENXIO)


def is_no_device(error: BaseException) -> bool:
    """A driver whose hardware is absent (xen-blkfront under QEMU): its init returns ENODEV; not a failure."""
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, OSError) and current.errno in NO_DEVICE_ERRNOS:
            return True
        current = current.__cause__
    return False
