"""JSON for the per-call paths (state.json, ``styrolite state``) without importing the ``json`` package.

``import json`` brings ``re``, ``enum``, ``functools`` and ``collections`` and compiles three regular
expressions: about a third of what a ``styrolite state`` call costs in all. The package's own C
accelerators (``_json``: the scanner and the compact encoder json.loads/json.dumps use) need none of that,
so this module drives them directly, with the same results as ``json.loads`` and ``json.dumps`` (tested
against them in tests/runtime/test_runtime_jsonio.py). Without the accelerators (another Python) it is
the ``json`` package.
"""

from __future__ import annotations

_WHITESPACE = " \t\n\r"


class _DecoderSettings:
    """The attributes ``_json.make_scanner`` reads from a JSONDecoder, with json.loads' defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]


class _StrictDecoderSettings(_DecoderSettings):
    """RFC 8259 JSON: NaN, Infinity and -Infinity are refused (a config file must be real JSON)."""

    @staticmethod
    def parse_constant(name: str) -> float:
        raise ValueError(f"{name} is not valid JSON")


try:
    import _json

    _scan = _json.make_scanner(_DecoderSettings())
    _scan_strict = _json.make_scanner(_StrictDecoderSettings())
    _encode_string = _json.encode_basestring_ascii
    # json.dumps(value): markers for cycles, no default, ASCII strings, no indent, ", " and ": ", unsorted keys,
    # no skipped keys, NaN and Infinity allowed
    _encode = _json.make_encoder({}, None, _encode_string, None, ": ", ", ", False, False, True)
    _ACCELERATED = _encode({"a": [1, 2.5, None, True]}, 0) is not None and _scan('{"a": [1]}', 0)[0] == {"a": [1]}
except (ImportError, AttributeError, TypeError):  # pragma: no cover - not CPython
    _ACCELERATED = False


def loads(text: str, *, constants: bool = True) -> object:
    """``json.loads(text)``; a ValueError for anything that is not one JSON document. ``constants=False``
    refuses NaN and Infinity (json.loads with a ``parse_constant`` that raises)."""
    if not _ACCELERATED:  # pragma: no cover - not CPython
        import json

        return json.loads(text) if constants else json.loads(text, parse_constant=_StrictDecoderSettings.parse_constant)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = (_scan if constants else _scan_strict)(text, start)
    except StopIteration as e:
        raise ValueError(f"invalid JSON: expected a value at offset {e.value}") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"invalid JSON: extra data at offset {end}")
    return value


def dumps(value: object, indent: int | None = None) -> str:
    """``json.dumps(value)`` or, with ``indent``, ``json.dumps(value, indent=indent)``."""
    if not _ACCELERATED or (indent is not None and not _string_keys_only(value)):
        import json

        return json.dumps(value, indent=indent)
    if indent is None:
        return "".join(_encode(value, 0))
    return _indented(value, " " * indent, "\n")


def _indented(value: object, step: str, newline: str) -> str:
    """json's indented layout: one member per line, ``,`` at line ends, ``": "`` after keys, ``{}``/``[]``
    for empty containers."""
    inner = newline + step
    if isinstance(value, dict) and value:
        members = [inner + _encode_string(key) + ": " + _indented(item, step, inner) for key, item in value.items()]
        return "{" + ",".join(members) + newline + "}"
    if isinstance(value, (list, tuple)) and value:
        return "[" + ",".join(inner + _indented(item, step, inner) for item in value) + newline + "]"
    return "".join(_encode(value, 0))


def _string_keys_only(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(key, str) and _string_keys_only(item) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return all(_string_keys_only(item) for item in value)
    return True
