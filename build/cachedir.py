"""Where every slow build output is cached by content hash: one rule for the CLI, the tests and the benchmarks.

1. ``$ZONE_CACHE`` when it is set and not empty;
2. else ``/var/cache/zone`` for root (the README's commands, ``.ci/test`` and CI all run as root, so a zone
   started by hand and the test suite share one kernel image, one Nuitka compile, one ccache);
3. else ``$XDG_CACHE_HOME/zone`` (default ``~/.cache/zone``) for an unprivileged user.

Entries are keyed by the digest of what produced them, so one cache serves every checkout on the machine.
Layout: docs/images.md.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

SYSTEM_CACHE = Path("/var/cache/zone")
COMPILE_ATTEMPTS = 3


def cache_dir() -> Path:
    override = os.environ.get("ZONE_CACHE")
    if override:
        return Path(override)
    if os.geteuid() == 0:
        return SYSTEM_CACHE
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zone"


def cached_layout(out: Path, build: Callable[[Path], object]) -> Path:
    """``out``, an OCI layout in the cache: built the first time into ``<out>.partial`` and renamed into place
    once complete, so a crashed or concurrent build never leaves a half-written layout under the real name."""
    if not (out / "index.json").is_file():
        partial = out.with_name(out.name + ".partial")
        if partial.exists():
            shutil.rmtree(partial)
        build(partial)
        if out.exists():
            shutil.rmtree(out)
        partial.rename(out)
    return out


def cached_compile(root: Path, key_of: Callable[[], str], product: str, compile_into: Callable[[Path], object],
                   *, error: type[Exception], log: Callable[[str], object], force: bool = False) -> tuple[Path, bool]:
    """``root/<key>/<product>`` for the sources' current key (``key_of()``); returns (path, cache_hit).

    One lock per key, so concurrent builds of the same sources wait for each other instead of clobbering one
    work directory. ``compile_into(work)`` builds into ``root/<key>.partial``, which is renamed into place once
    complete. A compile during which the key changed (someone edited the sources) is neither trusted nor cached,
    whether it failed or not: it is retried on the new sources, up to COMPILE_ATTEMPTS times."""
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, COMPILE_ATTEMPTS + 1):
        key = key_of()
        with open(root / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            final = root / key
            if (final / product).exists() and not force:
                log(f"cache hit {key}")
                return final / product, True
            work = root / f"{key}.partial"
            failure: Exception | None = None
            try:
                compile_into(work)
            except error as e:
                failure = e
            if key_of() != key:
                log(f"sources changed during the compile (attempt {attempt}); compiling again")
                shutil.rmtree(work, ignore_errors=True)
                continue
            if failure is not None:
                raise failure
            if final.exists():
                shutil.rmtree(final)
            work.rename(final)
            return final / product, False
    raise error(f"the sources kept changing during {COMPILE_ATTEMPTS} compiles; build again when they settle")
