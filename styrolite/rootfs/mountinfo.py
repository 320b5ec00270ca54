"""Parse /proc/self/mountinfo: the one source of truth for what is mounted where and how it propagates."""

from __future__ import annotations

from styrolite.records import field, record


@record
class MountEntry:
    mount_id: int
    parent_id: int
    device: str  # "major:minor"
    root: str  # the path inside the filesystem that is mounted here
    mount_point: str
    options: set[str]  # per-mount: ro/rw, nosuid, nodev, noexec, relatime...
    optional: list[str]  # propagation: shared:N, master:N, propagate_from:N, unbindable
    fstype: str
    source: str
    super_options: set[str] = field(default_factory=set)

    @property
    def shared(self) -> bool:
        return any(tag.startswith("shared:") for tag in self.optional)

    @property
    def slave(self) -> bool:
        return any(tag.startswith("master:") for tag in self.optional)


def _unescape(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal ``\\040``."""
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 4 <= len(text) and text[i + 1:i + 4].isdigit():
            out.append(chr(int(text[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        before, _, after = line.partition(" - ")
        fields = before.split(" ")
        fstype, source, *rest = after.split(" ")
        entries.append(MountEntry(
            mount_id=int(fields[0]), parent_id=int(fields[1]), device=fields[2],
            root=_unescape(fields[3]), mount_point=_unescape(fields[4]), options=set(fields[5].split(",")),
            optional=fields[6:], fstype=fstype, source=_unescape(source),
            super_options=set(rest[0].split(",")) if rest else set(),
        ))
    return entries


def read_mountinfo(path: str = "/proc/self/mountinfo") -> list[MountEntry]:
    with open(path) as f:
        return parse_mountinfo(f.read())


def mount_containing(path: str, entries: list[MountEntry]) -> MountEntry | None:
    """The topmost mount whose mount point is ``path`` or its closest ancestor (``path`` must be resolved)."""
    best: MountEntry | None = None
    for entry in entries:
        point = entry.mount_point
        inside = path == point or point == "/" or path.startswith(point.rstrip("/") + "/")
        # later entries mounted on the same point stack on top, so >= keeps the last
        if inside and (best is None or len(point) >= len(best.mount_point)):
            best = entry
    return best
