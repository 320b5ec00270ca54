"""Decode config.json (and exec's process.json) into the dataclasses of ``model.py``.

One generic decoder driven by the type hints, so adding a field to the model is the only step needed
to parse it. Every problem becomes a ``ConfigError`` whose ``path`` is the JSON path of the bad value
(``linux.namespaces[2].type``): users fix JSON, so errors speak JSON, not Python.
Unknown keys are ignored, as the runtime-spec allows (forward compatibility, other platforms' keys).
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from functools import cache
from typing import Any, TypeVar, Union

from styrolite.errors import ConfigError
from styrolite.spec import model
from styrolite.spec.model import Process, Spec

T = TypeVar("T")

# Integers in the spec are Go int32/int64/uint32/uint64: accept the union of those ranges here; the
# validator narrows individual fields (uids are uint32, ...).
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConfigFileError(ConfigError):
    """A ConfigError located in a file: ``str()`` starts with the file name, ``path`` stays the JSON path."""

    def __init__(self, file: str, path: str, message: str) -> None:
        super().__init__(path, message)
        self.file = file
        self.args = (f"{file}: {self.args[0]}",)


# ---------------------------------------------------------------- JSON paths


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


# ---------------------------------------------------------------- field tables


def camel_case(name: str) -> str:
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(part.capitalize() for part in rest)


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    name: str  # Python attribute
    json: str  # key in the document
    type: Any  # resolved type hint
    required: bool  # no default: the key must be present


@cache
def fields_of(cls: type) -> tuple[FieldInfo, ...]:
    """The JSON view of a model dataclass (cached: the hints are resolved once per class)."""
    hints = typing.get_type_hints(cls, vars(model))
    infos = []
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        infos.append(FieldInfo(f.name, f.metadata.get("json", camel_case(f.name)), hints[f.name], required))
    return tuple(infos)


def _optional_inner(tp: Any) -> Any | None:
    """``X`` for ``X | None``, else None."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def _type_label(tp: Any) -> str:
    """The JSON name of an expected type."""
    inner = _optional_inner(tp)
    if inner is not None:
        return _type_label(inner)
    origin = typing.get_origin(tp)
    if tp is str:
        return "string"
    if tp is bool:
        return "boolean"
    if tp is int:
        return "integer"
    if origin is list:
        return "array"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "object"
    return str(tp)


# ---------------------------------------------------------------- decoding


def decode(tp: Any, value: object, path: str) -> Any:
    """Decode ``value`` (from json.loads) as type ``tp``; ``path`` names it in errors."""
    inner = _optional_inner(tp)
    if inner is not None:
        return None if value is None else decode(inner, value, path)
    if tp is str:
        if not isinstance(value, str):
            raise _wrong_type(tp, value, path)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _wrong_type(tp, value, path)
        return value
    if tp is int:
        # bool is an int subclass in Python, never in JSON; floats (even 1.0) are not Go integers either
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong_type(tp, value, path)
        if not INT_MIN <= value <= INT_MAX:
            raise ConfigError(path, f"integer {value} out of range (must fit in int64 or uint64)")
        return value
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(value, list):
            raise _wrong_type(tp, value, path)
        (item_type,) = typing.get_args(tp)
        return [decode(item_type, item, join_index(path, i)) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _wrong_type(tp, value, path)
        _key_type, item_type = typing.get_args(tp)
        return {key: decode(item_type, item, join_key(path, key)) for key, item in value.items()}
    if dataclasses.is_dataclass(tp):
        return decode_object(tp, value, path)
    raise TypeError(f"model type {tp!r} at {path} has no JSON decoding")  # a bug in model.py, not in input


def decode_object(cls: type[T], value: object, path: str) -> T:
    if not isinstance(value, dict):
        raise _wrong_type(cls, value, path)
    kwargs: dict[str, Any] = {}
    for info in fields_of(cls):
        field_path = join_key(path, info.json)
        if info.json not in value:
            if info.required:
                raise ConfigError(field_path, f"required {_type_label(info.type)} is missing")
            continue
        raw = value[info.json]
        if raw is None and not info.required and _optional_inner(info.type) is None:
            # Go leaves a zero value for null; keep the model's default (empty list, False...)
            continue
        kwargs[info.name] = decode(info.type, raw, field_path)
    return cls(**kwargs)


def _wrong_type(tp: Any, value: object, path: str) -> ConfigError:
    return ConfigError(path, f"expected {_type_label(tp)}, got {json_type(value)}")


# ---------------------------------------------------------------- public entry points


def parse_config(obj: object, *, validate: bool = True) -> Spec:
    """A decoded config.json document -> validated Spec (ConfigError on any problem)."""
    if not isinstance(obj, dict):
        raise ConfigError("", f"config must be a JSON object, got {json_type(obj)}")
    spec = decode_object(Spec, obj, "")
    if validate:
        from styrolite.spec.validate import validate_spec

        validate_spec(spec)
    return spec


def parse_process(obj: object, *, validate: bool = True) -> Process:
    """A process.json document (``exec --process``) -> validated Process; paths are relative to it."""
    if not isinstance(obj, dict):
        raise ConfigError("", f"process must be a JSON object, got {json_type(obj)}")
    process = decode_object(Process, obj, "")
    if validate:
        from styrolite.spec.validate import validate_process

        validate_process(process, "")
    return process


def read_json(file: str) -> object:
    """Read a JSON document; unreadable or malformed files raise ConfigFileError naming file and line."""
    try:
        with open(file, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigFileError(file, "", f"cannot read: {e.strerror or e}") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigFileError(file, "", f"line {line}: invalid UTF-8") from e
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ConfigFileError(file, "", f"line {e.lineno} column {e.colno}: invalid JSON: {e.msg}") from e
    except (ValueError, RecursionError) as e:
        raise ConfigFileError(file, "", f"invalid JSON: {e}") from e


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _located(file: str, loader: typing.Callable[[object], T]) -> T:
    obj = read_json(file)
    try:
        return loader(obj)
    except ConfigFileError:
        raise
    except ConfigError as e:
        raise ConfigFileError(file, e.path, e.message) from None


def load_config(file: str) -> Spec:
    """Read and validate a bundle's config.json (give the file's path, e.g. ``bundle + "/config.json"``)."""
    return _located(file, parse_config)


def load_process(file: str) -> Process:
    """Read and validate a process.json for ``exec --process``."""
    return _located(file, parse_process)
