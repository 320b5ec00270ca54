"""What ``zonehost`` prints: progress lines on stderr for the slow steps (building images, booting), so
stdout stays the workload's; and each verb's result on stdout, as text or (``--json``) as a JSON document."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

_quiet = False
_json = False


def configure(*, quiet: bool, json_output: bool) -> None:
    """``-q`` silences progress; ``--json`` prints results as JSON (and silences progress too)."""
    global _quiet, _json
    _quiet = quiet or json_output
    _json = json_output


def result(document: object, text: str) -> None:
    """A verb's result on stdout: ``document`` as JSON with ``--json``, else ``text``."""
    print(json.dumps(document, indent=2, sort_keys=True) if _json else text, flush=True)


def note(message: str) -> None:
    if not _quiet:
        print(f"zonehost: {message}", file=sys.stderr, flush=True)


@contextmanager
def step(message: str) -> Iterator[None]:
    """``zonehost: <message>...`` then ``done in 1.23 s`` (or ``failed``) on the same logical step."""
    start = time.monotonic()
    if not _quiet:
        print(f"zonehost: {message}...", file=sys.stderr, flush=True)
    try:
        yield
    except BaseException:
        if not _quiet:
            print(f"zonehost: {message}: failed after {time.monotonic() - start:.2f} s", file=sys.stderr, flush=True)
        raise
    if not _quiet:
        print(f"zonehost: {message}: done in {time.monotonic() - start:.2f} s", file=sys.stderr, flush=True)
