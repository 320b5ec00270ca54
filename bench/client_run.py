"""``podman run --rm true`` and ``ctr run --rm true`` with styrolite next to runc.

Each client is started once with state of its own (bench/clientlab.py: the clients tests/clients drives, with
their own storage, config, socket and cgroup parent) and stopped at the end. Round by round, interleaved:

  runc                 the reference
  styrolite            the launcher the host installs (python -m zonebuild.styrolite_binary install)
  styrolite-script     with --script: through the pip console-script wrapper (site runs)
  styrolite-binary     the Nuitka-compiled binary (--binary PATH, else the cache for these sources, if built)

Each client makes 3-4 runtime calls per container (create, start, state, delete); the ratio to runc is what
their users feel. Medians of the rounds, after a few warm-up rounds.

    python3 bench/client_run.py [--rounds 20] [--clients podman,containerd,docker] [--script] [--binary PATH]
                                [--also NAME=PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clientlab import Containerd, Dockerd, Podman, busybox_archive, styrolite_launcher
from container_start import binary, console_script, print_table

WARMUP = 3


def run_once(client, runtime: str, index: int) -> float:
    if isinstance(client, Containerd):
        args = ("run", "--rm", client.IMAGE, f"bench-{runtime}-{index}", "true")
    else:
        args = ("run", "--rm", "--network", "none", "busybox", "true")
    start = time.perf_counter()
    result = client.run(runtime, *args)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{client.name} with {runtime}: exit {result.returncode}: {result.stderr.decode()[-800:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--clients", default="podman,containerd", help="comma-separated: podman, containerd, docker")
    parser.add_argument("--script", action="store_true", help="also time the pip console-script wrapper")
    parser.add_argument("--binary", help="a compiled styrolite to time (default: the cached build, if any)")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=PATH",
                        help="another runtime executable to time (e.g. an older build), repeatable")
    args = parser.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    wanted = [name.strip() for name in args.clients.split(",") if name.strip()]
    needs = {"podman": ("podman", "conmon", "runc"), "containerd": ("containerd", "ctr", "runc"),
             "docker": ("dockerd", "containerd", "runc")}
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        launcher = styrolite_launcher(work)
        more: dict[str, Path] = {}
        if args.script:
            more["styrolite-script"] = Path(console_script(work)[0])
        compiled = binary(args.binary)
        if compiled:
            more["styrolite-binary"] = Path(compiled[0])
        more.update((name.replace(" ", "-"), Path(path)) for name, _, path in (a.partition("=") for a in args.also))
        runtimes = ["runc", "styrolite", *more]
        image = busybox_archive(work / "image")
        for name in wanted:
            missing = [p for p in needs[name] if shutil.which(p) is None]
            if missing:
                print(f"{name}: skipped, not installed: {', '.join(missing)}")
                continue
            cls = {"podman": Podman, "containerd": Containerd, "docker": Dockerd}[name]
            (work / name).mkdir()
            client = cls(work / name, launcher, image, more)
            try:
                samples: dict[str, list[float]] = {runtime: [] for runtime in runtimes}
                for i in range(WARMUP + args.rounds):
                    for runtime in runtimes:
                        elapsed = run_once(client, runtime, i)
                        if i >= WARMUP:
                            samples[runtime].append(elapsed)
                results[name] = samples
            finally:
                client.stop()
    print(f"run --rm true, styrolite vs runc, {args.rounds} interleaved rounds; load {os.getloadavg()[0]:.1f}")
    for name, samples in results.items():
        print_table(name, samples, "runc")
    return 0


if __name__ == "__main__":
    sys.exit(main())
