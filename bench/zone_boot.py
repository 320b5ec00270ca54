"""Benchmark (not a test): zone boot under QEMU against a busybox ``/init`` baseline, same kernel, same run.

For each of N rounds (interleaved, so all three see the same machine load):
  baseline  busybox-only initrd (+ the same boot modules), same disks and devices; wall time from QEMU start
            to its ``BASELINE-READY`` console line and to the output of ``echo``; when the kernel handed over
            to its /init (``BASELINE-INIT``) and what its PID 1 (a busybox shell) holds (``BASELINE-MEM``)
  zone      our Nuitka initrd + config disk + root image; wall time from QEMU start to the IDM ``zone.ready``
            event and to the first byte of the main container's output (``echo``) over IDM; the boot timeline
            (each phase's duration, and PID 1's VmRSS/RssAnon/RssShmem at its end) from the ready event
  no-userns the same zone with ``--no-userns``: the cost of the container's user namespace is its
            ``containers`` boot phase against this one's
  --also    other zone initrds (LABEL=FILE), booted in every round too: A/B comparisons in one run
Prints the medians side by side (a per-phase table, the initrds' compressed and raw sizes, PID 1's memory)
and the ratios against the baseline (goals: ready <= 2.0x baseline; PID 1 VmRSS <= 20 MB; initrd <= 10 MB).
``--network`` gives the zones QEMU user networking, so their ``network`` phase runs too.

    python3 bench/zone_boot.py [--rounds 3] [--kernel LAYOUT] [--initrd FILE] [--also LABEL=FILE]... [--network]
                               [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
from host.zonedef import NetworkDef, ZoneDef  # noqa: E402

MARK_TEXT = "hello-from-bench"
MB = 1e6
GOAL_RATIO, GOAL_RSS_MB, GOAL_INITRD_MB = 2.0, 20.0, 10.0
MEMORY_KEYS = ("rss", "anon", "shmem")   # VmRSS, RssAnon, RssShmem


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


def _console_value(console: str, mark: str) -> str:
    found = re.search(rf"^{mark} (.*)$", console, re.MULTILINE)
    return found.group(1).strip() if found else ""


def _baseline_memory(line: str) -> dict[str, int]:
    """``VmRSS: 1234 kB RssAnon: ...`` -> {"rss": bytes, "anon": ..., "shmem": ...}."""
    names = {"VmRSS": "rss", "RssAnon": "anon", "RssShmem": "shmem"}
    return {names[key]: int(value) * 1024 for key, value in re.findall(r"(\w+):\s*(\d+)\s*kB", line) if key in names}


def boot_baseline(definition: ZoneDef, state: Path, kernel_layout: str, bb_initrd: Path) -> dict:
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
    console = zone.console_log.read_text(errors="replace")
    if ready is None or output is None:
        raise SystemExit(f"baseline did not boot; console:\n{console[-2000:]}")
    init_at = float(_console_value(console, "BASELINE-INIT") or 0)
    ready_at = float(_console_value(console, "BASELINE-READY") or 0)
    return {"ready": ready - start, "output": output - start, "init_at": init_at, "ready_since_kernel": ready_at,
            "memory": _baseline_memory(_console_value(console, "BASELINE-MEM"))}


def boot_zone(definition: ZoneDef, state: Path) -> dict:
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
    payload = event.payload
    timeline = payload["boot"]
    assert isinstance(timeline, dict)
    phases = [p for p in timeline["phases"] if p["name"] != "ready"]
    ready_at = next((p["start"] for p in timeline["phases"] if p["name"] == "ready"), 0.0)
    stage0 = next((p for p in phases if p["name"] == "stage0"), None)
    memory = payload.get("init_memory") or {"rss": payload.get("init_rss") or 0}
    return {"ready": ready - start, "output": (first or ready) - start, "ready_since_kernel": ready_at,
            "init_at": stage0["start"] if stage0 else timeline.get("init_started", 0.0),
            "phases": {p["name"]: p.get("duration") or 0.0 for p in phases},
            "phase_memory": {p["name"]: p["memory"] for p in phases if p.get("memory")},
            "memory": {key: memory.get(key, 0) for key in MEMORY_KEYS}}


def initrd_sizes(path: str | Path) -> dict[str, int]:
    """The file's size and the size of the cpio the kernel unpacks from it (zstd frames decompressed)."""
    data = Path(path).read_bytes()
    raw = len(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as reader:
            raw = sum(len(chunk) for chunk in iter(lambda: reader.read(1 << 20), b""))
    return {"compressed": len(data), "raw": raw}


def summarize(rounds: dict[str, list[dict]], sizes: dict[str, dict[str, int]]) -> dict:
    def median(kind: str, *path: str) -> float:
        values = []
        for record in rounds[kind]:
            value = record
            for key in path:
                value = value.get(key, {}) if isinstance(value, dict) else {}
            values.append(value if isinstance(value, int | float) else 0.0)
        return statistics.median(values)

    phase_names: list[str] = []
    for record in rounds["zone"]:
        phase_names += [name for name in record["phases"] if name not in phase_names]
    summary: dict = {
        "accel": os.environ.get("ZONE_ACCEL") or "auto",
        "rounds": len(rounds["zone"]),
        "baseline": {key: median("baseline", key) for key in ("ready", "output", "init_at", "ready_since_kernel")},
        "zone": {key: median("zone", key) for key in ("ready", "output", "init_at", "ready_since_kernel")},
        "phases": {name: {"duration": median("zone", "phases", name),
                          "no_userns": median("no-userns", "phases", name),
                          **{key: median("zone", "phase_memory", name, key) for key in MEMORY_KEYS}}
                   for name in phase_names},
        "memory": {"zone": {key: median("zone", "memory", key) for key in MEMORY_KEYS},
                   "baseline": {key: median("baseline", "memory", key) for key in MEMORY_KEYS}},
        "initrd": sizes,
    }
    summary["variants"] = {
        kind: {"ready": median(kind, "ready"), "ratio": median(kind, "ready") / summary["baseline"]["ready"],
               "init_at": median(kind, "init_at"), "ready_since_kernel": median(kind, "ready_since_kernel"),
               "phases": {name: median(kind, "phases", name) for name in phase_names},
               "memory": {key: median(kind, "memory", key) for key in MEMORY_KEYS}, "initrd": sizes[kind]}
        for kind in rounds if kind not in ("baseline", "zone", "no-userns")}
    summary["ready_ratio"] = summary["zone"]["ready"] / summary["baseline"]["ready"]
    summary["output_ratio"] = summary["zone"]["output"] / summary["baseline"]["output"]
    containers = summary["phases"].get("containers", {})
    summary["userns_ratio"] = containers.get("duration", 0.0) / (containers.get("no_userns") or 1e-9)
    return summary


def print_table(s: dict) -> None:
    zone, base = s["zone"], s["baseline"]
    print(f"zone boot under QEMU ({s['accel']}), median of {s['rounds']} interleaved rounds")
    print(f"{'':34}{'zone':>12}{'baseline':>12}")
    print(f"{'kernel start -> /init':34}{zone['init_at']:>10.2f} s{base['init_at']:>10.2f} s")
    print(f"{'/init -> ready':34}{zone['ready_since_kernel'] - zone['init_at']:>10.2f} s"
          f"{base['ready_since_kernel'] - base['init_at']:>10.2f} s")
    print(f"{'ready since kernel start':34}{zone['ready_since_kernel']:>10.2f} s{base['ready_since_kernel']:>10.2f} s")
    print(f"{'wall: QEMU start -> ready':34}{zone['ready']:>10.2f} s{base['ready']:>10.2f} s"
          f"   {s['ready_ratio']:.2f}x (goal <= {GOAL_RATIO}x)")
    print(f"{'wall: QEMU start -> first output':34}{zone['output']:>10.2f} s{base['output']:>10.2f} s"
          f"   {s['output_ratio']:.2f}x")
    mem_zone, mem_base = s["memory"]["zone"], s["memory"]["baseline"]
    for key, label in (("rss", "VmRSS"), ("anon", "RssAnon"), ("shmem", "RssShmem")):
        goal = f"   (goal <= {GOAL_RSS_MB:.0f} MB)" if key == "rss" else ""
        print(f"{'PID 1 ' + label + ' at ready':34}{mem_zone[key] / MB:>9.1f} MB{mem_base[key] / MB:>9.1f} MB{goal}")
    zi, bi = s["initrd"]["zone"], s["initrd"]["baseline"]
    print(f"{'initrd, compressed':34}{zi['compressed'] / MB:>9.2f} MB{bi['compressed'] / MB:>9.2f} MB"
          f"   (goal <= {GOAL_INITRD_MB:.0f} MB)")
    print(f"{'initrd, raw cpio the kernel unpacks':34}{zi['raw'] / MB:>9.2f} MB{bi['raw'] / MB:>9.2f} MB")
    print(f"{'+ the boot-modules cpio (both)':34}{s['initrd']['boot_modules']['raw'] / MB:>9.2f} MB")
    print()
    print(f"{'zone phase':16}{'duration':>10}{'no-userns':>11}{'VmRSS':>9}{'RssAnon':>9}{'RssShmem':>10}"
          "  (PID 1 after it, MB)")
    for name, row in s["phases"].items():
        print(f"{name:16}{row['duration']:>9.3f}s{row['no_userns']:>10.3f}s{row['rss'] / MB:>9.1f}"
              f"{row['anon'] / MB:>9.1f}{row['shmem'] / MB:>10.1f}")
    print(f"containers phase: user namespace / --no-userns {s['userns_ratio']:.2f}x")
    if s["variants"]:
        print_variants(s)


def print_variants(s: dict) -> None:
    """The zone next to the --also initrds, booted in the same rounds."""
    columns = {"zone": {**s["zone"], "ratio": s["ready_ratio"], "memory": s["memory"]["zone"],
                        "initrd": s["initrd"]["zone"],
                        "phases": {name: row["duration"] for name, row in s["phases"].items()}},
               **s["variants"]}
    print()
    print(f"{'':28}" + "".join(f"{label[:12]:>13}" for label in columns))

    def row(label: str, cell) -> None:
        print(f"{label:28}" + "".join(f"{cell(c):>13}" for c in columns.values()))

    row("wall: QEMU start -> ready", lambda c: f"{c['ready']:.2f} s")
    row("  ratio to the baseline", lambda c: f"{c['ratio']:.2f}x")
    row("kernel start -> /init", lambda c: f"{c['init_at']:.2f} s")
    for name in s["phases"]:
        row(f"  {name}", lambda c, name=name: f"{c['phases'].get(name, 0.0):.3f} s")
    row("ready since kernel start", lambda c: f"{c['ready_since_kernel']:.2f} s")
    for key, label in (("rss", "VmRSS"), ("anon", "RssAnon"), ("shmem", "RssShmem")):
        row(f"PID 1 {label}", lambda c, key=key: f"{c['memory'][key] / MB:.1f} MB")
    row("initrd compressed", lambda c: f"{c['initrd']['compressed'] / MB:.2f} MB")
    row("initrd raw", lambda c: f"{c['initrd']['raw'] / MB:.2f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kernel", help="kernel OCI layout (default: built from linux-image-cloud-amd64)")
    parser.add_argument("--initrd", help="zone initrd (default: the Nuitka build of this tree)")
    parser.add_argument("--also", action="append", default=[], metavar="LABEL=FILE",
                        help="another zone initrd to boot in every round (repeatable)")
    parser.add_argument("--network", action="store_true", help="QEMU user networking for the zones")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    also = dict(item.split("=", 1) for item in args.also)
    if any(not label or label in ("baseline", "zone", "no-userns") or not Path(path).is_file()
           for label, path in also.items()):
        parser.error("--also wants LABEL=FILE with an existing file and a label other than baseline/zone/no-userns")
    kernel = args.kernel or str(images.default_kernel_image())
    initrd = args.initrd or str(images.default_initrd())
    state = Path(tempfile.mkdtemp(prefix="zone-bench-"))
    bb_initrd = build_busybox_initrd(state / "busybox-initrd.cpio.zst")
    sizes = {"zone": initrd_sizes(initrd), "baseline": initrd_sizes(bb_initrd)}
    definition = ZoneDef(name="bench", kernel_image=kernel, initrd=initrd, command=["echo", MARK_TEXT],
                         network=NetworkDef() if args.network else None)
    shared = ZoneDef(**{**definition.__dict__, "user_namespace": False})
    variants = {label: ZoneDef(**{**definition.__dict__, "initrd": path}) for label, path in also.items()}
    sizes.update({label: initrd_sizes(path) for label, path in also.items()})
    rounds: dict[str, list[dict]] = {"baseline": [], "zone": [], "no-userns": [], **{label: [] for label in also}}
    sizes["boot_modules"] = initrd_sizes(images.prepare_kernel(kernel).boot_modules)
    try:
        for i in range(args.rounds):
            rounds["baseline"].append(boot_baseline(definition, state, kernel, bb_initrd))
            rounds["zone"].append(boot_zone(definition, state))
            rounds["no-userns"].append(boot_zone(shared, state))
            for label, variant in variants.items():
                rounds[label].append(boot_zone(variant, state))
            print(f"round {i + 1}: " + ", ".join(f"{kind} ready {rows[-1]['ready']:.2f} s"
                                                 for kind, rows in rounds.items()), file=sys.stderr)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    summary = summarize(rounds, sizes)
    if args.json:
        print(json.dumps({**summary, "samples": rounds}, indent=2))
    else:
        print_table(summary)
    return 0


if __name__ == "__main__":
    from idm.errors import IdmError
    from styrolite.errors import StyroliteError, describe

    try:
        raise SystemExit(main())
    except (StyroliteError, IdmError) as error:
        raise SystemExit(f"zone_boot: {describe(error)}") from None
