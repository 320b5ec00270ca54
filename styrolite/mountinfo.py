"""Parse /proc/self/mountinfo: the one source of truth for what is mounted where and how it propagates.

One parser for the runtime (rootfs preparation, the cgroup layout) and for the zone's PID 1 (its early
mounts). It imports only the standard library, so PID 1's first step can use it without loading the rest of
Styrolite. A line that is not in the kernel's format is skipped rather than guessed at.
"""

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


def unescape(text: str) -> str:
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


def parse_line(line: str) -> MountEntry | None:
    """One mountinfo line, or None when it is not in the kernel's format."""
    before, sep, after = line.partition(" - ")
    fields = before.split()
    rest = after.split()
    if not sep or len(fields) < 6 or len(rest) < 2 or not (fields[0].isdigit() and fields[1].isdigit()):
        return None
    return MountEntry(
        mount_id=int(fields[0]), parent_id=int(fields[1]), device=fields[2],
        root=unescape(fields[3]), mount_point=unescape(fields[4]), options=set(fields[5].split(",")),
        optional=fields[6:], fstype=rest[0], source=unescape(rest[1]),
        super_options=set(rest[2].split(",")) if len(rest) > 2 else set(),
    )


def parse_mountinfo(text: str) -> list[MountEntry]:
    return [entry for line in text.splitlines() if (entry := parse_line(line)) is not None]


def read_mountinfo(path: str = "/proc/self/mountinfo") -> list[MountEntry]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
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
