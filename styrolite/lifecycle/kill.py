"""``kill``: send a signal to the container's init (race-free through a pidfd), or to all its processes."""

from __future__ import annotations

import _signal  # the C module under `signal`, whose IntEnums would import enum for every call
import os

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
            number = _signal_numbers()[name]
        except KeyError:
            raise ContainerError(f"unknown signal {text!r}") from None
    if not 1 <= number <= _signal.SIGRTMAX:
        raise ContainerError(f"signal {text!r} out of range 1..{_signal.SIGRTMAX}")
    return number


def _signal_numbers() -> dict[str, int]:
    """SIGTERM -> 15, ...: the names ``signal.Signals`` has (SIGRTMIN and SIGRTMAX included)."""
    return {name: value for name, value in vars(_signal).items()
            if name.startswith("SIG") and not name.startswith("SIG_") and isinstance(value, int)}


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
