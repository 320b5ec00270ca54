"""Small helpers for the runtime tests."""

from __future__ import annotations

import json
import os


def out(result) -> str:
    return result.stdout.decode()


def err(result) -> str:
    return result.stderr.decode()


def host_ns(ns: str) -> int:
    return os.stat(f"/proc/self/ns/{ns}").st_ino


def state_of(styrolite, cid: str) -> dict:
    result = styrolite("state", cid, check=True)
    return json.loads(result.stdout)
