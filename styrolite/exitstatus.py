"""The one place that turns a waitpid status into an exit code (the shell's convention)."""

from __future__ import annotations

import os


def exit_code_of(wait_status: int) -> int:
    """WEXITSTATUS for a normal exit, 128+signo for a death by signal, 255 for anything else."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    if os.WIFEXITED(wait_status):
        return os.WEXITSTATUS(wait_status)
    return 255
