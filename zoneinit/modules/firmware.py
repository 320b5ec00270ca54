"""The kernel's firmware search path, for firmware the zone's images carry.

``firmware_class.path`` names exactly one directory. The addons image alone sets it to its own ``firmware/``;
with system extensions that carry firmware too, every source is offered through one tree of symbolic links
(``/run/zone/firmware``, on tmpfs): the kernel's loader follows them, and the first source to provide a file
wins (the addons image first, then the extensions in the config's order).
"""

from __future__ import annotations

import os

SEARCH_PATH = "/sys/module/firmware_class/parameters/path"


def link_tree(sources: list[str], target: str) -> int:
    """Symbolic links under ``target`` to every file (and linked directory) of each source; returns how many."""
    made = 0
    for source in sources:
        for directory, subdirs, files in os.walk(source):
            relative = os.path.relpath(directory, source)
            into = os.path.normpath(os.path.join(target, relative))
            os.makedirs(into, mode=0o755, exist_ok=True)
            linked_dirs = [d for d in subdirs if os.path.islink(os.path.join(directory, d))]
            for name in [*files, *linked_dirs]:
                link = os.path.join(into, name)
                if not os.path.lexists(link):
                    os.symlink(os.path.join(directory, name), link)
                    made += 1
    return made


def set_search_path(path: str, param: str = SEARCH_PATH) -> None:
    with open(param, "w", encoding="utf-8") as f:
        f.write(path)
