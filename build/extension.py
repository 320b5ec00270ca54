"""System extension images: the format (docs/images.md, "System extension images"), writing one as an OCI image,
and turning one into the read-only disk a zone mounts at /run/zone/extensions/<name>.

An extension is an ordinary OCI image (so every registry, skopeo and ``zonehost push`` carry it) whose
filesystem has everything under ``/extension``::

    /extension/manifest.json         what it is, what it provides, which kernels it fits (below)
    /extension/bin/                  tools (ELF programs run with the extension's own loader and libraries)
    /extension/lib/                  their libraries, and the loader (lib/ld-linux-x86-64.so.2)
    /extension/modules/<release>/    kernel modules for that release: kernel/..., modules.dep (depmod), ...
    /extension/firmware/             firmware files, searched after the addons image's

``manifest.json``::

    {"schemaVersion": 1, "name": "fs-extra", "version": "6.1.0-57-cloud-amd64",
     "description": "...",
     "kernel": {"releases": ["6.1.0-57-cloud-amd64"]},
     "provides": {"modules": ["btrfs", "xfs"], "tools": ["mkfs.btrfs"], "firmware": false},
     "load": ["btrfs"],
     "tools": {"scope": "zone"},
     "sources": {"linux-image-6.1.0-57-cloud-amd64": "6.1.192-3"}}

Everything is checked (:func:`parse_manifest`, :func:`check_tree`) before a host uses an extension: a module
the manifest provides must be in each release's modules.dep, a tool must be an executable in bin/. The disk
(:func:`extension_disk`) is a squashfs of ``/extension`` (root-owned, times 0, reproducible), cached by the
image's manifest digest; PID 1 pins it by sha256 like every disk.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cachedir import cache_dir
from .errors import BuildError
from .fsimage import make_fs
from .oci import ImageError, open_image, unpack_image
from .ocilayout import write_tree_image

SCHEMA_VERSION = 1
ROOT = "extension"
MANIFEST = f"{ROOT}/manifest.json"
MOUNT_BASE = "/run/zone/extensions"   # PID 1 mounts extension NAME at MOUNT_BASE/NAME
LOADER = "ld-linux-x86-64.so.2"
TOOL_SCOPES = ("zone",)               # where tools may be used: the zone-level exec, nowhere else
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
RELEASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$")
MODULE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TOOL_RE = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
LABEL_PREFIX = "dev.zone.extension."


class ExtensionError(BuildError):
    """An extension image is malformed, or does not fit the zone it is asked for."""


@dataclass(frozen=True)
class ExtensionManifest:
    name: str
    version: str
    kernel_releases: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()      # module names it provides (for each release)
    tools: tuple[str, ...] = ()        # programs in bin/
    firmware: bool = False
    load: tuple[str, ...] = ()         # modules loaded whenever the extension is attached
    tool_scope: str = "zone"
    description: str = ""
    sources: dict[str, str] = field(default_factory=dict)   # what it was built from (package -> version)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "schemaVersion": SCHEMA_VERSION, "name": self.name, "version": self.version,
            "provides": {"modules": list(self.modules), "tools": list(self.tools), "firmware": self.firmware},
        }
        if self.description:
            document["description"] = self.description
        if self.kernel_releases:
            document["kernel"] = {"releases": list(self.kernel_releases)}
        if self.load:
            document["load"] = list(self.load)
        if self.tools:
            document["tools"] = {"scope": self.tool_scope}
        if self.sources:
            document["sources"] = dict(self.sources)
        return document

    def fits(self, release: str) -> bool:
        """An extension without modules fits every kernel; one with modules only the releases it names."""
        return not self.kernel_releases or release in self.kernel_releases


def _strings(value: Any, where: str, pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ExtensionError(f"{where}: expected a list of {what}s")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not pattern.match(item):
            raise ExtensionError(f"{where}[{i}]: {item!r} is not a {what}")
    if len(set(value)) != len(value):
        raise ExtensionError(f"{where}: duplicates")
    return tuple(value)


def _object(value: Any, where: str, known: set[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ExtensionError(f"{where}: expected an object")
    unknown = sorted(set(value) - known)
    if unknown:
        raise ExtensionError(f"{where}.{unknown[0]}: unknown field")
    return value


def parse_manifest(document: Any, where: str = "manifest.json") -> ExtensionManifest:
    """A manifest document, checked field by field (ExtensionError names the field)."""
    top = _object(document, where, {"schemaVersion", "name", "version", "description", "kernel", "provides",
                                    "load", "tools", "sources"})
    if not top:
        raise ExtensionError(f"{where}: expected a JSON object")
    if top.get("schemaVersion") != SCHEMA_VERSION:
        raise ExtensionError(f"{where}.schemaVersion: {top.get('schemaVersion')!r}, this host reads {SCHEMA_VERSION}")
    name = top.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ExtensionError(f"{where}.name: {name!r} is not an extension name (a-z, 0-9, '_', '.', '-')")
    version = top.get("version")
    if not isinstance(version, str) or not version or len(version) > 128:
        raise ExtensionError(f"{where}.version: expected a non-empty string")
    description = top.get("description", "")
    if not isinstance(description, str):
        raise ExtensionError(f"{where}.description: expected a string")
    kernel = _object(top.get("kernel"), f"{where}.kernel", {"releases"})
    releases = _strings(kernel.get("releases"), f"{where}.kernel.releases", RELEASE_RE, "kernel release")
    provides = _object(top.get("provides"), f"{where}.provides", {"modules", "tools", "firmware"})
    modules = _strings(provides.get("modules"), f"{where}.provides.modules", MODULE_RE, "module name")
    tools = _strings(provides.get("tools"), f"{where}.provides.tools", TOOL_RE, "tool name")
    firmware = provides.get("firmware", False)
    if not isinstance(firmware, bool):
        raise ExtensionError(f"{where}.provides.firmware: expected true or false")
    if modules and not releases:
        raise ExtensionError(f"{where}.kernel.releases: the extension provides modules, so it must say which "
                             "kernel releases they are built for")
    load = _strings(top.get("load"), f"{where}.load", MODULE_RE, "module name")
    missing = [m for m in load if m not in modules]
    if missing:
        raise ExtensionError(f"{where}.load: {', '.join(missing)} not among provides.modules")
    scope = _object(top.get("tools"), f"{where}.tools", {"scope"}).get("scope", "zone")
    if scope not in TOOL_SCOPES:
        raise ExtensionError(f"{where}.tools.scope: {scope!r} is not supported (an extension's tools are offered "
                             "to zone-level exec only, never to containers)")
    sources = top.get("sources") or {}
    if not isinstance(sources, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in sources.items()):
        raise ExtensionError(f"{where}.sources: expected an object of strings")
    return ExtensionManifest(name, version, releases, modules, tools, firmware, load, scope, description,
                             dict(sources))


def _module_names(modules_dep: Path) -> set[str]:
    names = set()
    for line in modules_dep.read_text().splitlines():
        target, sep, _ = line.partition(":")
        if sep:
            base = target.strip().rsplit("/", 1)[-1]
            names.add(re.sub(r"\.ko(\.(xz|zst|gz))?$", "", base).replace("-", "_"))
    return names


def check_tree(root: Path, manifest: ExtensionManifest) -> None:
    """The files must be what the manifest says: every tool an executable in bin/, every module in each
    release's modules.dep, firmware/ exactly when it says firmware."""
    for tool in manifest.tools:
        path = root / "bin" / tool
        if not (path.is_file() and os.access(path, os.X_OK)) and not path.is_symlink():
            raise ExtensionError(f"extension {manifest.name}: tool {tool!r} is not an executable in bin/")
    for release in manifest.kernel_releases:
        modules_dep = root / "modules" / release / "modules.dep"
        if not modules_dep.is_file():
            raise ExtensionError(f"extension {manifest.name}: no modules/{release}/modules.dep")
        available = _module_names(modules_dep)
        missing = [m for m in manifest.modules if m.replace("-", "_") not in available]
        if missing:
            raise ExtensionError(f"extension {manifest.name}: modules/{release} lacks {', '.join(missing)}")
    if manifest.firmware != (root / "firmware").is_dir():
        raise ExtensionError(f"extension {manifest.name}: provides.firmware is {str(manifest.firmware).lower()} "
                             f"but firmware/ is {'present' if (root / 'firmware').is_dir() else 'absent'}")


# --- writing an extension image ----------------------------------------------------------------------------

def write_extension_image(tree: Path, manifest: ExtensionManifest, out: Path, work: Path) -> Path:
    """The OCI layout of an extension whose files are staged in ``tree`` (bin/, lib/, modules/, firmware/);
    manifest.json is written here. Reproducible: sorted entries, owner 0, mtime 0, normalised modes."""
    check_tree(tree, manifest)
    root = work / "layer-root"
    shutil.copytree(tree, root / ROOT, symlinks=True)
    (root / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=1, sort_keys=True) + "\n")
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.stat(path).st_mode & 0o100 else 0o644)
    labels = {f"{LABEL_PREFIX}name": manifest.name, f"{LABEL_PREFIX}version": manifest.version}
    if manifest.kernel_releases:
        labels[f"{LABEL_PREFIX}kernel-releases"] = ",".join(manifest.kernel_releases)
    write_tree_image(root, out, work, {"Labels": labels}, ref_name=f"{manifest.name}:{manifest.version}",
                     annotations={"org.opencontainers.image.title": manifest.name,
                                  "org.opencontainers.image.version": manifest.version})
    return out


# --- reading one back: the host's side -----------------------------------------------------------------------

@dataclass(frozen=True)
class ExtensionDisk:
    """An extension made into a zone disk."""

    manifest: ExtensionManifest
    digest: str        # the image's manifest digest
    path: Path         # the squashfs of /extension (the config pins its sha256 and size)


def unpack_extension(layout: str | Path, dest: Path) -> tuple[ExtensionManifest, Path, str]:
    """Verify and unpack the image; its manifest, the unpacked /extension directory, the manifest digest."""
    try:
        image = open_image(layout)
        root = unpack_image(image, dest, preserve_owner=False)
    except ImageError as e:
        raise ExtensionError(f"extension image {layout}") from e
    tree = root / ROOT
    manifest_path = root / MANIFEST
    if not manifest_path.is_file() or manifest_path.is_symlink():
        raise ExtensionError(f"extension image {layout}: no /{MANIFEST} (not a system extension image)")
    try:
        document = json.loads(manifest_path.read_bytes())
    except ValueError as e:
        raise ExtensionError(f"extension image {layout}: /{MANIFEST} is not JSON ({e})") from None
    manifest = parse_manifest(document, f"/{MANIFEST}")
    check_tree(tree, manifest)
    return manifest, tree, image.manifest_digest or image.config_digest


def extension_disk(layout: str | Path, out_dir: Path | None = None) -> ExtensionDisk:
    """The extension's read-only disk (squashfs of /extension), built once per image digest under
    ``<cache>/extensions/`` (or ``out_dir``)."""
    try:
        image = open_image(layout)
    except ImageError as e:
        raise ExtensionError(f"extension image {layout}") from e
    digest = image.manifest_digest or image.config_digest
    out_dir = out_dir or cache_dir() / "extensions"
    key = digest.removeprefix("sha256:")[:32]
    disk, meta = out_dir / f"{key}.squashfs", out_dir / f"{key}.json"
    if not (disk.is_file() and meta.is_file()):
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="extension-", dir=out_dir) as tmp:
            manifest, tree, digest = unpack_extension(layout, Path(tmp) / "root")
            scratch = Path(tmp) / "disk.squashfs"
            make_fs(tree, scratch, "squashfs", all_root=True, all_time=0)
            os.replace(scratch, disk)
            meta_tmp = Path(tmp) / "meta.json"
            meta_tmp.write_text(json.dumps({"digest": digest, "manifest": manifest.to_json()}, sort_keys=True))
            os.replace(meta_tmp, meta)
    recorded = json.loads(meta.read_text())
    return ExtensionDisk(parse_manifest(recorded["manifest"]), recorded["digest"], disk)


def check_fits(manifest: ExtensionManifest, release: str, what: str) -> None:
    """Refuse (before anything boots) an extension whose modules are for other kernel releases."""
    if not manifest.fits(release):
        raise ExtensionError(f"extension {manifest.name} {manifest.version} ({what}) is built for kernel "
                             f"{', '.join(manifest.kernel_releases)}; the zone's kernel is {release}")
