"""Compiled seccomp filters kept on disk between ``styrolite create`` calls (crun keeps the same kind of cache).

podman and docker give every container the same large profile; compiling it with libseccomp is ~15 ms of
each ``create``. A warm process (the zone's PID 1) memoises filters in memory (seccomp.compile_filter); this
cache does the same for one-shot CLI calls, in ``<state root>/.cache/seccomp/``.

An entry can only save time, never change a filter:

- its name is the SHA-256 of a key that holds everything deciding the BPF (the profile as parsed, the JSON
  path its warnings name, libseccomp's version, the machine, this format's version), and the entry stores
  that whole key: a file whose key is not exactly ours is a miss;
- the directory is used only when this user owns it and nobody else may write to it (it is made 0700);
- anything unreadable or malformed is a miss: the profile is compiled again and the entry rewritten.
"""

from __future__ import annotations

import os

from styrolite import jsonio
from styrolite.errors import suppress
from styrolite.security import libseccomp as scmp
from styrolite.security.seccomp_filter import SeccompFilter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from styrolite.spec.model import Seccomp

FORMAT = 1
CACHE_SUBDIR = os.path.join(".cache", "seccomp")


def cache_dir_for(state_root: str) -> str:
    return os.path.join(state_root, CACHE_SUBDIR)


def cache_key(seccomp: Seccomp, path: str) -> str:
    major, minor, micro = scmp.version()
    return (f"styrolite seccomp cache {FORMAT}\n{os.uname().machine}\nlibseccomp {major}.{minor}.{micro}\n"
            f"{path}\n{seccomp!r}")


def _sha256_hex(data: bytes) -> str:
    try:  # the C module behind hashlib's sha256, without hashlib's OpenSSL import
        from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - Python 3.12+ and other builds
        from hashlib import sha256
    return sha256(data).hexdigest()


def _trusted(directory: str) -> bool:
    try:
        info = os.stat(directory)
    except OSError:
        return False
    return info.st_uid == os.geteuid() and not info.st_mode & 0o022


def load(directory: str, key: str) -> SeccompFilter | None:
    """The filter stored for ``key``, or None (absent, untrusted directory, another key, malformed)."""
    if not _trusted(directory):
        return None
    try:
        with open(os.path.join(directory, _sha256_hex(key.encode())), encoding="utf-8") as f:
            entry = jsonio.loads(f.read())
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        program = bytes.fromhex(entry["program"])
        flags, warnings = entry["flags"], entry["warnings"]
        if not program or len(program) % 8 or not isinstance(flags, int) or not isinstance(warnings, list) \
                or not all(isinstance(w, str) for w in warnings):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return SeccompFilter(program=program, flags=flags, warnings=tuple(warnings))


def store(directory: str, key: str, compiled: SeccompFilter) -> None:
    """Keep ``compiled`` for ``key``; a directory that cannot be made or trusted means no cache, not an error."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError:
        return
    if not _trusted(directory):
        return
    name = os.path.join(directory, _sha256_hex(key.encode()))
    tmp = f"{name}.{os.getpid()}.tmp"
    entry = {"key": key, "program": compiled.program.hex(), "flags": compiled.flags,
             "warnings": list(compiled.warnings)}
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "w", encoding="utf-8") as f:
            f.write(jsonio.dumps(entry))
        os.replace(tmp, name)
    except OSError:
        with suppress(OSError):
            os.unlink(tmp)
