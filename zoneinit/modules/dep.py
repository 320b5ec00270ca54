"""A kernel's modules tree: ``modules.dep`` parsed into name -> file and name -> dependencies, ordered.

``modules.dep`` maps each module file to the files it needs (``kernel/fs/foo.ko.xz: kernel/lib/bar.ko.xz``).
A name resolves to its file; its dependencies are ordered depth-first (dependencies before dependents,
each once, cycles and missing modules reported with the chain). ``modules.builtin`` entries count as present.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from styrolite.records import field, record
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


@record
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
