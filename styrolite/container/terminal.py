"""Make a pty slave the calling process's controlling terminal and its stdio (init and exec share this)."""

from __future__ import annotations

import fcntl
import os
import termios


def take_terminal(slave: int) -> None:
    """After setsid(): the slave becomes the controlling tty and fds 0, 1, 2."""
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for target in (0, 1, 2):
        os.dup2(slave, target)
    if slave > 2:
        os.close(slave)
