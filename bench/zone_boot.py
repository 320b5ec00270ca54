"""Benchmark (not a test): zone boot under QEMU against a busybox ``/init`` baseline, same kernel, same run.

For each of N rounds (alternating, so both see the same machine load):
  baseline  busybox-only initrd (+ the same boot modules), same disks and devices; wall time from QEMU start
            to its ``BASELINE-READY`` console line and to the output of ``echo``
  zone      our Nuitka initrd + config disk + root image; wall time from QEMU start to the IDM ``zone.ready``
            event and to the first byte of the main container's output (``echo``) over IDM
  no-userns the same zone with ``--no-userns``: the cost of the container's user namespace is its
            ``containers`` boot phase against this one's
then PID 1's VmRSS after ready (from the ready event). Prints medians and ratios (target: zone <= 2.0x
baseline; PID 1 RSS <= 20 MB).

    python3 bench/zone_boot.py [--rounds 3] [--kernel LAYOUT] [--initrd FILE] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "qemu-tests"))

from busybox_initrd import build_busybox_initrd  # noqa: E402

from host import images  # noqa: E402
from host.backends.qemu import QemuBackend  # noqa: E402
from host.launch import prepare_boot  # noqa: E402
from host.lifecycle import acknowledge_exit  # noqa: E402
from host.link import ZoneLink  # noqa: E402
from host.state import zone_dir  # noqa: E402
from host.zonedef import ZoneDef  # noqa: E402

MARK_TEXT = "hello-from-bench"


def wait_for_text(path: Path, text: str, process: QemuBackend, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if text in path.read_text(errors="replace"):
                return time.monotonic()
        except OSError:
            pass
        if not process.alive():
            return None
        time.sleep(0.005)
    return None


def boot_baseline(definition: ZoneDef, state: Path, kernel_layout: str, bb_initrd: Path) -> dict[str, float]:
    zone = zone_dir(f"baseline-{time.monotonic_ns()}", state)
    zone.create(definition)
    qemu = QemuBackend(zone)
    boot = prepare_boot(definition, zone, qemu)
    boot.initrd = images.boot_initrd(bb_initrd, images.prepare_kernel(kernel_layout))
    cmdline = qemu.kernel_cmdline(definition) + f" baseline.cmd=echo,{MARK_TEXT}"
    start = time.monotonic()
    qemu.boot(definition, boot, daemonize=False, cmdline=cmdline)
    ready = wait_for_text(zone.console_log, "BASELINE-READY", qemu, 300)
    output = wait_for_text(zone.console_log, f"\n{MARK_TEXT}", qemu, 60)
    qemu.wait(60) or qemu.kill()
    if ready is None or output is None:
        raise SystemExit(f"baseline did not boot; console:\n{zone.console_log.read_text()[-2000:]}")
    return {"ready": ready - start, "output": output - start}


def boot_zone(definition: ZoneDef, state: Path) -> dict[str, float]:
    zone = zone_dir(f"zone-{time.monotonic_ns()}", state)
    definition = ZoneDef(**{**definition.__dict__, "name": zone.name})
    zone.create(definition)
    qemu = QemuBackend(zone)
    boot = prepare_boot(definition, zone, qemu)
    start = time.monotonic()
    qemu.boot(definition, boot, daemonize=False)
    link = ZoneLink.open(zone, timeout=300)
    try:
        event = link.wait_event("zone.ready", timeout=300)
        ready = time.monotonic()
        main = str(event.payload.get("main") or "main")
        first = None
        for _channel, data in link.follow_logs(main):
            if data and first is None:
                first = time.monotonic()
        acknowledge_exit(link, main)   # PID 1 powers off without waiting
    finally:
        link.close()
    qemu.wait(60) or qemu.kill()
    rss = event.payload.get("init_rss") or 0
    boot_timeline = event.payload["boot"]
    assert isinstance(boot_timeline, dict)
    phases = {p["name"]: p for p in boot_timeline["phases"]}
    return {"ready": ready - start, "output": (first or ready) - start, "init_rss_mb": rss / 1e6,
            "ready_since_kernel": phases.get("ready", {}).get("start", 0.0),
            "containers_phase": phases.get("containers", {}).get("duration", 0.0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kernel", help="kernel OCI layout (default: built from linux-image-cloud-amd64)")
    parser.add_argument("--initrd", help="zone initrd (default: the Nuitka build of this tree)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    kernel = args.kernel or str(images.default_kernel_image())
    initrd = args.initrd or str(images.default_initrd())
    state = Path(tempfile.mkdtemp(prefix="zone-bench-"))
    bb_initrd = build_busybox_initrd(state / "busybox-initrd.cpio.zst")
    definition = ZoneDef(name="bench", kernel_image=kernel, initrd=initrd, command=["echo", MARK_TEXT])
    shared = ZoneDef(**{**definition.__dict__, "user_namespace": False})
    rounds: dict[str, list[dict[str, float]]] = {"baseline": [], "zone": [], "no-userns": []}
    try:
        for i in range(args.rounds):
            rounds["baseline"].append(boot_baseline(definition, state, kernel, bb_initrd))
            rounds["zone"].append(boot_zone(definition, state))
            rounds["no-userns"].append(boot_zone(shared, state))
            print(f"round {i + 1}: " + ", ".join(f"{kind} {rows[-1]}" for kind, rows in rounds.items()),
                  file=sys.stderr)
    finally:
        shutil.rmtree(state, ignore_errors=True)

    def median(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in rounds[kind])

    summary = {
        "accel": os.environ.get("ZONE_ACCEL") or "auto",
        "rounds": args.rounds,
        "baseline_ready_s": median("baseline", "ready"),
        "baseline_output_s": median("baseline", "output"),
        "zone_ready_s": median("zone", "ready"),
        "zone_output_s": median("zone", "output"),
        "zone_ready_since_kernel_s": median("zone", "ready_since_kernel"),
        "init_rss_mb": median("zone", "init_rss_mb"),
        "containers_phase_s": median("zone", "containers_phase"),
        "containers_phase_no_userns_s": median("no-userns", "containers_phase"),
    }
    summary["ready_ratio"] = summary["zone_ready_s"] / summary["baseline_ready_s"]
    summary["output_ratio"] = summary["zone_output_s"] / summary["baseline_output_s"]
    summary["userns_ratio"] = summary["containers_phase_s"] / (summary["containers_phase_no_userns_s"] or 1e-9)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"QEMU wall time to ready:        zone {summary['zone_ready_s']:.2f} s, "
              f"busybox baseline {summary['baseline_ready_s']:.2f} s, ratio {summary['ready_ratio']:.2f}x "
              f"(target <= 2.0x)")
        print(f"QEMU wall time to first output: zone {summary['zone_output_s']:.2f} s, "
              f"busybox baseline {summary['baseline_output_s']:.2f} s, ratio {summary['output_ratio']:.2f}x")
        print(f"PID 1 VmRSS after ready:        {summary['init_rss_mb']:.1f} MB (target <= 20 MB)")
        print(f"containers boot phase:          user namespace {summary['containers_phase_s']:.2f} s, "
              f"--no-userns {summary['containers_phase_no_userns_s']:.2f} s, ratio {summary['userns_ratio']:.2f}x")
    return 0


if __name__ == "__main__":
    from idm.errors import IdmError
    from styrolite.errors import StyroliteError, describe

    try:
        raise SystemExit(main())
    except (StyroliteError, IdmError) as error:
        raise SystemExit(f"zone_boot: {describe(error)}") from None
