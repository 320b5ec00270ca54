"""Nuitka's entry for /lib/zone/zone-init: the multi-call binary's main is ``zoneinit.multicall.main``.

It sits alone in this directory because Nuitka looks up every import in the entry script's own directory
first: compiled as the entry itself, zoneinit/multicall.py would put zoneinit/ there, and zoneinit/idm/ (PID 1's
IDM service) would shadow the top-level ``idm`` package (the protocol).
"""

import sys

from zoneinit.multicall import main

sys.exit(main())
