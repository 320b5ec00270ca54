"""Nuitka's entry for /lib/zone/zone-init: the multi-call binary's main is ``zoneinit.multicall.main``.

It sits alone in this directory because Nuitka looks up every import in the entry script's own directory
first: compiled as the entry itself, zoneinit/multicall.py would put zoneinit/ there, and zoneinit/idm/ (PID 1's
IDM service) would shadow the top-level ``idm`` package (the protocol).
"""

import os
import sys
import time

# when the interpreter reached our code: PID 1's boot timeline splits stage0 (exec, interpreter start) from the
# imports that follow (zoneinit.boot.zone)
os.environ["ZONE_ENTRY_NS"] = str(time.clock_gettime_ns(time.CLOCK_BOOTTIME))

from zoneinit.multicall import main

sys.exit(main())
