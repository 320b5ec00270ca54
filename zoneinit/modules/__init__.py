"""Kernel modules in the zone: the modules tree (``dep``), finit_module(2) loading (``loader``) and which
modules the zone loads when (``policy``: the boot set, file systems on first mount, drivers by name)."""
