"""JSON paths for error messages (``linux.namespaces[2].type``): the words the parser and validator share.

Users fix JSON, so errors name the JSON path of the bad value, not a Python attribute.
"""

from __future__ import annotations

from styrolite import jsonio

_IDENTIFIER_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_IDENTIFIER_CHARS = _IDENTIFIER_START | frozenset("0123456789")


def is_identifier(key: str) -> bool:
    """An ASCII identifier (``[A-Za-z_][A-Za-z0-9_]*``): such a key is written without quotes."""
    return bool(key) and key[0] in _IDENTIFIER_START and _IDENTIFIER_CHARS.issuperset(key)


def join_key(path: str, key: str) -> str:
    """``linux`` + ``namespaces`` -> ``linux.namespaces``; odd keys are quoted: ``linux.sysctl["net.ipv4.x"]``."""
    if is_identifier(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{jsonio.dumps(key)}]"


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
