"""PID 1's boot: the phases in order (``phases``, docs/boot.md), the state they share (``zone``), the kernel
command line (``cmdline``) and the boot timeline (``timing``)."""
