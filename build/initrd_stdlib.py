"""The parts of the standard library the zone's binary leaves out, and the check that the zone never imports them.

Nuitka's standalone mode puts into the binary every module the program imports and, on top, most of the
standard library "in case": in our build about 90 modules (tarfile, imaplib, webbrowser, importlib.metadata,
encodings.idna...) and their extension modules (unicodedata 1.1 MB...) that no import in the zone reaches, in
every zone's initramfs and among the pages PID 1 maps. The list below was measured from Nuitka's compilation
report (the modules it included only "as part of the standard library", reached by no import of the program),
plus a few that are reachable but never needed, each with its reason.

An import of a left-out module raises ImportError ("actively excluded from Nuitka compilation"); the standard
library modules that import these optionally catch it (hashlib, shutil). :func:`imports_of_left_out` fails the build
when one of *our* modules imports one, naming both, so a new import cannot pass unnoticed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

# Reachable from our code, left out on purpose.
NOT_NEEDED: dict[str, str] = {
    "_hashlib": "hashlib uses its built-in sha256 instead of OpenSSL's libcrypto (4.9 MB in the initramfs, "
                "~3.6 MB resident in each process that hashes a disk)",
    "unicodedata": "1.1 MB for \\N{...} regex escapes, non-ASCII URL netlocs and traceback lines: none in the zone",
    "tarfile": "shutil's archive functions only: the zone makes no archives",
    "zipfile": "shutil's archive functions only",
    "gzip": "tarfile only",
    "bz2": "an optional archive format of shutil (modules use lzma, zlib, zstandard)",
}

# A package's other implementation, imported by the package itself only when the one the binary has (its C
# extension) cannot be: its own import of it is guarded, anyone else's is an error like the ones above.
FALLBACKS: dict[str, str] = {
    "msgpack.fallback": "msgpack's pure-Python codec, imported only when its C extension (in the binary) is not",
    "zstandard.backend_cffi": "zstandard's cffi backend, imported only under PyPy or PYTHON_ZSTANDARD_IMPORT_POLICY"
                              "=cffi: CPython uses the C one",
}

# Included by Nuitka only "as part of the standard library": no import of the zone's program reaches them.
UNREACHED = (
    "__hello__", "__phello__", "_aix_support", "_bootsubprocess", "_markupbase", "_osx_support", "_pyio",
    "_sysconfigdata__linux_x86_64-linux-gnu", "base64", "bisect", "cgi", "cgitb", "chunk", "cmd", "code", "codeop",
    "colorsys", "configparser", "contextvars", "crypt", "csv", "difflib", "email", "filecmp", "fileinput", "ftplib",
    "getopt", "glob", "graphlib", "html", "http", "imaplib", "imghdr", "imp", "importlib.abc", "importlib.metadata",
    "importlib.readers", "importlib.resources", "importlib.simple", "mailcap", "mimetypes", "modulefinder",
    "netrc", "nturl2path", "numbers", "pickletools", "pipes", "pkgutil", "poplib", "pprint", "pstats", "pyclbr",
    "rlcompleter", "sched", "shlex", "sndhdr", "socketserver", "sre_compile", "sre_constants", "sre_parse",
    "stringprep", "symtable", "sysconfig", "timeit", "tomllib", "trace", "uu", "webbrowser", "xdrlib", "xml",
    "xmlrpc", "encodings.base64_codec", "encodings.bz2_codec", "encodings.hex_codec", "encodings.idna",
    "encodings.punycode", "encodings.rot_13",
)

LEFT_OUT = (*sorted(NOT_NEEDED), *UNREACHED, *sorted(FALLBACKS))


def nofollow_flags() -> tuple[str, ...]:
    return tuple(f"--nofollow-import-to={name}" for name in LEFT_OUT)


def imports_of_left_out(report: Path, packages: tuple[str, ...]) -> list[str]:
    """``module imports name`` for every import, in a module of ``packages``, of a module the binary leaves out
    (read from Nuitka's compilation report)."""
    left_out = set(LEFT_OUT)
    found = []
    for module in ElementTree.parse(report).getroot().iter("module"):
        name = module.get("name", "")
        if name.split(".")[0] not in packages:
            continue
        for usage in module.iter("module_usage"):
            target = usage.get("name", "")
            if target in FALLBACKS and name.split(".")[0] == target.split(".")[0]:
                continue   # the package's own guarded import of its other implementation
            if usage.get("finding") == "excluded" and any(target == m or target.startswith(f"{m}.")
                                                           for m in left_out):
                found.append(f"{name} imports {target} (line {usage.get('line', '?')})")
    return sorted(set(found))
