"""``python -m styrolite``: the OCI runtime command line (also the entry the host binary is compiled from)."""

import sys

from styrolite.cli import main

sys.exit(main())
