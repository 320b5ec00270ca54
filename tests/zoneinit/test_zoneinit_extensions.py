"""System extensions, PID 1's side: the config schema (extensions, components), mounting with the kernel release
check, modules from an extension's own tree, the merged firmware path, and the zone-level exec."""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

import pytest

from styrolite.errors import describe
from styrolite.syscalls.fake import RecordingSyscalls
from zoneinit.config.document import dumps
from zoneinit.config.parser import parse_zone_config
from zoneinit.config.plan import ExtensionPlan, plan_from_config
from zoneinit.console import ConsoleLog
from zoneinit.errors import ZoneConfigError
from zoneinit.idm.execs import ExecRequest
from zoneinit.idm.zone_exec import spawn_zone_exec, zone_exec_env
from zoneinit.modules.policy import ZoneModules
from zoneinit.mounts.extensions import attach_all

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
RELEASE = "6.1.0-57-cloud-amd64"


def _config(**changes: object) -> dict:
    document: dict = {
        "version": 1, "name": "z",
        "disks": [{"name": "ext0", "role": "extension", "device": "/dev/vdd", "sha256": DIGEST, "size": 4096},
                  {"name": "ext1", "role": "extension", "device": "/dev/vde", "sha256": DIGEST, "size": 4096}],
        "extensions": [{"name": "fs-extra", "disk": "ext0", "kernel_releases": [RELEASE], "modules": ["btrfs"]},
                       {"name": "debug-tools", "disk": "ext1", "tools": True}],
        "components": [{"kind": "kernel", "ref": "127.0.0.1:5000/zone/kernel:6.1", "digest": DIGEST,
                        "manifest": OTHER},
                       {"kind": "extension", "name": "debug-tools", "digest": OTHER}],
    }
    document.update(changes)
    return document


def test_extensions_and_components_reach_the_plan() -> None:
    config = parse_zone_config(_config())
    assert parse_zone_config(__import__("json").loads(dumps(config))) == config   # canonical round trip
    plan = plan_from_config(config)
    assert plan.extensions == [ExtensionPlan("fs-extra", "ext0", (RELEASE,), ("btrfs",), False),
                               ExtensionPlan("debug-tools", "ext1", (), (), True)]
    assert plan.components[0] == {"kind": "kernel", "ref": "127.0.0.1:5000/zone/kernel:6.1", "digest": DIGEST,
                                  "manifest": OTHER}
    assert plan.components[1] == {"kind": "extension", "name": "debug-tools", "digest": OTHER}


def test_a_config_without_extensions_keeps_its_bytes() -> None:
    plain = {"version": 1, "name": "z"}
    assert dumps(parse_zone_config(plain)) == ('{"containers":[],"disks":[],"modules":[],"name":"z","options":'
                                               '{"debug":false,"poweroff_on_exit":true,"shutdown_grace":10.0},'
                                               '"version":1}')


@pytest.mark.parametrize(("change", "path", "reason"), [
    ({"extensions": [{"name": "x", "disk": "nope"}]}, "$.extensions[0].disk", "not a disk with role 'extension'"),
    ({"extensions": [{"name": "Bad Name", "disk": "ext0"}]}, "$.extensions[0].name", "not an extension name"),
    ({"extensions": [{"name": "x", "disk": "ext0", "modules": ["m"]}, {"name": "y", "disk": "ext1"}]},
     "$.extensions[0].modules", "no kernel_releases"),
    ({"extensions": [{"name": "x", "disk": "ext0", "kernel_releases": ["../etc"]}, {"name": "y", "disk": "ext1"}]},
     "$.extensions[0].kernel_releases[0]", "not a kernel release"),
    ({"extensions": [{"name": "x", "disk": "ext0"}, {"name": "x", "disk": "ext1"}]}, "$.extensions[1].name",
     "duplicate"),
    ({"extensions": [{"name": "x", "disk": "ext0"}, {"name": "y", "disk": "ext0"}]}, "$.extensions[1].disk",
     "already extension 'x'"),
    ({"extensions": [{"name": "x", "disk": "ext0"}]}, "$.disks", "extension disk 'ext1' is named by no entry"),
    ({"components": [{"kind": "kernel", "digest": "sha256:12"}]}, "$.components[0].digest", "64 lowercase hex"),
    ({"components": [{"kind": "bios", "digest": DIGEST}]}, "$.components[0].kind", "not one of"),
    ({"components": [{"kind": "app", "digest": DIGEST, "extra": 1}]}, "$.components[0].extra", "unknown field"),
])
def test_bad_extension_entries_name_the_field(change: dict, path: str, reason: str) -> None:
    with pytest.raises(ZoneConfigError) as info:
        parse_zone_config(_config(**change))
    assert info.value.path == path and reason in info.value.message


# --- attaching: a disk store over directories, the module loader through the recording seam ---------------------

class DirectoryDisks:
    """Stands in for DiskStore: each disk is a directory (the verified-and-mounted part is DiskStore's own test)."""

    def __init__(self, roots: dict[str, Path]) -> None:
        self.roots = roots
        self.asked: list[tuple[str, str | None]] = []

    def path(self, name: str, target: str | None = None) -> str:
        self.asked.append((name, target))
        return str(self.roots[name])


class FileRecordingSyscalls(RecordingSyscalls):
    def __init__(self) -> None:
        super().__init__()
        self.loaded_files: list[str] = []

    def finit_module(self, fd: int, params: str = "", flags: int = 0) -> None:
        self.loaded_files.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        super().finit_module(fd, params, flags)


def _extension_tree(root: Path, *, release: str | None = None, dep: str = "", tools: bool = False,
                    firmware: dict[str, bytes] | None = None) -> Path:
    if release:
        tree = root / "modules" / release
        tree.mkdir(parents=True)
        (tree / "modules.dep").write_text(dep)
        for line in dep.splitlines():
            for path in line.replace(":", " ").split():
                (tree / path).parent.mkdir(parents=True, exist_ok=True)
                (tree / path).write_bytes(b"\0ko")
    if tools:
        (root / "bin").mkdir(parents=True)
        (root / "lib").mkdir()
    for name, data in (firmware or {}).items():
        (root / "firmware" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "firmware" / name).write_bytes(data)
    return root


def test_attach_loads_from_the_extension_refuses_another_release_and_merges_firmware(tmp_path: Path) -> None:
    dep = ("kernel/fs/zfake/zfakefs.ko: kernel/lib/zfake_crc.ko\nkernel/lib/zfake_crc.ko:\n"
           "kernel/fs/zother.ko:\n")
    roots = {
        "ext0": _extension_tree(tmp_path / "fs", release=RELEASE, dep=dep, firmware={"vendor/a.bin": b"ext-a"}),
        "ext1": _extension_tree(tmp_path / "tools", tools=True),
        "ext2": _extension_tree(tmp_path / "old", release="5.10.0-bogus", dep="kernel/old.ko:\n"),
    }
    addons = tmp_path / "addons"
    (addons / "firmware" / "vendor").mkdir(parents=True)
    (addons / "firmware" / "vendor" / "a.bin").write_bytes(b"addons-a")   # the addons image's copy wins
    disks = DirectoryDisks(roots)
    fake = FileRecordingSyscalls()
    reported: list[tuple[str, str]] = []
    modules = ZoneModules(fake, ConsoleLog(), lambda what, e: reported.append((what, describe(e))))
    plans = [ExtensionPlan("fs-extra", "ext0", (RELEASE,), ("zfakefs",)),
             ExtensionPlan("debug-tools", "ext1", (), (), True),
             ExtensionPlan("old", "ext2", ("5.10.0-bogus",), ("old",))]
    param = tmp_path / "firmware_class.path"
    attached = attach_all(plans, disks, modules, base="/run/zone/extensions", firmware_path=str(tmp_path / "fw"),
                          addons_dir=str(addons), report=lambda what, e: reported.append((what, describe(e))),
                          release=RELEASE, firmware_param=str(param))
    assert fake.loaded_files == ["zfake_crc.ko", "zfakefs.ko"]      # dependencies first, from the extension
    assert [a["name"] for a in attached] == ["fs-extra", "debug-tools"]
    assert ("ext2", "/run/zone/extensions/old") not in disks.asked    # refused before its disk is touched
    assert reported == [("extension old", "extension old is built for kernel 5.10.0-bogus, this zone runs "
                                          f"{RELEASE}: not mounted")]
    tools = attached[1]
    assert tools["tools"] and tools["bin"].endswith("tools/bin") and tools["lib"].endswith("tools/lib")
    assert not attached[0]["tools"]
    assert param.read_text() == str(tmp_path / "fw")
    assert (tmp_path / "fw" / "vendor" / "a.bin").read_bytes() == b"addons-a"
    # a name the config lists globally is found in the extension's tree when addons lacks it
    modules.load_named(["zother"])
    assert fake.loaded_files[-1] == "zother.ko"
    modules.load_named(["absent"])
    assert reported[-1] == ("load module absent", "module 'absent' is not in the addons, the extensions or the "
                                                  "initramfs modules")


# --- the zone-level exec -----------------------------------------------------------------------------------

def _collect(process, timeout: float = 10.0) -> tuple[dict[str, bytes], int]:
    out: dict[str, bytes] = {channel: b"" for channel in process.outputs.values()}
    open_fds = dict(process.outputs)
    deadline = time.monotonic() + timeout
    if process.stdin is not None:
        os.close(process.stdin)
    while open_fds and time.monotonic() < deadline:
        ready, _, _ = select.select(list(open_fds), [], [], 0.5)
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError:   # a pty master after the child closed it
                data = b""
            if data:
                out[open_fds[fd]] += data
            else:
                os.close(fd)
                del open_fds[fd]
    _, status = os.waitpid(process.pid, 0)
    return out, os.waitstatus_to_exitcode(status)


def test_zone_exec_puts_the_extension_tools_first(tmp_path: Path) -> None:
    bin_dir = tmp_path / "ext" / "bin"
    bin_dir.mkdir(parents=True)
    tool = bin_dir / "ext-hello"
    tool.write_text('#!/bin/sh\necho "hello from $0"; echo "LD=$LD_LIBRARY_PATH" >&2; exit 4\n')
    tool.chmod(0o755)
    extensions = [{"name": "debug-tools", "tools": True, "bin": str(bin_dir), "lib": str(tmp_path / "ext" / "lib")},
                  {"name": "fs-extra", "tools": False, "bin": "/nowhere"}]
    env = zone_exec_env(extensions, ["EXTRA=1"], tty=False)
    assert env["PATH"].split(":")[0] == str(bin_dir) and "/nowhere" not in env["PATH"]
    assert env["EXTRA"] == "1"
    out, code = _collect(spawn_zone_exec(ExecRequest(["ext-hello"], zone=True), extensions))
    assert code == 4
    assert out["stdout"] == f"hello from {tool}\n".encode()
    assert out["stderr"] == f"LD={tmp_path / 'ext' / 'lib'}\n".encode()


def test_zone_exec_reports_a_missing_program_as_127(tmp_path: Path) -> None:
    out, code = _collect(spawn_zone_exec(ExecRequest(["no-such-tool-here"], zone=True), []))
    assert code == 127
    assert out["stderr"] == (b"zone exec: no-such-tool-here: No such file or directory (the zone's initramfs has "
                             b"no tools: attach a system extension that offers some, e.g. debug-tools)\n")
    tools = [{"name": "t", "tools": True, "bin": str(tmp_path), "lib": None}]
    out, code = _collect(spawn_zone_exec(ExecRequest(["no-such-tool-here"], zone=True), tools))
    assert code == 127 and out["stderr"] == b"zone exec: no-such-tool-here: No such file or directory\n"


def test_zone_exec_with_a_terminal(tmp_path: Path) -> None:
    out, code = _collect(spawn_zone_exec(ExecRequest(["sh", "-c", "test -t 0 && echo tty"], tty=True, size=(30, 90),
                                                     zone=True), []))
    assert code == 0 and out["stdout"].strip() == b"tty"


def test_a_zone_exec_names_no_container() -> None:
    class Req:
        def __init__(self, payload: dict) -> None:
            self.payload = payload

        def arg(self, key: str, default: object = None) -> object:
            return self.payload.get(key, default)

    assert ExecRequest.from_request(Req({"command": ["ls"], "zone": True})).zone   # type: ignore[arg-type]
    with pytest.raises(ValueError, match="names no container"):
        ExecRequest.from_request(Req({"command": ["ls"], "zone": True, "container": "main"}))  # type: ignore[arg-type]


def test_addons_mounted_after_the_extensions_join_their_firmware_tree(tmp_path: Path) -> None:
    """Deferred addons (mounted on first need, after the extensions phase made the joined firmware tree) link
    their files into that tree: the search path keeps the extensions' firmware."""
    from types import SimpleNamespace

    from zoneinit.boot.phases import _use_firmware
    from zoneinit.modules.firmware import link_tree

    extension = tmp_path / "ext" / "firmware"
    (extension / "vendor").mkdir(parents=True)
    (extension / "vendor" / "nic.bin").write_bytes(b"ext")
    addons = tmp_path / "addons" / "firmware"
    (addons / "vendor").mkdir(parents=True)
    (addons / "vendor" / "gpu.bin").write_bytes(b"addons")
    joined = tmp_path / "joined"
    link_tree([str(extension)], str(joined))
    zone = SimpleNamespace(paths=SimpleNamespace(firmware=str(joined)), log=None)
    _use_firmware(zone, str(addons))   # type: ignore[arg-type]
    assert (joined / "vendor" / "nic.bin").read_bytes() == b"ext"
    assert (joined / "vendor" / "gpu.bin").read_bytes() == b"addons"
