"""Container start latency and the cost of each runtime call: styrolite next to crun and runc, in one run.

Contenders, each with a state root of its own, interleaved round by round (this machine is shared and noisy:
a load spike then hits every contender, and the medians of many rounds are compared):

  crun, runc                 the Debian packages (C and Go)
  styrolite script           ``styrolite.cli:main`` through a pip console-script wrapper: what ``pip install``
                             puts on PATH (``site`` runs, with every .pth file of site-packages)
  styrolite launcher         what ``python -m zonebuild.styrolite_binary install`` installs: the interpreter
                             with ``-I -S`` and the import path fixed at install time
  styrolite binary           the Nuitka-compiled binary (``--binary PATH``, else the cache for these sources;
                             build it with ``python -m zonebuild.styrolite_binary build``)
  styrolite library          create + start + wait + delete from one warm process: the zone's PID 1's path

Every executable is timed as itself (never through a pyenv shim); every state root is on a tmpfs, as /run is.
Two tables, each with the ratio to crun:

  1. ``run`` of ``true`` in a busybox bundle (the library: its whole create/start/wait/delete cycle);
  2. the calls podman and containerd make per container, one by one: create, state, start, kill, delete.

    python3 bench/container_start.py [--rounds 30] [--seccomp | --zone] [--binary PATH] [--no-runc]

``--seccomp`` gives every container styrolite's default seccomp profile; ``--zone`` configures them as the
zone's PID 1 does (zoneinit/bundle.py): that profile, a user namespace (root is uid 65536 outside), a cgroup
namespace. With a user namespace styrolite forks a setup process first (two forks, as runc does).
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
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CALLS = ("create", "state", "start", "kill", "delete")


ZONE_ID_MAP = [{"containerID": 0, "hostID": 65536, "size": 65536}]


def make_bundle(work: Path, args: list[str], seccomp: bool, zone: bool = False) -> Path:
    from host.zonebuild_import import ensure_zonebuild
    from styrolite.spec import default_config, to_json_obj

    ensure_zonebuild()
    from zonebuild.busybox_image import stage_rootfs

    bundle = work / f"bundle-{args[0]}"
    stage_rootfs(Path("/bin/busybox"), bundle / "rootfs")
    config = default_config()
    config["process"]["args"] = args
    config["ociVersion"] = "1.0.2"  # Debian 12's crun 1.8 refuses newer versions
    if seccomp or zone:
        from styrolite.security import default_profile

        config["linux"]["seccomp"] = to_json_obj(default_profile())
    if zone:
        linux = config["linux"]
        linux["namespaces"] = [{"type": "user"}, *linux["namespaces"], {"type": "cgroup"}]
        linux["uidMappings"], linux["gidMappings"] = ZONE_ID_MAP, ZONE_ID_MAP
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def console_script(work: Path) -> list[str]:
    """The installed console script if there is one, else the same wrapper pip writes (PYTHONPATH finds us)."""
    installed = Path(sysconfig.get_path("scripts")) / "styrolite"
    if installed.is_file() and installed.read_bytes().startswith(b"#!/"):
        return [str(installed)]
    script = work / "styrolite-script"  # pip's wrapper; the source checkout put on sys.path as an install would
    script.write_text(f"#!{sys.executable}\n# -*- coding: utf-8 -*-\nimport re\nimport sys\n"
                      f"sys.path.insert(0, {str(REPO)!r})\n"
                      "from styrolite.cli import main\nif __name__ == '__main__':\n"
                      "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
                      "    sys.exit(main())\n")
    script.chmod(0o755)
    return [str(script)]


def launcher(work: Path) -> list[str]:
    from zonebuild.styrolite_binary import write_launcher

    return [str(write_launcher(work / "styrolite-launcher"))]


def binary(path: str | None) -> list[str] | None:
    if path:
        return [path]
    from zonebuild.styrolite_binary import cached_binary

    found = cached_binary()
    return [str(found)] if found else None


class Contender:
    def __init__(self, name: str, argv: list[str], state: Path) -> None:
        self.name, self.argv, self.state = name, argv, state

    def command(self, *args: str) -> list[str]:
        return [*self.argv, "--root", str(self.state), *args]


def timed(argv: list[str], out: Path) -> float:
    """Wall time of one command; its output goes to a file (a created container keeps its stdio open)."""
    with open(out, "w+b") as log:
        start = time.perf_counter()
        code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log).returncode
        elapsed = time.perf_counter() - start
        if code != 0:
            log.seek(0)
            raise SystemExit(f"{' '.join(argv)} exited {code}: {log.read().decode(errors='replace').strip()}")
    return elapsed


def library_cycle(bundle: Path, state: Path) -> Callable[[int], float]:
    from styrolite.api import Runtime

    rt = Runtime(str(state))

    def cycle(i: int) -> float:
        start = time.perf_counter()
        cid = f"lib{i}"
        rt.create(cid, str(bundle))
        rt.start(cid)
        rt.wait(cid)
        rt.delete(cid)
        return time.perf_counter() - start

    cycle(-1)  # the first cycle warms the process (imports, seccomp, cgroup parents): PID 1 pays it once
    return cycle


def run_table(contenders: list[Contender], bundle: Path, work: Path, rounds: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {c.name: [] for c in contenders}
    samples["styrolite library"] = []
    library = library_cycle(bundle, work / "state" / "library")
    for i in range(rounds):
        for c in contenders:
            samples[c.name].append(timed(c.command("run", "-b", str(bundle), f"r{i}"), work / "out"))
        samples["styrolite library"].append(library(i))
    return samples


def calls_table(contenders: list[Contender], bundle: Path, work: Path, rounds: int) -> dict[str, dict[str, list]]:
    """Each call timed alone, on a container that runs ``sleep``: create, state (created), start, kill -9
    (the bench reaps the init, as conmon and the shim do: it is their subreaper), delete."""
    import prctl

    prctl.set_child_subreaper(True)
    samples: dict[str, dict[str, list[float]]] = {c.name: {call: [] for call in CALLS} for c in contenders}
    for i in range(rounds):
        for c in contenders:
            cid = f"c{i}"
            got = samples[c.name]
            got["create"].append(timed(c.command("create", "-b", str(bundle), cid), work / "out"))
            got["state"].append(timed(c.command("state", cid), work / "out"))
            pid = json.loads((work / "out").read_text())["pid"]
            got["start"].append(timed(c.command("start", cid), work / "out"))
            got["kill"].append(timed(c.command("kill", cid, "KILL"), work / "out"))
            _reap(pid)
            got["delete"].append(timed(c.command("delete", cid), work / "out"))
    return samples


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # not ours (the runtime still had it): wait until it is gone
        while os.path.exists(f"/proc/{pid}"):
            time.sleep(0.001)


def private_mounts(state: Path) -> None:
    """In a mount namespace of this benchmark only: the runtimes' state roots on a tmpfs, as /run is wherever
    they run for real (on this machine /run and /tmp are the root disk's ext4, where every rename of a
    state file costs a journal update); and crun 1.8 refuses hybrid hosts whose cgroup2 has a controller
    (here: hugetlb), so /sys/fs/cgroup/unified is unmounted and every contender sees plain cgroup v1."""
    from styrolite.syscalls import LINUX
    from styrolite.syscalls import constants as k

    LINUX.unshare(k.CLONE_NEWNS)
    LINUX.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
    state.mkdir()
    LINUX.mount("tmpfs", str(state), "tmpfs", k.MS_NOSUID | k.MS_NODEV, "mode=755")
    if os.path.ismount("/sys/fs/cgroup/unified"):
        LINUX.umount2("/sys/fs/cgroup/unified", k.MNT_DETACH)


def print_table(title: str, rows: dict[str, list[float]], baseline: str) -> None:
    base = statistics.median(rows[baseline])
    print(f"\n{title}")
    print(f"  {'':<22} {'median ms':>10} {'p90 ms':>8} {'vs ' + baseline:>9}")
    for name, values in rows.items():
        median = statistics.median(values)
        p90 = sorted(values)[max(0, int(len(values) * 0.9) - 1)]
        print(f"  {name:<22} {median * 1000:>10.1f} {p90 * 1000:>8.1f} {median / base:>8.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seccomp", action="store_true", help="every container gets the default seccomp profile")
    parser.add_argument("--zone", action="store_true", help="containers configured as the zone's PID 1 does")
    parser.add_argument("--binary", help="a compiled styrolite to time (default: the cached build, if any)")
    parser.add_argument("--no-runc", action="store_true")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=PATH",
                        help="another runtime executable to time (e.g. an older build), repeatable")
    args = parser.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed CLI has its bytecode cached
    if not shutil.which("crun"):
        raise SystemExit("crun is the baseline: apt-get install crun")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # a user-namespaced container's root (uid 65536 here) must reach its rootfs
        private_mounts(work / "state")
        try:
            true_bundle = make_bundle(work, ["true"], args.seccomp, args.zone)
            sleep_bundle = make_bundle(work, ["sleep", "60"], args.seccomp, args.zone)
            named = [("crun", [shutil.which("crun") or "crun"])]
            if not args.no_runc and shutil.which("runc"):
                named.append(("runc", [shutil.which("runc") or "runc"]))
            named += [("styrolite script", console_script(work)), ("styrolite launcher", launcher(work))]
            compiled = binary(args.binary)
            if compiled:
                named.append(("styrolite binary", compiled))
            named += [(name, [path]) for name, _, path in (item.partition("=") for item in args.also)]
            contenders = [Contender(name, argv, work / "state" / f"{i}") for i, (name, argv) in enumerate(named)]
            for c in contenders:  # warm-up: bytecode written, page cache filled
                version = c.command("--version") if c.name not in ("crun", "runc") else [*c.argv, "--version"]
                timed(version, work / "out")
            runs = run_table(contenders, true_bundle, work, args.rounds)
            calls = calls_table(contenders, sleep_bundle, work, max(5, args.rounds * 2 // 3))
        finally:
            from styrolite.syscalls import LINUX
            from styrolite.syscalls import constants as k

            LINUX.umount2(str(work / "state"), k.MNT_DETACH)
    config = ", the zone's config (seccomp, user and cgroup namespaces)" if args.zone else \
        ", default seccomp profile" if args.seccomp else ""
    print(f"styrolite vs crun and runc, {args.rounds} interleaved rounds{config}; load {os.getloadavg()[0]:.1f}")
    print_table("run of `true` (library: create+start+wait+delete in one warm process)", runs, "crun")
    for call in CALLS:
        print_table(f"{call}", {name: got[call] for name, got in calls.items()}, "crun")
    totals = {name: [sum(vals) for vals in zip(*got.values(), strict=True)] for name, got in calls.items()}
    print_table("create+state+start+kill+delete (one client's calls per container)", totals, "crun")
    return 0


if __name__ == "__main__":
    sys.exit(main())
