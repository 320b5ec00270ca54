"""The standard streams a container process gets."""

from __future__ import annotations

import os

from styrolite.records import record


@record
class Stdio:
    """Descriptors to become the process's fds 0, 1, 2; ``None`` leaves that stream inherited unchanged."""

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None

    def install(self) -> None:
        """In the child: dup the given descriptors onto 0, 1 and 2."""
        for target, fd in enumerate((self.stdin, self.stdout, self.stderr)):
            if fd is not None and fd != target:
                os.dup2(fd, target, inheritable=True)
            elif fd == target:
                os.set_inheritable(target, True)


@record
class Pipes:
    """Pipes for a container's stdio: the runtime's ends (write to stdin, read stdout/stderr) and the child's."""

    child: Stdio
    stdin: int
    stdout: int
    stderr: int

    @classmethod
    def open(cls) -> Pipes:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        return cls(Stdio(in_r, out_w, err_w), in_w, out_r, err_r)

    def close_child_ends(self) -> None:
        for fd in (self.child.stdin, self.child.stdout, self.child.stderr):
            if fd is not None:
                os.close(fd)
