"""JSON paths for error messages (``linux.namespaces[2].type``): the words the parser and validator share.

Users fix JSON, so errors name the JSON path of the bad value, not a Python attribute.
"""

from __future__ import annotations

import json
import re

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def join_key(path: str, key: str) -> str:
    """``linux`` + ``namespaces`` -> ``linux.namespaces``; odd keys are quoted: ``linux.sysctl["net.ipv4.x"]``."""
    if _IDENTIFIER.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def join_index(path: str, index: int) -> str:
    return f"{path}[{index}]"


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for 'expected X, got Y' messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
