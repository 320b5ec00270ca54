"""User-namespace id maps, written by the parent once the child has unshared (the two-stage setup)."""

from __future__ import annotations

from styrolite.errors import ContainerError
from styrolite.spec.model import IDMapping


def format_mappings(mappings: list[IDMapping]) -> str:
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)


def write_id_mappings(
    pid: int, uid_mappings: list[IDMapping], gid_mappings: list[IDMapping], deny_setgroups: bool = False
) -> None:
    """Write uid_map, setgroups, gid_map of ``pid`` in that order (gid_map after setgroups, as the kernel needs).

    ``deny_setgroups`` is for an unprivileged runtime; a privileged one keeps setgroups allowed so the
    container can use ``additionalGids``.
    """
    steps = [("uid_map", format_mappings(uid_mappings))]
    if deny_setgroups:
        steps.append(("setgroups", "deny"))
    steps.append(("gid_map", format_mappings(gid_mappings)))
    for name, text in steps:
        if not text:
            continue
        try:
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(text)
        except OSError as e:
            raise ContainerError(f"write {name} {text.strip()!r} for pid {pid}: {e.strerror}") from e
