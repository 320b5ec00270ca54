"""Run code inside another network namespace without moving the caller.

``setns(CLONE_NEWNET)`` changes the namespace of the calling *thread* only, so the work runs in a fresh
thread that joins the namespace, does it and ends: the shim's own threads never change namespace, and no
fork is needed (forking a multi-threaded shim is fragile). Sockets (netlink, /dev/net/tun) keep the
namespace they were created in, so file descriptors opened in that thread stay valid -- and stay bound to
the pod namespace -- after it ends.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from host.pod.errors import PodNetworkError
from styrolite.syscalls import LINUX
from styrolite.syscalls import constants as k

T = TypeVar("T")


def open_netns(netns: str | Path) -> int:
    """An O_RDONLY fd of the namespace file; PodNetworkError names the path when it is missing."""
    try:
        return os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise PodNetworkError(f"pod netns {netns}: no such file (has containerd removed the sandbox?)") from e
    except OSError as e:
        raise PodNetworkError(f"pod netns {netns}: cannot open it") from e


def run_in_netns(netns: str | Path, work: Callable[[], T]) -> T:
    """``work()`` in a new thread that has joined the network namespace at ``netns``; its result or its
    exception comes back to the caller."""
    fd = open_netns(netns)
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            try:
                LINUX.setns(fd, k.CLONE_NEWNET)
            except OSError as e:
                raise PodNetworkError(f"pod netns {netns}: not a network namespace, or setns refused") from e
            outcome["value"] = work()
        except BaseException as e:  # handed to the caller's thread, re-raised there
            outcome["error"] = e

    try:
        thread = threading.Thread(target=target, name=f"netns {os.path.basename(os.fspath(netns))}", daemon=True)
        thread.start()
        thread.join()
    finally:
        os.close(fd)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
