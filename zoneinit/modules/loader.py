"""Loading kernel modules through finit_module(2), in ``modules.dep`` order (``zoneinit.modules.dep``).

Loading is idempotent: a module already in /proc/modules, built in, or answered with EEXIST counts as loaded.
Compressed modules (.ko.xz, .ko.zst, .ko.gz): if the kernel decompresses modules itself (it says which format
in /sys/module/compression) the file goes to finit_module with MODULE_INIT_COMPRESSED_FILE; otherwise Python
decompresses it into a memfd (lzma, zstandard when installed, zlib) and that is loaded.
"""

from __future__ import annotations

import errno
import os
from collections import namedtuple
from collections.abc import Iterable

from styrolite.syscalls import LINUX, KernelError, Syscalls
from styrolite.syscalls.constants import MODULE_INIT_COMPRESSED_FILE
from zoneinit.errors import ModuleError
from zoneinit.modules.dep import ModuleIndex, compression_of, normalize

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB
if TYPE_CHECKING:
    pass


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


# name: str; outcome: str ("loaded", "already", "builtin"); how: str ("plain", "kernel-decompress",
# "python-decompress"). A collections.namedtuple: typing.NamedTuple's class syntax would import typing into PID 1
LoadResult = namedtuple("LoadResult", ("name", "outcome", "how"), defaults=("",))


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


NO_DEVICE_ERRNOS = (errno.ENODEV, errno.ENXIO)


def is_no_device(error: BaseException) -> bool:
    """A driver whose hardware is absent (xen-blkfront under QEMU): its init returns ENODEV; not a failure."""
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, OSError) and current.errno in NO_DEVICE_ERRNOS:
            return True
        current = current.__cause__
    return False
