"""Turn ``linux.namespaces`` into the flags to unshare and the files to setns into."""

from __future__ import annotations

import errno
import os

from styrolite.errors import ContainerError
from styrolite.records import field, record
from styrolite.spec.model import Spec
from styrolite.syscalls import LINUX, Syscalls
from styrolite.syscalls import constants as k

# setns order: the user namespace first (it grants the capabilities the others need), then the rest;
# the mount namespace last so that /proc paths of the others still resolve on the host.
JOIN_ORDER = ["user", "cgroup", "ipc", "uts", "network", "pid", "time", "mount"]


@record
class NamespacePlan:
    new_user: bool = False
    unshare_flags: int = 0  # every new namespace except user (done first, on its own)
    join: list[tuple[str, str]] = field(default_factory=list)  # (type, path) in JOIN_ORDER

    def creates(self, ns_type: str) -> bool:
        if ns_type == "user":
            return self.new_user
        return bool(self.unshare_flags & k.NAMESPACE_FLAGS[ns_type])

    def joins(self, ns_type: str) -> bool:
        return any(t == ns_type for t, _ in self.join)


def plan_namespaces(spec: Spec) -> NamespacePlan:
    plan = NamespacePlan()
    entries = spec.linux.namespaces if spec.linux else []
    by_type = {ns.type: ns for ns in entries}
    for ns_type in JOIN_ORDER:
        ns = by_type.get(ns_type)
        if ns is None:
            continue
        if ns.path:
            plan.join.append((ns_type, ns.path))
        elif ns_type == "user":
            plan.new_user = True
        else:
            plan.unshare_flags |= k.NAMESPACE_FLAGS[ns_type]
    return plan


def open_namespace_files(join: list[tuple[str, str]]) -> list[tuple[str, int]]:
    """Open every namespace file first: after the first setns some paths may no longer resolve."""
    opened: list[tuple[str, int]] = []
    try:
        for ns_type, path in join:
            try:
                opened.append((ns_type, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
            except OSError as e:
                raise ContainerError(f"open {ns_type} namespace {path!r}: {e.strerror}") from e
    except BaseException:
        for _, fd in opened:
            os.close(fd)
        raise
    return opened


def join_namespaces(opened: list[tuple[str, int]], sys: Syscalls = LINUX) -> None:
    for ns_type, fd in opened:
        try:
            sys.setns(fd, k.NAMESPACE_FLAGS[ns_type])
        except OSError as e:
            raise ContainerError(f"join {ns_type} namespace") from e
        finally:
            os.close(fd)


def join_before_user(opened: list[tuple[str, int]], sys: Syscalls = LINUX) -> list[tuple[str, int]]:
    """Join, now, every non-user namespace of ``opened`` that we may join while still in our own user namespace;
    return the ones refused with EPERM (still open) to join after the user namespace, and the user one.

    Entering a user namespace gives up privilege over everything its owner does not own: a network namespace
    the container shares with others (a zone's workload namespace) can only be joined before it. A caller
    without privilege here (rootless) needs the target user namespace first: its EPERMs are deferred."""
    has_user = any(t == "user" for t, _ in opened)
    later = [item for item in opened if item[0] == "user"]
    for index, (ns_type, fd) in enumerate(opened):
        if ns_type == "user":
            continue
        try:
            sys.setns(fd, k.NAMESPACE_FLAGS[ns_type])
        except OSError as e:
            if e.errno == errno.EPERM and has_user:
                later.append((ns_type, fd))
                continue
            for _, other in opened[index:]:
                os.close(other)
            raise ContainerError(f"join {ns_type} namespace") from e
        os.close(fd)
    return later
