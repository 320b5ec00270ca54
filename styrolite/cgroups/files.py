"""Reading and writing cgroupfs files, shared by both drivers.

Every failure becomes a ``CgroupError`` naming the file and the value, so ``describe()`` prints e.g.
``write '100000 50000' to /sys/fs/cgroup/x/cpu.max: EINVAL (Invalid argument)``.
"""

from __future__ import annotations

import errno
import os
import time

from styrolite.cgroups.base import CgroupError

UNLIMITED_THRESHOLD = 1 << 62
"""v1 reports "no limit" as PAGE_COUNTER_MAX * page size (9223372036854771712); anything above this is unlimited."""


def os_error_text(error: OSError) -> str:
    name = errno.errorcode.get(error.errno or 0, str(error.errno))
    return f"{name} ({os.strerror(error.errno or 0)})"


def write(directory: str, name: str, value: str | int) -> None:
    path = os.path.join(directory, name)
    text = str(value)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)  # kernfs ignores O_TRUNC
    except OSError as e:
        raise CgroupError(f"write {text!r} to {path}: {os_error_text(e)}") from None
    try:
        os.write(fd, text.encode())
    except OSError as e:
        raise CgroupError(f"write {text!r} to {path}: {os_error_text(e)}") from None
    finally:
        os.close(fd)


def read(directory: str, name: str) -> str | None:
    """The file's text without the trailing newline, or None when it does not exist."""
    try:
        with open(os.path.join(directory, name)) as f:
            return f.read().rstrip("\n")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CgroupError(f"read {os.path.join(directory, name)}: {os_error_text(e)}") from None


def read_int(directory: str, name: str) -> int | None:
    """An integer file; ``max`` and v1's huge "unlimited" values read as None."""
    text = read(directory, name)
    if text is None or text.strip() in ("", "max"):
        return None
    value = int(text.split()[0])
    return None if value >= UNLIMITED_THRESHOLD else value


def read_keyed(directory: str, name: str) -> dict[str, int]:
    """A flat-keyed file (``key value`` per line: memory.stat, cpu.stat, memory.events)."""
    text = read(directory, name) or ""
    result: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            result[parts[0]] = int(parts[1])
    return result


def exists(directory: str, name: str) -> bool:
    return os.path.exists(os.path.join(directory, name))


def pids_recursive(directory: str) -> list[int]:
    """Every pid in ``cgroup.procs`` of the directory and its sub-cgroups (duplicates removed, sorted)."""
    found: set[int] = set()
    if not os.path.isdir(directory):
        return []
    for root, _dirs, _files in os.walk(directory):
        text = read(root, "cgroup.procs")
        if text:
            found.update(int(line) for line in text.split())
    return sorted(found)


def make_dirs(directory: str) -> list[str]:
    """``mkdir -p``; returns the directories it created, top first (v1 cpuset must seed them in that order)."""
    missing: list[str] = []
    current = directory
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    created: list[str] = []
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o755)
            created.append(path)
        except FileExistsError:
            pass
        except OSError as e:
            raise CgroupError(f"mkdir {path}: {os_error_text(e)}") from None
    return created


def remove_tree(directory: str, timeout: float = 2.0) -> None:
    """rmdir the cgroup and its sub-cgroups bottom-up; EBUSY (processes still exiting) is retried briefly."""
    if not os.path.isdir(directory):
        return
    subdirs = [root for root, _dirs, _files in os.walk(directory)]
    deadline = time.monotonic() + timeout
    for path in sorted(subdirs, key=lambda p: p.count(os.sep), reverse=True):
        delay = 0.002
        while True:
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise CgroupError(f"rmdir {path}: {os_error_text(e)}") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
