"""zone.metrics: memory, CPU and load from /proc, read on demand (a few small files, no dependencies)."""

from __future__ import annotations

import contextlib
import os

CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")
MEMINFO_KEYS = ("MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "Shmem", "SwapTotal", "SwapFree")


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def meminfo(proc: str = "/proc") -> dict[str, int]:
    """Bytes (the kernel reports kB) for the keys that matter."""
    result: dict[str, int] = {}
    for line in _read(f"{proc}/meminfo").splitlines():
        key, _, rest = line.partition(":")
        if key in MEMINFO_KEYS:
            parts = rest.split()
            if parts and parts[0].isdigit():
                result[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return result


def cpu_times(proc: str = "/proc") -> dict[str, object]:
    """Aggregate CPU time in clock ticks, the tick rate and the number of CPUs."""
    totals: dict[str, int] = {}
    cpus = 0
    for line in _read(f"{proc}/stat").splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            totals = dict(zip(CPU_FIELDS, values, strict=False))
        elif line.startswith("cpu"):
            cpus += 1
    return {"ticks": totals, "hz": os.sysconf("SC_CLK_TCK"), "cpus": cpus or os.cpu_count() or 1}


def loadavg(proc: str = "/proc") -> dict[str, object]:
    parts = _read(f"{proc}/loadavg").split()
    if len(parts) < 4:
        return {}
    running, _, total = parts[3].partition("/")
    return {"1m": float(parts[0]), "5m": float(parts[1]), "15m": float(parts[2]),
            "running": int(running), "tasks": int(total or 0)}


def uptime(proc: str = "/proc") -> float | None:
    parts = _read(f"{proc}/uptime").split()
    return float(parts[0]) if parts else None


def process_rss(pid: int | str = "self", proc: str = "/proc") -> int | None:
    """VmRSS of a process in bytes."""
    for line in _read(f"{proc}/{pid}/status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def process_memory(pid: int | str = "self", proc: str = "/proc") -> dict[str, int]:
    """VmRSS split into anonymous (heap: Python objects), file-backed (the binary's and libraries' pages) and
    shared memory, in bytes: where PID 1's resident memory goes."""
    keys = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "RssShmem": "shmem", "VmHWM": "peak"}
    result: dict[str, int] = {}
    for line in _read(f"{proc}/{pid}/status").splitlines():
        key, _, rest = line.partition(":")
        if key in keys and rest.split():
            result[keys[key]] = int(rest.split()[0]) * 1024
    return result


def process_mappings(pid: int | str = "self", proc: str = "/proc", top: int = 16) -> list[dict[str, object]]:
    """Where a process's resident pages are: /proc/PID/smaps summed per mapped file and permissions
    (``/lib/zone/zone-init r--p``, ``[heap] rw-p``; ``[anon]`` for an anonymous mapping without a name), the
    ``top`` largest; bytes. ``rss`` counts every resident page, ``anon`` the private copies among them (heap,
    allocator arenas, written data); the rest of a file's pages are its page cache (PID 1's binary, mapped from
    the initramfs, is its RssShmem)."""
    sums: dict[str, list[int]] = {}
    current: list[int] | None = None
    for line in _read(f"{proc}/{pid}/smaps").splitlines():
        fields = line.split()
        if not fields:
            continue
        if not fields[0].endswith(":"):   # a mapping's header: range perms offset dev inode [path]
            name = f"{fields[5] if len(fields) > 5 else '[anon]'} {fields[1] if len(fields) > 1 else ''}"
            current = sums.setdefault(name, [0, 0, 0])
            current[2] += 1
        elif current is not None and fields[0] in ("Rss:", "Anonymous:") and len(fields) > 1:
            current[0 if fields[0] == "Rss:" else 1] += int(fields[1]) * 1024
    rows = sorted(sums.items(), key=lambda item: -item[1][0])[:top]
    return [{"name": name, "rss": rss, "anon": anon, "mappings": count} for name, (rss, anon, count) in rows]


def zone_metrics(proc: str = "/proc") -> dict[str, object]:
    return {"memory": meminfo(proc), "cpu": cpu_times(proc), "load": loadavg(proc), "uptime": uptime(proc),
            "init_rss": process_rss("self", proc), "init_memory": process_memory("self", proc),
            "init_mappings": process_mappings("self", proc)}


def pid1_resources(proc: str = "/proc") -> dict[str, object]:
    """PID 1's open descriptors, direct children and namespaces: leak checks (fd/child counts before and after
    a burst of execs) and isolation checks (a container's namespaces must differ) read them over IDM."""
    try:
        fds = len(os.listdir(f"{proc}/self/fd"))
    except OSError:
        fds = -1
    children = 0
    try:
        for task in os.listdir(f"{proc}/self/task"):
            children += len(_read(f"{proc}/self/task/{task}/children").split())
    except OSError:
        children = -1
    namespaces: dict[str, str] = {}
    for ns in ("pid", "ipc", "net", "uts", "mnt", "user", "cgroup"):
        with contextlib.suppress(OSError):
            namespaces[ns] = os.readlink(f"{proc}/self/ns/{ns}")
    return {"init_fds": fds, "init_children": children, "init_namespaces": namespaces}


MEMORY_STAT_KEYS = ("anon", "file", "active_file", "inactive_file", "shmem", "kernel_stack", "slab", "pgfault",
                    "pgmajfault")


def memory_stat(cgroup_directory: str) -> dict[str, int]:
    """The figures of a cgroup v2 ``memory.stat`` that CRI's stats report (bytes, and fault counts)."""
    result: dict[str, int] = {}
    for line in _read(f"{cgroup_directory}/memory.stat").splitlines():
        key, _, value = line.partition(" ")
        if key in MEMORY_STAT_KEYS and value.strip().isdigit():
            result[key] = int(value)
    return result
