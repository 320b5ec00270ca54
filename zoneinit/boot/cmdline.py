"""The kernel command line: our ``zone.*`` keys, parsed the way the kernel splits it.

    zone.config=/dev/vdb zone.idm=/dev/vport0p1 zone.addons=/dev/vda zone.modules=vfat,dummy zone.debug

The kernel splits on spaces, and double quotes protect spaces inside a value (``key="a b"``). Keys
that are not ours (``console=``, ``root=``, ``quiet``) are kept in ``other`` and otherwise ignored;
an unknown ``zone.*`` key is kept in ``unknown`` so it can be reported rather than silently dropped.
"""

from __future__ import annotations

from styrolite.records import field, record

PREFIX = "zone."
_FLAG_TRUE = {"", "1", "y", "yes", "on", "true"}


@record
class ZoneCmdline:
    config: str | None = None              # zone.config: the config disk (block device or file)
    idm: str | None = None                 # zone.idm: the IDM channel (virtio-serial port, hvc)
    addons: str | None = None              # zone.addons: the addons.squashfs block device
    modules: list[str] = field(default_factory=list)   # zone.modules: extra modules to load, comma-separated
    debug: bool = False                    # zone.debug: tracebacks on the console
    poweroff_on_exit: bool | None = None   # zone.poweroff=0|1: override the config's exit policy
    other: dict[str, str] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)


def split_cmdline(text: str) -> list[str]:
    """Split like the kernel's ``next_arg``: whitespace separates, double quotes group (and are removed)."""
    words: list[str] = []
    current: list[str] = []
    in_quotes = False
    started = False
    for char in text:
        if char == '"':
            in_quotes = not in_quotes
            started = True
        elif char.isspace() and not in_quotes:
            if started:
                words.append("".join(current))
                current, started = [], False
        else:
            current.append(char)
            started = True
    if started:
        words.append("".join(current))
    return words


def _flag(value: str) -> bool:
    return value.strip().lower() in _FLAG_TRUE


def parse_cmdline(text: str) -> ZoneCmdline:
    result = ZoneCmdline()
    for word in split_cmdline(text):
        key, _, value = word.partition("=")
        if not key.startswith(PREFIX):
            result.other[key] = value
            continue
        name = key[len(PREFIX):]
        if name == "config":
            result.config = value or None
        elif name == "idm":
            result.idm = value or None
        elif name == "addons":
            result.addons = value or None
        elif name == "modules":
            result.modules.extend(m for m in value.split(",") if m)
        elif name == "debug":
            result.debug = _flag(value)
        elif name == "poweroff":
            result.poweroff_on_exit = _flag(value)
        else:
            result.unknown[key] = value
    return result


def read_cmdline(path: str = "/proc/cmdline") -> ZoneCmdline:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_cmdline(f.read())
    except OSError:
        return ZoneCmdline()
