"""The payloads of the zone's IDM requests as the host reads and writes them (docs/idm.md section 7).

Typed views for ``host.link.ZoneLink``'s callers; the zone's parser checks every field it receives.
"""

from __future__ import annotations

from typing import Any, TypedDict


class BootPhase(TypedDict, total=False):
    name: str
    start: float
    duration: float
    error: str


class BootTimeline(TypedDict, total=False):
    clock: str
    init_started: float
    phases: list[BootPhase]


class ContainerSummary(TypedDict, total=False):
    id: str
    status: str                 # creating, created, running, stopped, failed
    pid: int
    main: bool
    exit_code: int | None
    error: str | None
    image: str | None
    args: list[str]
    terminal: bool
    created: float
    started: float | None
    finished: float | None
    output_bytes: int


class ZoneInfo(TypedDict, total=False):
    """``zone.info`` (and the hello and ``zone.ready`` payloads, which add ``main``)."""

    zone: str
    init_version: str
    kernel: dict[str, str]
    hostname: str
    ready: bool
    boot: BootTimeline
    errors: list[dict[str, str]]
    containers: list[ContainerSummary]
    init_rss: int | None
    pid1: bool
    main: str | None
    extensions: list[dict[str, Any]]    # the system extensions mounted (name, path, modules, tools)
    components: list[dict[str, Any]]    # what the zone was composed from: kind, ref, digest (zone config)


class ContainerDefinition(TypedDict, total=False):
    """A container to create: the shape of an entry of the zone config's ``containers``."""

    name: str
    image: str
    args: list[str]
    env: list[str]
    cwd: str
    user: dict[str, int | list[int]]
    limits: dict[str, int | float]
    terminal: bool
    stdin: bool
    main: bool
    hostname: str
    readonly_root: bool
    annotations: dict[str, str]


class ContainerExit(TypedDict):
    id: str
    exit_code: int | None
    status: str
    error: str | None


class ContainerLogs(TypedDict):
    id: str
    data: bytes
    dropped: int
    status: str
    exit_code: int | None


class ZoneMetrics(TypedDict, total=False):
    uptime: float | None
    init_rss: int | None
    init_memory: dict[str, int]
    init_mappings: list[dict[str, object]]
    memory: dict[str, int]
    cpu: dict[str, object]
    load: dict[str, float | int]
    containers: dict[str, dict[str, object]]


class AttachedDisk(TypedDict):
    """``disk.attach``'s answer: the device the zone found the disk at."""

    name: str
    device: str


class VolumeFile(TypedDict, total=False):
    path: str        # relative to the volume's destination; "" = the destination is this file
    data: bytes
    mode: int        # default 0o644


class Volume(TypedDict, total=False):
    """A pod container's volume: ``{"kind": "emptydir", "name", "destination", "medium"?, "size"?}`` or
    ``{"kind": "files", "destination", "files": [VolumeFile], "readonly"?}`` (docs/pods-contract.md)."""

    kind: str
    destination: str
    readonly: bool
    name: str
    medium: str      # emptydir: "" or "memory"
    size: int        # emptydir on memory: tmpfs bytes
    files: list[VolumeFile]


class ContainerStats(TypedDict, total=False):
    """``container.stats``: Styrolite's cgroup figures; memory adds memory.stat's and ``working_set``."""

    id: str
    memory: dict[str, int | None]
    cpu: dict[str, int | None]
    pids: dict[str, int | None]
    io: dict[str, int]
    hugetlb: dict[str, Any]


class AttachInfo(TypedDict):
    id: str
    stream: int
    window: int
    terminal: bool
    stdin: bool
