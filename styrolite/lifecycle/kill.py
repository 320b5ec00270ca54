"""``kill``: send a signal to the container's init (race-free through a pidfd), or to all its processes."""

from __future__ import annotations

import os
import signal as signal_module

from styrolite.errors import ContainerError
from styrolite.lifecycle.common import cgroup_of, require_status
from styrolite.state import StateStore
from styrolite.syscalls import LINUX, Syscalls


def parse_signal(text: str | int) -> int:
    """``9``, ``KILL``, ``SIGKILL`` or ``sigkill`` -> 9."""
    if isinstance(text, int):
        number = text
    elif str(text).isdigit():
        number = int(text)
    else:
        name = str(text).upper()
        name = name if name.startswith("SIG") else "SIG" + name
        try:
            number = int(signal_module.Signals[name])
        except KeyError:
            raise ContainerError(f"unknown signal {text!r}") from None
    if not 1 <= number <= signal_module.SIGRTMAX:
        raise ContainerError(f"signal {text!r} out of range 1..{int(signal_module.SIGRTMAX)}")
    return number


def kill(store: StateStore, container_id: str, signum: int, all_processes: bool = False,
         sys: Syscalls = LINUX) -> None:
    state = store.load(container_id)
    require_status(state, ("created", "running", "paused"), "signal")
    if all_processes:
        cgroup_of(state).kill_all(signum)
        return
    try:
        pidfd = sys.pidfd_open(state.pid)
    except OSError as e:
        raise ContainerError(f"signal container {container_id!r}: its init (pid {state.pid}) is gone") from e
    try:
        sys.pidfd_send_signal(pidfd, signum)
    except OSError as e:
        raise ContainerError(f"send signal {signum} to container {container_id!r}") from e
    finally:
        os.close(pidfd)
