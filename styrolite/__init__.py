"""Styrolite: the OCI container runtime embedded in every zone.

The zone's PID 1 uses it as a library (``styrolite.api``); ``/bin/styrolite`` is the
standard OCI runtime command line over the same code (``styrolite.cli``).
"""

__version__ = "0.1.0"
OCI_VERSION = "1.3.0"
