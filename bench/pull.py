"""Image pull: zoneoci against `skopeo copy docker://... dir:...`, same registry, same run.

Starts Debian's docker-registry (TLS with a CA made here, htpasswd auth) on 127.0.0.1, pushes a multi-layer
image with skopeo, then measures:

  * pull time of the image into an empty content store by the two command lines users run,
    `python -m zoneoci pull` and `zonehost pull` (the console script beside this interpreter, else
    `python -m host.cli`; both the real interpreter, never a pyenv shim), against `skopeo copy` of the same
    image into an empty directory: medians and their ratios (goal <= 1); each measurement starts after a sync,
    since ours fsyncs every blob (skopeo's dir: does not) and would otherwise pay for the previous
    contender's dirty pages; the packages timed are byte-compiled first, as an installed package is (with
    PYTHONDONTWRITEBYTECODE set every run would otherwise compile them from source);
  * the same pull through the library in a warm process (what `zonehost run REF` does);
  * a second pull of the same image: bytes downloaded (goal 0);
  * two concurrent pulls (separate processes) into one empty store: blob bytes downloaded by each, and their
    sum against the image's size (goal: equal, each blob once).

    .venv/bin/python bench/pull.py [--runs 5] [--layers 6] [--layer-mib 8]

Run it with the interpreter zonehost is installed for (the venv's): the CLI is timed with sys.executable.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "oci"))
sys.path.insert(0, str(REPO / "tests"))

from ocisupport import busybox_layer, random_layer  # noqa: E402
from registrylab import PASSWORD, USER, LayoutBuilder, make_pki, start_registry  # noqa: E402

from zoneoci.client import RegistryClient  # noqa: E402
from zoneoci.hosts import RegistryHosts  # noqa: E402
from zoneoci.pull import pull  # noqa: E402
from zoneoci.store import ContentStore  # noqa: E402

PULL_AND_COUNT = """
import json, sys
from pathlib import Path
from zoneoci.client import RegistryClient
from zoneoci.hosts import RegistryHosts
from zoneoci.pull import pull
from zoneoci.store import ContentStore
ref, certs, auth, store = sys.argv[1:5]
with RegistryClient(RegistryHosts([], (Path(certs),)), auth_paths=[Path(auth)]) as c:
    pull(ref, ContentStore(store), c)
    print(json.dumps({"blob_bytes": c.stats.blob_bytes, "manifest_bytes": c.stats.manifest_bytes}))
"""


# the children import this tree's packages (not another checkout an editable install may point at)
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def zonehost_command() -> list[str]:
    """``zonehost`` as users run it: the console script installed beside this interpreter (its shebang is this
    interpreter), else the same entry point through ``-m``."""
    script = Path(sys.executable).parent / "zonehost"
    return [str(script)] if script.is_file() and os.access(script, os.X_OK) else [sys.executable, "-m", "host.cli"]


def timed(argv: list[str]) -> tuple[float, str]:
    os.sync()  # start each measurement with no dirty pages left by the previous one (our fsyncs would pay for them)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=CHILD_ENV)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} {argv[1] if len(argv) > 1 else ''} failed: {done.stderr.strip()}")
    return elapsed, done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--layers", type=int, default=6, help="random-content layers besides busybox")
    parser.add_argument("--layer-mib", type=int, default=8)
    args = parser.parse_args(argv)
    skopeo = shutil.which("skopeo")
    if skopeo is None or shutil.which("docker-registry") is None:
        raise SystemExit("needs Debian's skopeo and docker-registry")
    for package in ("zoneoci", "host", "idm", "styrolite"):  # what `zonehost pull` imports
        compileall.compile_dir(REPO / package, quiet=1)
    zonehost = zonehost_command()
    print(f"timing {sys.executable} -m zoneoci and {' '.join(zonehost)}")
    with tempfile.TemporaryDirectory(prefix="bench-pull-") as tmp:
        work = Path(tmp)
        registry = start_registry(work / "registry", make_pki(work / "pki"))
        try:
            builder = LayoutBuilder(work / "layout")
            layers = [busybox_layer()] + [random_layer(f"data/{i}", args.layer_mib << 20, i)
                                          for i in range(args.layers)]
            builder.name(builder.image(layers), "bench")
            registry.skopeo_copy(f"oci:{work / 'layout'}:bench", "bench/multi:1", fmt="oci")
            ref = f"{registry.host}/bench/multi:1"
            manifest = registry.skopeo_inspect("bench/multi:1")
            size = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
            print(f"image: {len(manifest['layers'])} layers, {size / 1e6:.1f} MB (gzip), registry {registry.host}")

            ours_cli, ours_zonehost, theirs, ours_lib = [], [], [], []
            hosts = RegistryHosts([], (registry.certs_d,))
            options = ["--cert-dir", str(registry.certs_d), "--authfile", str(registry.authfile), ref]
            for run in range(args.runs):
                out = work / f"skopeo-{run}"
                elapsed, _ = timed([skopeo, "copy", "--quiet", "--src-cert-dir", str(registry.certs_d / registry.host),
                                    "--src-creds", f"{USER}:{PASSWORD}", f"docker://{ref}", f"dir:{out}"])
                theirs.append(elapsed)
                shutil.rmtree(out)
                store = work / f"store-{run}"
                elapsed, _ = timed([sys.executable, "-m", "zoneoci", "-q", "pull", "--store", str(store), *options])
                ours_cli.append(elapsed)
                shutil.rmtree(store)
                elapsed, _ = timed([*zonehost, "-q", "pull", "--store", str(store), *options])
                ours_zonehost.append(elapsed)
                shutil.rmtree(store)
                with RegistryClient(hosts, auth_paths=[registry.authfile]) as client:
                    os.sync()
                    start = time.perf_counter()
                    pull(ref, ContentStore(store), client)
                    ours_lib.append(time.perf_counter() - start)
                if run < args.runs - 1:
                    shutil.rmtree(store)
            # the last store still holds the image: a second pull
            with RegistryClient(hosts, auth_paths=[registry.authfile]) as client:
                pull(ref, ContentStore(work / f"store-{args.runs - 1}"), client)
                second = client.stats.downloaded
                second_requests = client.stats.requests
            # two processes at once into one empty store
            shared = work / "shared-store"
            procs = [subprocess.Popen([sys.executable, "-c", PULL_AND_COUNT, ref, str(registry.certs_d),
                                       str(registry.authfile), str(shared)], cwd=REPO, env=CHILD_ENV,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
            results = []
            for proc in procs:
                stdout, stderr = proc.communicate(timeout=600)
                if proc.returncode != 0:
                    raise SystemExit(f"concurrent pull failed: {stderr.strip()}")
                results.append(json.loads(stdout))
        finally:
            registry.stop()

    def med(samples: list[float]) -> float:
        return statistics.median(samples)

    print(f"skopeo copy docker:// -> dir:     median {med(theirs):.3f} s  {[round(s, 3) for s in theirs]}")
    print(f"python -m zoneoci pull (CLI)      median {med(ours_cli):.3f} s  {[round(s, 3) for s in ours_cli]}")
    print(f"zonehost pull (CLI)               median {med(ours_zonehost):.3f} s  "
          f"{[round(s, 3) for s in ours_zonehost]}")
    print(f"zoneoci pull (library, warm proc) median {med(ours_lib):.3f} s  {[round(s, 3) for s in ours_lib]}")
    print(f"ratio to skopeo: zoneoci CLI {med(ours_cli) / med(theirs):.2f}   zonehost CLI "
          f"{med(ours_zonehost) / med(theirs):.2f}   library {med(ours_lib) / med(theirs):.2f}   (goal <= 1.0)")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"second pull: {second} bytes downloaded, {second_requests} request(s)   (goal 0 bytes)")
    blob_bytes = [r["blob_bytes"] for r in results]
    print(f"two concurrent pulls: blob bytes {blob_bytes}, sum {sum(blob_bytes)} vs image {size}   "
          f"({'each blob once' if sum(blob_bytes) == size else 'DUPLICATED WORK'})")
    return 0 if second == 0 and sum(blob_bytes) == size else 1


if __name__ == "__main__":
    sys.exit(main())
