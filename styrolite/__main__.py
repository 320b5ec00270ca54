"""``python -m styrolite``: the OCI runtime command line (also the entry the host binary is compiled from)."""

from styrolite.cli import run

run()
