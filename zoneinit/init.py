"""The zone's PID 1: boot the zone (docs/boot.md), then supervise it forever.

    main()  ->  boot(Zone())  ->  supervise(zone)   (never returns when it is PID 1)

The phases and their order are ``zoneinit.boot.phases``; the state they share is ``zoneinit.boot.zone``.
"""

from __future__ import annotations

import contextlib
import os
import sys

from zoneinit.boot.phases import boot, supervise
from zoneinit.boot.zone import Zone
from zoneinit.memory import datetime_from_c, drop_startup_modules


def main() -> int:
    if os.getpid() != 1:
        # the boot mounts over /run, /tmp, /dev...: on a host that would damage the running system
        print("zone-init: refusing to boot: not PID 1 (this is the zone's init, run by the kernel)",
              file=sys.stderr)
        return 2
    drop_startup_modules()   # inspect, ast, dis...: imported by Nuitka's start-up, never used by PID 1
    datetime_from_c()        # msgpack's datetime without datetime.py's pure-Python half
    zone = Zone()
    try:
        boot(zone)
    except BaseException as e:  # the boot guards each phase; this is the last line of defence
        with contextlib.suppress(BaseException):
            zone.report("boot", e)
    supervise(zone)
    return 0


if __name__ == "__main__":
    sys.exit(main())
