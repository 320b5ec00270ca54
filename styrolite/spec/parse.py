"""Decode config.json (and exec's process.json) into the record classes of ``model.py``.

One generic decoder driven by the type hints, so adding a field to the model is the only step needed
to parse it. The hints are the model's annotation strings, evaluated here in the model's namespace
(``list[Mount]``, ``int | None``, ``dict[str, str]``): no ``typing`` or ``dataclasses`` at run time, and no
``json`` package on the way in (styrolite.jsonio), because ``styrolite create`` parses a config per call.
Every problem becomes a ``ConfigError`` whose ``path`` is the JSON path of the bad value
(``linux.namespaces[2].type``): users fix JSON, so errors speak JSON, not Python.
Unknown keys are ignored, as the runtime-spec allows (forward compatibility, other platforms' keys).
"""

from __future__ import annotations

from styrolite import jsonio, records
from styrolite.errors import ConfigError
from styrolite.spec import model
from styrolite.spec.jsonpath import join_index, join_key, json_type
from styrolite.spec.model import Process, Spec
from styrolite.spec.validate import check_unsupported_fields, is_newer_than_known, validate_process, validate_spec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")
    Decoder = Callable[[object], Any]

_UNION = type(int | None)

# Integers in the spec are Go int32/int64/uint32/uint64: accept the union of those ranges here; the
# validator narrows individual fields (uids are uint32, ...).
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1


class ConfigFileError(ConfigError):
    """A ConfigError located in a file: ``str()`` starts with the file name, ``path`` stays the JSON path."""

    def __init__(self, file: str, path: str, message: str) -> None:
        super().__init__(path, message)
        self.file = file
        self.args = (f"{file}: {self.args[0]}",)


# ---------------------------------------------------------------- field tables


def camel_case(name: str) -> str:
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(part.capitalize() for part in rest)


@records.record(frozen=True)
class FieldInfo:
    name: str  # Python attribute
    json: str  # key in the document
    type: Any  # resolved type hint
    required: bool  # no default: the key must be present
    default: Any  # for an absent key
    default_factory: Any


_FIELDS: dict[type, tuple[FieldInfo, ...]] = {}
_HINTS: dict[str, Any] = {}


def fields_of(cls: type) -> tuple[FieldInfo, ...]:
    """The JSON view of a model record class (cached: the hints are resolved once per class)."""
    infos = _FIELDS.get(cls)
    if infos is None:
        infos = tuple(FieldInfo(f.name, f.metadata.get("json", camel_case(f.name)), resolve_hint(f.type),
                                f.required, f.default, f.default_factory) for f in records.fields(cls))
        _FIELDS[cls] = infos
    return infos


def resolve_hint(annotation: Any) -> Any:
    """A model annotation (a string under ``from __future__ import annotations``) as a type."""
    if not isinstance(annotation, str):
        return annotation
    hint = _HINTS.get(annotation)
    if hint is None:
        hint = _HINTS[annotation] = eval(annotation, vars(model))  # our own model's annotations, never input
    return hint


def _origin(tp: Any) -> Any:
    """``list`` for ``list[X]``, ``dict`` for ``dict[K, V]`` (what typing.get_origin says for them)."""
    return getattr(tp, "__origin__", None)


def _args(tp: Any) -> tuple[Any, ...]:
    return getattr(tp, "__args__", ())


def _optional_inner(tp: Any) -> Any | None:
    """``X`` for ``X | None``, else None."""
    if isinstance(tp, _UNION):
        args = [a for a in tp.__args__ if a is not type(None)]
        if len(args) == 1 and len(tp.__args__) == 2:
            return args[0]
    return None


def _type_label(tp: Any) -> str:
    """The JSON name of an expected type."""
    inner = _optional_inner(tp)
    if inner is not None:
        return _type_label(inner)
    origin = _origin(tp)
    if tp is str:
        return "string"
    if tp is bool:
        return "boolean"
    if tp is int:
        return "integer"
    if origin is list:
        return "array"
    if origin is dict or records.is_record(tp):
        return "object"
    return str(tp)


# ---------------------------------------------------------------- decoding
#
# Each model type gets a decoder function, built once from its type hints and cached. Decoders do not
# build JSON paths as they go (that was most of the parse time): a failure raises _Invalid, and each
# enclosing list/object decoder adds its index/key while the exception travels up; ``decode`` then turns
# the collected steps into the ConfigError's path.

class _Invalid(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.steps: list[str | int] = []  # innermost first


def _absolute_path(base: str, steps: list[str | int]) -> str:
    path = base
    for step in reversed(steps):
        path = join_index(path, step) if isinstance(step, int) else join_key(path, step)
    return path


def decode(tp: Any, value: object, path: str) -> Any:
    """Decode ``value`` (from json.loads) as type ``tp``; ``path`` names it in errors."""
    try:
        return decoder_for(tp)(value)
    except _Invalid as e:
        raise ConfigError(_absolute_path(path, e.steps), e.message) from None


def decode_object(cls: type[T], value: object, path: str) -> T:
    """Decode a JSON object as the model dataclass ``cls`` (e.g. ``Resources`` for ``update``)."""
    return decode(cls, value, path)


def _wrong_type(tp: Any, value: object) -> _Invalid:
    return _Invalid(f"expected {_type_label(tp)}, got {json_type(value)}")


def _decode_str(value: object) -> str:
    if isinstance(value, str):
        return value
    raise _wrong_type(str, value)


def _decode_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _wrong_type(bool, value)


def _decode_int(value: object) -> int:
    # bool is an int subclass in Python, never in JSON; floats (even 1.0) are not Go integers either
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(int, value)
    if not INT_MIN <= value <= INT_MAX:
        raise _Invalid(f"integer {value} out of range (must fit in int64 or uint64)")
    return value


_DECODERS: dict[Any, Decoder] = {}


def decoder_for(tp: Any) -> Decoder:
    """The (cached) decoder for a model type hint."""
    decoder = _DECODERS.get(tp)
    if decoder is None:
        decoder = _DECODERS[tp] = _make_decoder(tp)
    return decoder


def _make_decoder(tp: Any) -> Decoder:
    inner = _optional_inner(tp)
    if inner is not None:
        decode_inner = decoder_for(inner)
        return lambda value: None if value is None else decode_inner(value)
    if tp is str:
        return _decode_str
    if tp is bool:
        return _decode_bool
    if tp is int:
        return _decode_int
    origin = _origin(tp)
    if origin is list:
        return _list_decoder(tp, decoder_for(_args(tp)[0]))
    if origin is dict:
        return _dict_decoder(tp, decoder_for(_args(tp)[1]))
    if records.is_record(tp):
        return _object_decoder(tp)
    raise TypeError(f"model type {tp!r} has no JSON decoding")  # a bug in model.py, not in input


def _list_decoder(tp: Any, decode_item: Decoder) -> Decoder:
    def decode_list(value: object) -> list[Any]:
        if not isinstance(value, list):
            raise _wrong_type(tp, value)
        out = []
        index = 0
        try:
            for index, item in enumerate(value):  # noqa: B007 (index is read in the handler)
                out.append(decode_item(item))
        except _Invalid as e:
            e.steps.append(index)
            raise
        return out

    return decode_list


def _dict_decoder(tp: Any, decode_item: Decoder) -> Decoder:
    def decode_dict(value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _wrong_type(tp, value)
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Invalid(f"object keys must be strings, got {json_type(key)} {key!r}")
            try:
                out[key] = decode_item(item)
            except _Invalid as e:
                e.steps.append(key)
                raise
        return out

    return decode_dict


_ABSENT = object()


def _object_decoder(cls: type) -> Decoder:
    table = []
    for info in fields_of(cls):
        # Go leaves a zero value for null; keep the model's default (empty list, False...) likewise
        null_means_default = not info.required and _optional_inner(info.type) is None
        table.append((info.json, info.name, decoder_for(info.type), info.required, null_means_default,
                      info.default, info.default_factory, _type_label(info.type)))
    new = object.__new__  # the fields are filled in directly: no per-object __init__ call
    missing = records.MISSING
    post_init = getattr(cls, "__post_init__", None)

    def decode_object_value(value: object) -> Any:
        if not isinstance(value, dict):
            raise _wrong_type(cls, value)
        obj = new(cls)
        attrs = obj.__dict__
        for key, name, decode_field, required, null_means_default, default, factory, label in table:
            raw = value.get(key, _ABSENT)
            if raw is _ABSENT or (raw is None and null_means_default):
                if required:
                    error = _Invalid(f"required {label} is missing")
                    error.steps.append(key)
                    raise error
                attrs[name] = default if factory is missing else factory()
                continue
            try:
                attrs[name] = decode_field(raw)
            except _Invalid as e:
                e.steps.append(key)
                raise
        if post_init is not None:
            post_init(obj)
        return obj

    return decode_object_value


# ---------------------------------------------------------------- public entry points


def parse_config(obj: object, *, validate: bool = True) -> Spec:
    """A decoded config.json document -> validated Spec (ConfigError on any problem)."""
    if not isinstance(obj, dict):
        raise ConfigError("", f"config must be a JSON object, got {json_type(obj)}")
    spec = decode(Spec, obj, "")
    if validate:
        check_unsupported_fields(obj)
        if is_newer_than_known(spec.oci_version):
            unknown = unknown_keys(Spec, obj, "")
            if unknown:
                raise ConfigError(unknown[0], f"unknown field in an ociVersion {spec.oci_version} config (this runtime "
                                              "knows the fields up to 1.3: refusing rather than ignoring it)")
        validate_spec(spec)
    return spec


# Other platforms' sections: never Linux's business, whatever the version.
_OTHER_PLATFORMS = frozenset({"windows", "solaris", "vm", "zos", "freebsd"})


def unknown_keys(tp: Any, value: object, path: str) -> list[str]:
    """JSON paths of the keys in ``value`` that the model type ``tp`` has no field for (depth first)."""
    inner = _optional_inner(tp)
    if inner is not None:
        tp = inner
    origin = _origin(tp)
    found: list[str] = []
    if origin is list and isinstance(value, list):
        for index, item in enumerate(value):
            found += unknown_keys(_args(tp)[0], item, join_index(path, index))
    elif origin is dict and isinstance(value, dict):
        for key, item in value.items():
            found += unknown_keys(_args(tp)[1], item, join_key(path, str(key)))
    elif records.is_record(tp) and isinstance(value, dict):
        by_json = {info.json: info for info in fields_of(tp)}
        for key, item in value.items():
            info = by_json.get(key)
            if info is None:
                if not (tp is Spec and key in _OTHER_PLATFORMS):
                    found.append(join_key(path, key))
                continue
            found += unknown_keys(info.type, item, join_key(path, key))
    return found


def parse_process(obj: object, *, validate: bool = True) -> Process:
    """A process.json document (``exec --process``) -> validated Process; error paths start at its top."""
    if not isinstance(obj, dict):
        raise ConfigError("", f"process must be a JSON object, got {json_type(obj)}")
    process = decode(Process, obj, "")
    if validate:
        validate_process(process, "")
    return process


def read_json(file: str) -> object:
    """Read a JSON document; unreadable or malformed files raise ConfigFileError naming file and line.

    The message already says everything, so the OSError/JSONDecodeError is not chained: ``describe()``
    prints one clean line instead of repeating the errno text.
    """
    return decode_json(file, _read(file))


def _read(file: str) -> bytes:
    try:
        with open(file, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigFileError(file, "", f"cannot read: {e.strerror or e}") from None


def decode_json(file: str, data: bytes) -> object:
    """The JSON document in ``data`` (read from ``file``, which error messages name)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigFileError(file, "", f"line {line}: invalid UTF-8") from None
    try:
        return jsonio.loads(text, constants=False)
    except (ValueError, RecursionError):
        pass  # the json package says exactly what is wrong, and where
    import json

    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ConfigFileError(file, "", f"line {e.lineno} column {e.colno}: invalid JSON: {e.msg}") from None
    except (ValueError, RecursionError) as e:
        raise ConfigFileError(file, "", f"invalid JSON: {e}") from None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _located(file: str, loader: Callable[[object], T], data: bytes | None = None) -> T:
    obj = read_json(file) if data is None else decode_json(file, data)
    try:
        return loader(obj)
    except ConfigFileError:
        raise
    except ConfigError as e:
        raise ConfigFileError(file, e.path, e.message) from None


def load_config(file: str) -> Spec:
    """Read and validate a bundle's config.json (give the file's path, e.g. ``bundle + "/config.json"``)."""
    return _located(file, parse_config)


def load_config_and_bytes(file: str) -> tuple[Spec, bytes]:
    """``load_config``, also returning the bytes that were parsed (``create`` keeps them as its snapshot)."""
    data = _read(file)
    return _located(file, parse_config, data), data


def load_process(file: str) -> Process:
    """Read and validate a process.json for ``exec --process``."""
    return _located(file, parse_process)
