import errno
import lzma
import os
import zlib

import pytest

from styrolite.syscalls.constants import MODULE_INIT_COMPRESSED_FILE
from styrolite.syscalls.fake import RecordingSyscalls
from zoneinit.errors import ModuleError
from zoneinit.modules.dep import ModuleIndex, boot_module_names, find_addons_modules, module_name
from zoneinit.modules.loader import ModuleLoader, is_no_device

DEP = """\
kernel/fs/fat/vfat.ko.xz: kernel/fs/fat/fat.ko.xz kernel/fs/nls/nls_base.ko.xz
kernel/fs/fat/fat.ko.xz: kernel/fs/nls/nls_base.ko.xz
kernel/fs/nls/nls_base.ko.xz:
kernel/fs/nls/nls-utf8.ko.zst: kernel/fs/nls/nls_base.ko.xz
kernel/drivers/net/dummy.ko:
kernel/a.ko: kernel/b.ko
kernel/b.ko: kernel/c.ko
kernel/c.ko: kernel/a.ko
kernel/needs_ghost.ko: kernel/ghost.ko
"""


@pytest.fixture
def index():
    return ModuleIndex.parse("/lib/modules/6.1.0", DEP, "kernel/fs/ext4/ext4.ko\n")


def test_module_names_are_normalized():
    assert module_name("kernel/fs/nls/nls-utf8.ko.zst") == "nls_utf8"
    assert module_name("dummy.ko") == "dummy"
    assert module_name("x/virtio_blk.ko.gz") == "virtio_blk"


def test_dependencies_come_first_each_once(index):
    assert index.order(["vfat", "nls-utf8", "fat"]) == ["nls_base", "fat", "vfat", "nls_utf8"]


def test_builtin_is_skipped_and_unknown_is_an_error(index):
    assert index.order(["ext4", "dummy"]) == ["dummy"]
    with pytest.raises(ModuleError, match="'nope' not found"):
        index.order(["nope"])
    with pytest.raises(ModuleError, match=r"'ghost' not found .*needed by needs_ghost"):
        index.order(["needs_ghost"])


def test_cycle_is_reported(index):
    with pytest.raises(ModuleError, match=r"cycle.*a -> b -> c -> a"):
        index.order(["a"])


def test_bad_line_is_reported():
    with pytest.raises(ModuleError, match="line 1"):
        ModuleIndex.parse("/m", "no colon here\n")


class ContentRecordingSyscalls(RecordingSyscalls):
    """Also keeps what the fd given to finit_module held (the memfd is closed right after)."""

    def __init__(self):
        super().__init__()
        self.contents = []

    def finit_module(self, fd, params="", flags=0):
        self.contents.append(os.pread(fd, 1 << 20, 0))
        super().finit_module(fd, params, flags)


def _tree(tmp_path, files):
    root = tmp_path / "lib/modules/6.1.0"
    lines = []
    for rel, (data, deps) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        lines.append(f"{rel}: {' '.join(deps)}")
    (root / "modules.dep").write_text("\n".join(lines) + "\n")
    return ModuleIndex.load(str(root))


def test_loader_decompresses_in_python_when_kernel_cannot(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    index = _tree(tmp_path, {
        "kernel/base.ko": (b"ELF-base", []),
        "kernel/x.ko.xz": (lzma.compress(b"ELF-x"), ["kernel/base.ko"]),
        "kernel/z.ko.zst": (zstandard.ZstdCompressor().compress(b"ELF-z"), ["kernel/base.ko"]),
        "kernel/g.ko.gz": (zlib.compress(b"ELF-g"), []),
    })
    fake = ContentRecordingSyscalls()
    results = ModuleLoader(fake, kernel_compression=None).load(index, ["x", "z", "g"], {"x": "debug=1"})
    assert [(r.name, r.outcome, r.how) for r in results] == [
        ("base", "loaded", "plain"),
        ("x", "loaded", "python-decompress"),
        ("z", "loaded", "python-decompress"),
        ("g", "loaded", "python-decompress"),
    ]
    assert fake.contents == [b"ELF-base", b"ELF-x", b"ELF-z", b"ELF-g"]
    assert [args[1:] for args in fake.of("finit_module")] == [("", 0), ("debug=1", 0), ("", 0), ("", 0)]


def test_loader_lets_the_kernel_decompress_its_own_format(tmp_path):
    index = _tree(tmp_path, {"kernel/x.ko.xz": (lzma.compress(b"ELF-x"), [])})
    fake = ContentRecordingSyscalls()
    (result,) = ModuleLoader(fake, kernel_compression="xz").load(index, ["x"])
    assert result.how == "kernel-decompress"
    assert fake.of("finit_module")[0][2] == MODULE_INIT_COMPRESSED_FILE
    assert fake.contents == [lzma.compress(b"ELF-x")]


def test_loader_falls_back_when_kernel_refuses_compressed(tmp_path):
    index = _tree(tmp_path, {"kernel/x.ko.xz": (lzma.compress(b"ELF-x"), [])})
    fake = ContentRecordingSyscalls()
    fake.fail_on("finit_module", errno.EOPNOTSUPP, lambda args: args[2] == MODULE_INIT_COMPRESSED_FILE)
    (result,) = ModuleLoader(fake, kernel_compression="xz").load(index, ["x"])
    assert result.how == "python-decompress"
    assert fake.contents[-1] == b"ELF-x"


def test_loading_is_idempotent(tmp_path):
    index = _tree(tmp_path, {"kernel/a.ko": (b"a", []), "kernel/b.ko": (b"b", ["kernel/a.ko"])})
    fake = RecordingSyscalls()
    fake.fail_on("finit_module", errno.EEXIST)
    loader = ModuleLoader(fake, loaded={"a"})
    assert [(r.name, r.outcome) for r in loader.load(index, ["b"])] == [("a", "already"), ("b", "already")]
    assert len(fake.of("finit_module")) == 1  # 'a' was known loaded: not even tried
    assert loader.load(index, ["b"])[1].outcome == "already"
    assert len(fake.of("finit_module")) == 1


def test_load_failure_names_the_module(tmp_path):
    index = _tree(tmp_path, {"kernel/a.ko": (b"a", [])})
    fake = RecordingSyscalls()
    fake.fail_on("finit_module", errno.ENOENT)
    with pytest.raises(ModuleError, match=r"load module a from .*a\.ko") as e:
        ModuleLoader(fake).load(index, ["a"])
    assert not is_no_device(e.value)
    absent = RecordingSyscalls()
    absent.fail_on("finit_module", errno.ENODEV)
    with pytest.raises(ModuleError) as e:
        ModuleLoader(absent).load(index, ["a"])
    assert is_no_device(e.value)  # a driver without its hardware: skipped quietly at boot


def test_boot_modules_and_addons_layout(tmp_path):
    index = _tree(tmp_path, {"kernel/a.ko": (b"a", []), "kernel/b.ko": (b"b", [])})
    assert boot_module_names(index.root, index) == ["a", "b"]
    (tmp_path / "lib/modules/6.1.0/modules.boot").write_text("kernel/b.ko\nkernel/a.ko\n")
    assert boot_module_names(index.root, index) == ["b", "a"]
    (tmp_path / "lib/modules/6.1.0/modules.load").write_text("# boot\nb\n")
    assert boot_module_names(index.root, index) == ["b"]
    assert find_addons_modules(str(tmp_path), "6.1.0") == str(tmp_path / "lib/modules/6.1.0")
    assert find_addons_modules(str(tmp_path), "9.9") is None


def _zone_modules(fake):
    from zoneinit.console import ConsoleLog
    from zoneinit.modules.loader import ModuleLoader
    from zoneinit.modules.policy import ZoneModules

    reports = []
    modules = ZoneModules(fake, ConsoleLog(), lambda what, error: reports.append((what, str(error))))
    modules._loader = ModuleLoader(fake)
    return modules, reports


def test_deferred_addons_are_attached_only_for_a_module_beyond_the_initramfs(tmp_path):
    """A zone whose modules are all in the initramfs never mounts (and so never hashes) its addons image; the
    first module looked for beyond it attaches the addons, once."""
    fake = RecordingSyscalls()
    modules, reports = _zone_modules(fake)
    modules.boot_index = _tree(tmp_path / "boot", {"kernel/squashfs.ko": (b"sq", []),
                                                   "kernel/virtio_net.ko": (b"n", [])})
    addons = _tree(tmp_path / "addons", {"kernel/virtio_net.ko": (b"n", []), "kernel/ext4.ko": (b"e", [])})
    attached = []

    def attach():
        attached.append(True)
        modules.addons_index = addons

    modules.defer_addons(attach)
    assert modules.load_fstype("squashfs") and modules.load_named(["virtio_net"]) is None
    assert attached == [] and not reports
    assert modules.load_fstype("ext4")
    assert attached == [True]
    modules.load_named(["ext4"])
    assert attached == [True] and not reports   # once


def test_a_failing_deferred_addons_image_is_reported_and_the_module_is_missing(tmp_path):
    fake = RecordingSyscalls()
    modules, reports = _zone_modules(fake)

    def attach():
        raise ModuleError("disk addons (/dev/vda): sha256 is 0000, the config pins 1111: refusing to mount it")

    modules.defer_addons(attach)
    modules.load_named(["dummy"])
    assert [what for what, _ in reports] == ["addons", "load module dummy"]
    assert "refusing to mount" in reports[0][1]
    assert "not in the addons, the extensions or the initramfs" in reports[1][1]
    modules.load_named(["dummy"])
    assert [what for what, _ in reports][2:] == ["load module dummy"]   # not attached again
