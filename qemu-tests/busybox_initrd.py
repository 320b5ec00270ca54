"""A busybox-only initrd: the baseline for bench/zone_boot.py and a probe of the QEMU device layout.

Its /init (a shell script) mounts proc/sys/dev, prints ``BASELINE-INIT <uptime>`` (when the kernel handed
over to /init), loads the boot modules the host appended (``modules.boot`` order, but for the NIC drivers, which
a zone loads only when it has a network), prints ``BASELINE-READY <uptime>`` and ``BASELINE-MEM`` (its own
VmRSS, RssAnon, RssShmem in kB: what a minimal PID 1 holds), runs ``$BASELINE_CMD`` from the kernel command line
(``baseline.cmd=...``, spaces as ``,``) and powers off.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from host.zonebuild_import import ensure_zonebuild  # noqa: E402

BUSYBOX = "/bin/busybox"

INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
read -r up _ < /proc/uptime; echo "BASELINE-INIT $up"  # shell builtins: no fork added before READY
for dir in /lib/modules/*; do
  [ -f "$dir/modules.boot" ] || continue
  while read -r mod; do
    case "$mod" in */net/*) continue ;; esac  # NIC drivers: the zone, too, loads them only for a network
    insmod "$dir/$mod" 2>/dev/null
  done < "$dir/modules.boot"
done
echo "BASELINE-READY $(cut -d' ' -f1 /proc/uptime)"
echo "BASELINE-MEM $(grep -E '^(VmRSS|RssAnon|RssShmem):' /proc/$$/status | tr -s ' \t\n' ' ')"
for word in $(cat /proc/cmdline); do
  case "$word" in
    baseline.cmd=*) cmd=$(echo "${word#baseline.cmd=}" | tr ',' ' ') ;;
    baseline.probe) probe=1 ;;
  esac
done
if [ -n "$probe" ]; then
  sleep 1
  for b in /sys/block/vd*; do echo "BLOCK $(basename $b) $(cat $b/serial 2>/dev/null)"; done
  for p in /sys/class/virtio-ports/*; do echo "PORT $(basename $p) $(cat $p/name)"; done
fi
[ -n "$cmd" ] && $cmd
echo "BASELINE-DONE $(cut -d' ' -f1 /proc/uptime)"
poweroff -f
"""


def build_busybox_initrd(out: Path) -> Path:
    ensure_zonebuild()
    from zonebuild.cpio import CpioArchive

    archive = CpioArchive()
    for directory in ("bin", "proc", "sys", "dev", "tmp", "lib/modules"):
        archive.add_dir(directory)
    archive.add_device("dev/console", "c", 5, 1)
    archive.add_file("bin/busybox", source=BUSYBOX, mode=0o755)
    archive.add_symlink("bin/sh", "busybox")
    archive.add_file("init", INIT_SCRIPT.encode(), mode=0o755)
    return archive.write(out, compression="zstd", level=3)
