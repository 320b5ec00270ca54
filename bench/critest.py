"""CRI conformance, side by side: critest v1.26.1 against one containerd 1.6, with runc and with handler ``edera``.

One node (qemu-tests/cri_lab.py: containerd + CRI, CNI bridge/host-local/portmap, a local registry filled by
skopeo, all in a network namespace of its own) serves both runs, one after the other (the second with
``--runtime-handler edera``). critest's image names stay as it writes them: containerd's registry config
sends registry.k8s.io, gcr.io and docker.io to the lab's registry. (critest v1.26.1's ``--registry-prefix``
cannot be used: it pulls ``<prefix>/<path>`` without the tag, then creates containers from the unprefixed
name, which is then not in the store -- every container spec fails, on runc as on edera.)
The test images are critest-lab's (/work/shared/tools/critest-lab/build-images.sh: busybox-based, a static
pause and an nginx/httpd stand-in).

Prints both pass counts and every spec that passes on runc but not on edera, with critest's failure and,
where it is one, why a zone cannot pass it (it needs the node's own kernel, namespaces or file systems).

    python3 bench/critest.py [--focus RE] [--skip RE] [--out DIR] [--memory MiB] [--handlers runc,edera]
                             [--kernel LAYOUT] [--initrd FILE] [--kernel-arg ARG]...
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "qemu-tests"))

from cri_lab import Image, Lab, ShimOptions  # noqa: E402

CRITEST_LAB = Path(os.environ.get("CRITEST_LAB_TOOLS", "/work/shared/tools/critest-lab"))
ALWAYS_SKIPPED = "public image with digest"   # pulls a digest fixed in critest's source: never offline

# specs a zone cannot pass by design, and why (matched against the spec's full text)
BY_DESIGN = [
    (r"HostPID", "hostPID: the pod shares the node's process namespace; a zone has its own kernel, so the "
                 "shim refuses the pod (never a pod that silently does not see the node's processes)"),
    (r"HostIpc is true", "hostIPC: the node's IPC namespace (the test writes SysV shm on the host and reads "
                         "it in the container); a zone's kernel has its own"),
    (r"HostNetwork is true|portforward in host network", "hostNetwork: the node's network namespace; a zone "
                                                         "has its own network stack"),
    (r"mount with 'r(private|shared|slave)'", "mount propagation between host and container: a zone shares no "
                                              "mount with the host (its own kernel and file systems)"),
    (r"starting container with volume", "a read-write hostPath volume: a zone shares no host directory live "
                                        "(refused at CreateContainer, naming the mount)"),
]
KNOWN_GAPS = [
    (r"support portforward \[", "containerd's CRI port-forward dials localhost inside the pod network "
                                "namespace on the host, where nothing listens: the pod's processes are in "
                                "the zone (Kata has the same limitation)"),
    (r"support adding capability$|support Privileged is true$",
     "NET_ADMIN over the pod network (the spec runs brctl addbr): the zone's "
     "workload network namespace belongs to the zone's initial user namespace, so container root, in the pod's "
     "user namespace, holds no capability over it even when NET_ADMIN is added or the container is privileged "
     "(EPERM); and the zone kernel loads no module on a container's request (bridge: kernel_args "
     "zone.modules=bridge)"),
]


def build_images(scratch: Path) -> list[Image]:
    """critest's images, built offline by critest-lab (gcc -static helpers + Debian's busybox)."""
    script = CRITEST_LAB / "build-images.sh"
    scratch.mkdir(parents=True, exist_ok=True)
    if not script.exists():
        raise SystemExit(f"{script} not found (set CRITEST_LAB_TOOLS to the critest-lab directory)")
    subprocess.run(["bash", str(script)], env=dict(os.environ, CRITEST_LAB=str(scratch)), check=True,
                   stdout=subprocess.DEVNULL)
    images = []
    for line in (scratch / "images" / "push.list").read_text().splitlines():
        if line.strip():
            layout, ref, dest = line.split()
            path = Path(layout) if Path(layout).is_absolute() else scratch / layout
            images.append(Image(path, ref, f"registry.k8s.io/{dest}"))
    return images


def critest_binary() -> str:
    found = shutil.which("critest")
    if found:
        return found
    cached = Path(os.environ.get("ZONE_CACHE", "/var/cache/zone")) / "cri-tools" / "critest"
    if not cached.exists():
        raise SystemExit(f"critest not found: /work/shared/tools/build-cri-tools.sh {cached.parent}")
    return str(cached)


def run_critest(lab: Lab, handler: str, out: Path, focus: str, skip: str) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    argv = [*lab.nsenter(), critest_binary(), "--runtime-endpoint", f"unix://{lab.address}",
            "--image-endpoint", f"unix://{lab.address}",
            "--ginkgo.no-color", "--ginkgo.timeout", "5h", "--ginkgo.json-report", str(out / "report.json"),
            "--report-dir", str(out), "--ginkgo.skip", skip]
    if handler != "runc":
        argv += ["--runtime-handler", handler]
    if focus:
        argv += ["--ginkgo.focus", focus]
    started = time.monotonic()
    with open(out / "critest.log", "wb") as log:
        result = subprocess.run(argv, cwd=out, stdout=log, stderr=subprocess.STDOUT, check=False)
    wall = time.monotonic() - started
    specs: dict[str, dict[str, str]] = {}
    report = json.loads((out / "report.json").read_text())
    for spec in report[0].get("SpecReports") or []:
        if spec.get("LeafNodeType") != "It":
            continue
        name = " ".join([*(spec.get("ContainerHierarchyTexts") or []), spec["LeafNodeText"]])
        failure = spec.get("Failure") or {}
        specs[name] = {"state": spec["State"], "failure": (failure.get("Message") or "").strip()}
    return {"handler": handler, "rc": result.returncode, "wall_s": round(wall), "specs": specs,
            "passed": sum(s["state"] == "passed" for s in specs.values()),
            "failed": sum(s["state"] in ("failed", "panicked", "timedout") for s in specs.values()),
            "skipped": sum(s["state"] in ("skipped", "pending") for s in specs.values())}


def reason_for(name: str) -> tuple[str, str]:
    for pattern, why in BY_DESIGN:
        if re.search(pattern, name):
            return "by design", why
    for pattern, why in KNOWN_GAPS:
        if re.search(pattern, name):
            return "gap", why
    return "", ""


def first_line(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else "")[:limit]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--focus", default="")
    parser.add_argument("--skip", default=ALWAYS_SKIPPED)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--memory", type=int, default=384, help="each pod zone's memory (MiB)")
    parser.add_argument("--handlers", default="runc,edera")
    parser.add_argument("--kernel", default=None, help="kernel image layout (default: built here, cached)")
    parser.add_argument("--initrd", default=None, help="zone initrd (default: this tree's, cached)")
    parser.add_argument("--kernel-arg", action="append", default=[],
                        help="the shim config's kernel_args (e.g. zone.modules=bridge)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # a stopped run still stops its lab
    from host import images

    work = Path(tempfile.mkdtemp(prefix="zct", dir="/tmp"))
    out = args.out or work / "results"
    print(f"critest side by side: work {work}, results {out}", file=sys.stderr)
    shim = ShimOptions(kernel=args.kernel or str(images.default_kernel_image()),
                       initrd=args.initrd or str(images.default_initrd()), memory_mib=args.memory,
                       extra={"kernel_args": args.kernel_arg} if args.kernel_arg else None)
    lab = Lab(work / "lab", shim, images=build_images(work / "images"), portmap=True)
    results: dict[str, dict[str, Any]] = {}
    try:
        for handler in args.handlers.split(","):
            print(f"critest on {handler}...", file=sys.stderr, flush=True)
            results[handler] = run_critest(lab, handler, out / handler, args.focus, args.skip)
            lab.remove_all_pods()
            left = lab.wait_no_leftovers(120)
            results[handler]["left_behind"] = left
            print(f"  {handler}: {results[handler]['passed']} passed, {results[handler]['failed']} failed, "
                  f"{results[handler]['skipped']} skipped in {results[handler]['wall_s']} s"
                  + (f"; LEFT BEHIND: {left}" if left else ""), file=sys.stderr, flush=True)
    finally:
        lab.stop()
    report_side_by_side(results, out)
    shutil.rmtree(work / "lab", ignore_errors=True)
    return 0


def report_side_by_side(results: dict[str, dict[str, Any]], out: Path) -> None:
    runc, edera = results.get("runc"), results.get("edera")
    summary: dict[str, Any] = {h: {k: r[k] for k in ("passed", "failed", "skipped", "wall_s", "left_behind")}
                               for h, r in results.items()}
    differences = []
    if runc and edera:
        for name, spec in sorted(runc["specs"].items()):
            if spec["state"] != "passed":
                continue
            theirs = edera["specs"].get(name, {"state": "missing", "failure": ""})
            if theirs["state"] == "passed":
                continue
            kind, why = reason_for(name)
            differences.append({"spec": name, "edera": theirs["state"], "kind": kind or "failure",
                                "reason": why or first_line(theirs["failure"])})
    summary["passes_on_runc_not_on_edera"] = differences
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print()
    for handler, result in results.items():
        print(f"{handler:6} {result['passed']:3} passed  {result['failed']:3} failed  {result['skipped']:3} skipped"
              f"  ({result['wall_s']} s)")
    if differences:
        print(f"\npasses on runc, not on edera ({len(differences)}):")
        for row in differences:
            print(f"  [{row['kind']}] {row['spec']}\n      {row['reason']}")
    print(f"\n(details: {out})")


if __name__ == "__main__":
    sys.exit(main())
