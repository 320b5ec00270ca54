"""Container start latency: `run` of `true` with styrolite vs crun and runc, on the same bundle, in one run.

Prints medians and ratios against crun measured in the same run (this machine is noisy; absolute
numbers mean little). Four contenders:
  crun, runc            - `RUNTIME --root R run -b BUNDLE ID` (Debian packages)
  styrolite CLI         - the same command line through the installed console script
  styrolite library     - create+start+wait+delete from one warm Python process (the zone agent's path)

    python3 bench/container_start.py [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path


def make_bundle(work: Path) -> Path:
    from host.zonebuild_import import ensure_zonebuild
    from styrolite.spec import default_config

    ensure_zonebuild()
    from zonebuild.busybox_image import stage_rootfs

    bundle = work / "bundle"
    stage_rootfs(Path("/bin/busybox"), bundle / "rootfs")
    config = default_config()
    config["process"]["args"] = ["true"]
    config["ociVersion"] = "1.0.2"  # Debian 12's crun 1.8 refuses newer versions
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def time_command(argv: list[str], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        samples.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{argv[0]} failed: {done.stderr.decode().strip()}")
    return samples


def time_library(bundle: Path, state: Path, runs: int) -> list[float]:
    from styrolite.api import Runtime

    rt = Runtime(str(state))
    samples = []
    for i in range(runs + 1):
        start = time.perf_counter()
        cid = f"lib{i}"
        rt.create(cid, str(bundle))
        rt.start(cid)
        rt.wait(cid)
        rt.delete(cid)
        if i:  # the first run warms caches (seccomp, cgroup parents): the zone agent pays it once
            samples.append(time.perf_counter() - start)
    return samples


def hide_hybrid_cgroup2() -> None:
    """crun 1.8 refuses hybrid hosts whose cgroup2 has a controller (here: hugetlb). In a private mount
    namespace of this benchmark only, unmount /sys/fs/cgroup/unified so every contender sees plain v1."""
    from styrolite.syscalls import LINUX
    from styrolite.syscalls import constants as k

    if os.path.ismount("/sys/fs/cgroup/unified"):
        LINUX.unshare(k.CLONE_NEWNS)
        LINUX.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
        LINUX.umount2("/sys/fs/cgroup/unified", k.MNT_DETACH)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed CLI has its bytecode cached
    script = Path(sysconfig.get_path("scripts")) / "styrolite"
    hide_hybrid_cgroup2()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundle = make_bundle(work)
        results: dict[str, list[float]] = {}
        for name in ("crun", "runc"):
            if shutil.which(name):
                results[name] = time_command([name, "--root", str(work / name), "run", "-b", str(bundle), "b"],
                                             args.runs)
        cli = [str(script)] if script.exists() else [sys.executable, "-m", "styrolite.cli"]
        time_command([*cli, "--version"], 2)  # write bytecode once
        results["styrolite CLI"] = time_command([*cli, "--root", str(work / "s"), "run", "-b", str(bundle), "b"],
                                                args.runs)
        results["styrolite library"] = time_library(bundle, work / "lib", args.runs)
    baseline = statistics.median(results["crun"]) if "crun" in results else None
    print(f"{'runtime':<20} {'median ms':>10} {'p90 ms':>8} {'vs crun':>8}")
    for name, samples in results.items():
        median = statistics.median(samples)
        p90 = sorted(samples)[int(len(samples) * 0.9) - 1]
        ratio = f"{median / baseline:.2f}x" if baseline else "-"
        print(f"{name:<20} {median * 1000:>10.1f} {p90 * 1000:>8.1f} {ratio:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
