"""Pod start latency: RunPodSandbox + CreateContainer + StartContainer until the container's first output,
handler ``edera`` (a zone per pod) against ``runc``, on the same containerd, in one run.

One node (qemu-tests/cri_lab.py: containerd 1.6 + CRI, CNI bridge, a local registry), the image pulled
before the first round. Rounds alternate runc and edera (both see the same machine load); each round is
``crictl runp``, ``crictl create``, ``crictl start`` and then the wait until the container's first line
reaches its CRI log file (polled every 5 ms), then the pod is removed. crictl's own start-up (~20 ms a call)
is in both figures alike.

The first edera round builds the container's root image from containerd's snapshot (the first pod of an
image on a node pays that once; later pods find it cached); it is reported on its own and left out of the
medians. For edera the shim's log (in containerd's) breaks each round down: network + config disk, zone
boot (QEMU start to PID 1's zone.ready), rootfs image, hot-plug (QMP + disk.attach), IDM container.create,
IDM container.start.

    python3 bench/pod_start.py [--rounds 5] [--memory 256] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "qemu-tests"))

from cri_lab import BUSYBOX_IMAGE, Lab, ShimOptions  # noqa: E402

MARK = "first-output-from-the-pod"
TIMING = re.compile(r"msg=timing (sandbox|container)=([0-9a-f]+) (.*?) runtime=")


def one_round(lab: Lab, handler: str, index: int) -> dict[str, Any]:
    name = f"{handler}-{index}"
    pod_config = lab.pod_config(name)
    container_config = lab.container_config(f"c-{name}", ["sh", "-c", f"echo {MARK}; exec sleep 3600"])
    log_file = lab.root / "pods" / f"{name}-logs" / f"c-{name}.log"
    started = time.perf_counter()
    pod = lab.crictl("runp", "--runtime", handler, pod_config).strip()
    sandbox_done = time.perf_counter()
    container = lab.crictl("create", pod, container_config, pod_config).strip()
    created = time.perf_counter()
    lab.crictl("start", container)
    start_done = time.perf_counter()
    deadline = start_done + 120
    while time.perf_counter() < deadline:
        try:
            if MARK in log_file.read_text(errors="replace"):
                break
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    else:
        raise SystemExit(f"{handler}: no output from the container within 120 s")
    first_output = time.perf_counter()
    lab.crictl("rmp", "-f", pod)
    return {"handler": handler, "pod": pod, "container": container, "total": first_output - started,
            "run_pod_sandbox": sandbox_done - started, "create_container": created - sandbox_done,
            "start_container": start_done - created, "to_first_output": first_output - start_done}


def shim_timings(log: str) -> dict[str, dict[str, float]]:
    """``timing sandbox=<id> zone_prepare=... zone_boot=...`` and ``timing container=<id> ...`` lines."""
    found: dict[str, dict[str, float]] = {}
    for _kind, ident, fields in TIMING.findall(log):
        values = found.setdefault(ident, {})
        for item in fields.split():
            key, _, value = item.partition("=")
            with contextlib.suppress(ValueError):
                values[key] = float(value)
    return found


def median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory", type=int, default=256, help="the pod zone's memory (MiB)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # a stopped run still stops its lab
    from host import images

    work = Path(tempfile.mkdtemp(prefix="zps", dir="/tmp"))
    shim = ShimOptions(kernel=str(images.default_kernel_image()), initrd=str(images.default_initrd()),
                       memory_mib=args.memory)
    lab = Lab(work, shim)
    rows: list[dict[str, Any]] = []
    try:
        lab.pull(BUSYBOX_IMAGE)
        for index in range(args.rounds + 1):   # edera's round 0 builds the root image: reported apart
            for handler in ("runc", "edera"):
                row = one_round(lab, handler, index)
                row["round"] = index
                rows.append(row)
                print(f"round {index} {handler:5}: {row['total']:.2f} s", file=sys.stderr, flush=True)
        timings = shim_timings(lab.containerd_log())
        left = lab.wait_no_leftovers(60)
    finally:
        lab.stop()
        shutil.rmtree(work, ignore_errors=True)
    for row in rows:
        if row["handler"] == "edera":
            row["shim"] = {**timings.get(row["pod"], {}), **timings.get(row["container"], {})}
    report(rows, args.json, left)
    return 0


def report(rows: list[dict[str, Any]], as_json: bool, left: list[str]) -> None:
    runc = [r for r in rows if r["handler"] == "runc" and r["round"] > 0]
    edera = [r for r in rows if r["handler"] == "edera" and r["round"] > 0]
    cold = next(r for r in rows if r["handler"] == "edera" and r["round"] == 0)
    steps = ("run_pod_sandbox", "create_container", "start_container", "to_first_output", "total")
    breakdown = ("zone_prepare", "zone_boot", "rootfs_image", "hotplug", "idm_create", "idm_start")
    summary = {
        "rounds": len(runc),
        "runc": {k: median(runc, k) for k in steps},
        "edera": {k: median(edera, k) for k in steps},
        "edera_breakdown": {k: statistics.median(r["shim"].get(k, 0.0) for r in edera) for k in breakdown},
        "edera_first_pod_of_the_image": {"total": cold["total"], **{k: cold.get("shim", {}).get(k, 0.0)
                                                                    for k in breakdown}},
        "left_behind": left,
    }
    summary["ratio"] = summary["edera"]["total"] / summary["runc"]["total"]
    summary["difference_s"] = summary["edera"]["total"] - summary["runc"]["total"]
    if as_json:
        print(json.dumps({"summary": summary, "rounds": rows}, indent=1))
        return
    print(f"pod start to first output, median of {len(runc)} rounds (s)")
    print(f"{'step':22} {'runc':>8} {'edera':>8}")
    for key in steps:
        print(f"{key:22} {summary['runc'][key]:8.2f} {summary['edera'][key]:8.2f}")
    print(f"edera / runc = {summary['ratio']:.1f}x  (+{summary['difference_s']:.2f} s)")
    print("edera breakdown (median, s): " + ", ".join(f"{k} {v:.2f}" for k, v in summary["edera_breakdown"].items()))
    first = summary["edera_first_pod_of_the_image"]
    print(f"first edera pod of the image (root image built): {first['total']:.2f} s, rootfs_image "
          f"{first['rootfs_image']:.2f} s")
    if left:
        print(f"LEFT BEHIND: {left}")


if __name__ == "__main__":
    sys.exit(main())
