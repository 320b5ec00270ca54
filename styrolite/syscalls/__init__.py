"""The one thin layer between Python and the kernel (see interface.py)."""

from styrolite.syscalls.interface import Syscalls
from styrolite.syscalls.linux import LINUX, KernelError, LinuxSyscalls

__all__ = ["LINUX", "KernelError", "LinuxSyscalls", "Syscalls"]
