"""Reproducible ``.pyc`` files: a marshal writer (format version 4) whose bytes depend on the code alone.

Why not ``marshal.dumps``: CPython's writer sets FLAG_REF on an object only when its reference count is above
one, and writes a string as "interned" when the string object happens to be interned in the writing process.
Both depend on what that process did before (``sys.intern`` calls, modules imported earlier, building the
kernel image first in the same process), so the same source gave different ``.pyc`` bytes and different
initrds (issue 10).

This writer decides both from the object graph:

* objects are identified by value (type and content; code objects by identity), so equal constants are
  written once and referenced afterwards;
* an object carries FLAG_REF exactly when the writer meets it more than once (a first pass counts, the second
  writes); every later meeting is a TYPE_REF to its index. Indexes are assigned in write order, before an
  object's children, exactly as ``marshal.loads`` assigns them;
* a string is marked interned exactly when it is a non-empty ASCII name (``[A-Za-z0-9_]+``, the rule the
  compiler uses to intern constants). Names are interned again by the code object constructor on load;
* frozenset members are written in the order of their own encodings (the order of a set of strings depends
  on the process's hash seed).

The format is marshal's own, so ``marshal.loads`` reads it; :func:`dumps` checks that what it wrote loads back
as the same code (names, kinds of locals, constants, bytecode, tables). The code object fields are those of
CPython 3.11; another version is refused with a clear error rather than written wrongly.
"""

from __future__ import annotations

import importlib.util
import marshal
import os
import struct
import sys
from pathlib import Path
from types import CodeType

from .errors import BuildError

SUPPORTED_PYTHON = (3, 11)
MARSHAL_VERSION = 4
FLAG_REF = 0x80
# kinds of entries in co_localsplusnames (CPython 3.11, Include/internal/pycore_code.h)
CO_FAST_LOCAL = 0x20
CO_FAST_CELL = 0x40
CO_FAST_FREE = 0x80
PYC_UNCHECKED_HASH = 0b01
NAME_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_SINGLETONS: dict[int, bytes] = {
    id(None): b"N", id(True): b"T", id(False): b"F", id(Ellipsis): b".", id(StopIteration): b"S",
}
_INT32 = struct.Struct("<i")
_UINT32 = struct.Struct("<I")


class PycError(BuildError):
    """The code cannot be written as a reproducible .pyc."""


def _is_interned_name(text: str) -> bool:
    return bool(text) and text.isascii() and NAME_CHARS.issuperset(text.encode("ascii"))


def localsplus(code: CodeType) -> tuple[tuple[str, ...], bytes]:
    """``co_localsplusnames`` and ``co_localspluskinds`` (not exposed to Python) from the public fields.

    CPython 3.11 lays the fast locals out as: the locals (``co_varnames``, a local captured by a closure is
    also a cell), then the cells that are not locals, then the free variables; ``co_cellvars`` lists the cells
    in that order."""
    varnames = code.co_varnames
    local = set(varnames)
    cells = set(code.co_cellvars)
    extra_cells = tuple(name for name in code.co_cellvars if name not in local)
    names = (*varnames, *extra_cells, *code.co_freevars)
    kinds = bytes([CO_FAST_LOCAL | (CO_FAST_CELL if name in cells else 0) for name in varnames]
                  + [CO_FAST_CELL] * len(extra_cells) + [CO_FAST_FREE] * len(code.co_freevars))
    return names, kinds


def _code_fields(code: CodeType) -> tuple[tuple[int, ...], tuple[object, ...], int]:
    """(the leading integers, the object fields in marshal order, co_firstlineno)."""
    names, kinds = localsplus(code)
    return ((code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_stacksize, code.co_flags),
            (code.co_code, code.co_consts, code.co_names, names, kinds, code.co_filename, code.co_name,
             code.co_qualname, code.co_linetable, code.co_exceptiontable),
            code.co_firstlineno)


class _Writer:
    """One serialization: a counting pass over the graph, then the writing pass."""

    def __init__(self) -> None:
        self.out = bytearray()
        self._keys: dict[int, object] = {}        # id(obj) -> value key (the objects stay alive in the graph)
        self._fields: dict[int, tuple] = {}        # id(code) -> _code_fields(code)
        self._members: dict[int, list[object]] = {}  # id(frozenset) -> members in write order
        self._alive: list[object] = []             # derived objects (localsplus tuples) kept alive for their ids
        self._counts: dict[object, int] = {}
        self._refs: dict[object, int] = {}

    # --- identity by value --------------------------------------------------------------------------------

    def key(self, obj: object) -> object:
        cached = self._keys.get(id(obj))
        if cached is not None:
            return cached
        kind = type(obj)
        key: object
        if id(obj) in _SINGLETONS:
            key = ("singleton", _SINGLETONS[id(obj)])
        elif kind in (str, bytes, int):
            key = (kind.__name__, obj)
        elif kind is float:
            key = ("float", struct.pack("<d", obj))          # keeps -0.0 and NaN payloads apart
        elif kind is complex:
            key = ("complex", struct.pack("<dd", obj.real, obj.imag))  # type: ignore[attr-defined]
        elif kind is tuple:
            key = ("tuple", tuple(self.key(item) for item in obj))  # type: ignore[attr-defined]
        elif kind is frozenset:
            key = ("frozenset", tuple(self.key(item) for item in self.members(obj)))  # type: ignore[arg-type]
        elif kind is CodeType:
            key = ("code", id(obj))
        else:
            raise PycError(f"cannot write a {kind.__name__} constant ({obj!r:.80}) into a .pyc")
        self._keys[id(obj)] = key
        return key

    def members(self, value: frozenset) -> list[object]:
        """A frozenset's members in the order of their standalone encodings (independent of hash seeds)."""
        cached = self._members.get(id(value))
        if cached is None:
            cached = sorted(value, key=_standalone)
            self._members[id(value)] = cached
        return cached

    def fields(self, code: CodeType) -> tuple:
        cached = self._fields.get(id(code))
        if cached is None:
            cached = _code_fields(code)
            self._alive.append(cached)
            self._fields[id(code)] = cached
        return cached

    def children(self, obj: object) -> tuple | list:
        if type(obj) is tuple:
            return obj  # type: ignore[return-value]
        if type(obj) is frozenset:
            return self.members(obj)
        if type(obj) is CodeType:
            return self.fields(obj)[1]
        return ()

    # --- pass 1: how often is each object met? ---------------------------------------------------------------

    def count(self, obj: object) -> None:
        if id(obj) in _SINGLETONS:
            return
        key = self.key(obj)
        seen = self._counts.get(key, 0)
        self._counts[key] = seen + 1
        if not seen:  # a repeat is written as a reference: its children are not met again
            for child in self.children(obj):
                self.count(child)

    # --- pass 2: write -------------------------------------------------------------------------------------

    def write(self, obj: object) -> None:
        singleton = _SINGLETONS.get(id(obj))
        if singleton is not None:
            self.out += singleton
            return
        key = self.key(obj)
        index = self._refs.get(key)
        if index is not None:
            self.out += b"r" + _UINT32.pack(index)
            return
        flag = 0
        if self._counts.get(key, 1) > 1:
            flag = FLAG_REF
            self._refs[key] = len(self._refs)  # reserved before the children, as marshal.loads does
        self._write_value(obj, flag)

    def _type(self, code: bytes, flag: int) -> None:
        self.out.append(code[0] | flag)

    def _write_value(self, obj: object, flag: int) -> None:
        kind = type(obj)
        if kind is int:
            self._write_int(obj, flag)  # type: ignore[arg-type]
        elif kind is float:
            self._type(b"g", flag)
            self.out += struct.pack("<d", obj)
        elif kind is complex:
            self._type(b"y", flag)
            self.out += struct.pack("<dd", obj.real, obj.imag)  # type: ignore[attr-defined]
        elif kind is bytes:
            self._type(b"s", flag)
            self.out += _UINT32.pack(len(obj)) + obj  # type: ignore[arg-type, operator]
        elif kind is str:
            self._write_str(obj, flag)  # type: ignore[arg-type]
        elif kind is tuple:
            if len(obj) < 256:  # type: ignore[arg-type]
                self._type(b")", flag)
                self.out.append(len(obj))  # type: ignore[arg-type]
            else:
                self._type(b"(", flag)
                self.out += _UINT32.pack(len(obj))  # type: ignore[arg-type]
            for item in obj:  # type: ignore[attr-defined]
                self.write(item)
        elif kind is frozenset:
            self._type(b">", flag)
            self.out += _UINT32.pack(len(obj))  # type: ignore[arg-type]
            for item in self.members(obj):  # type: ignore[arg-type]
                self.write(item)
        elif kind is CodeType:
            integers, objects, firstlineno = self.fields(obj)  # type: ignore[arg-type]
            self._type(b"c", flag)
            for value in integers:
                self.out += _INT32.pack(value)
            for i, value in enumerate(objects):
                if i == 8:  # co_firstlineno sits between co_qualname and co_linetable
                    self.out += _INT32.pack(firstlineno)
                self.write(value)
        else:  # key() refused it already
            raise PycError(f"cannot write a {kind.__name__}")

    def _write_int(self, value: int, flag: int) -> None:
        if -(1 << 31) <= value < (1 << 31):
            self._type(b"i", flag)
            self.out += _INT32.pack(value)
            return
        # TYPE_LONG: the number of 15-bit digits (negative for a negative number), then the digits, low first
        magnitude = abs(value)
        digits = []
        while magnitude:
            digits.append(magnitude & 0x7FFF)
            magnitude >>= 15
        self._type(b"l", flag)
        self.out += _INT32.pack(len(digits) if value > 0 else -len(digits))
        for digit in digits:
            self.out += struct.pack("<H", digit)

    def _write_str(self, text: str, flag: int) -> None:
        interned = _is_interned_name(text)
        if text.isascii():
            data = text.encode("ascii")
            if len(data) < 256:
                self._type(b"Z" if interned else b"z", flag)
                self.out.append(len(data))
            else:
                self._type(b"A" if interned else b"a", flag)
                self.out += _UINT32.pack(len(data))
        else:
            data = text.encode("utf-8", "surrogatepass")
            self._type(b"t" if interned else b"u", flag)
            self.out += _UINT32.pack(len(data))
        self.out += data


def _standalone(value: object) -> bytes:
    writer = _Writer()
    writer.count(value)
    writer.write(value)
    return bytes(writer.out)


def _check_python() -> None:
    if sys.version_info[:2] != SUPPORTED_PYTHON:
        raise PycError(f"zonebuild.pyc writes CPython {SUPPORTED_PYTHON[0]}.{SUPPORTED_PYTHON[1]} code objects; "
                       f"this is {sys.version_info[0]}.{sys.version_info[1]}: check the code object fields in "
                       "Python/marshal.c (w_complex_object) and the localsplus layout, then extend SUPPORTED_PYTHON")


def code_shape(value: object) -> object:
    """Everything marshal keeps of a code object (or constant), as a comparable value: loaded == original."""
    if type(value) is CodeType:
        integers, objects, firstlineno = _code_fields(value)
        return ("code", integers, tuple(code_shape(item) for item in objects), firstlineno,
                value.co_varnames, value.co_cellvars, value.co_freevars, value.co_nlocals)
    if type(value) is tuple:
        return ("tuple", tuple(code_shape(item) for item in value))
    if type(value) is frozenset:
        return ("frozenset", frozenset(code_shape(item) for item in value))
    if type(value) is float:
        return ("float", struct.pack("<d", value))
    if type(value) is complex:
        return ("complex", struct.pack("<dd", value.real, value.imag))
    return (type(value).__name__, value)


def dumps(code: CodeType) -> bytes:
    """The marshal (version 4) bytes of ``code``, the same in every process; checked by loading them back."""
    _check_python()
    writer = _Writer()
    writer.count(code)
    writer.write(code)
    data = bytes(writer.out)
    try:
        loaded = marshal.loads(data)
    except (EOFError, ValueError, TypeError) as e:
        raise PycError(f"{code.co_filename}: the written marshal data does not load ({e})") from e
    if code_shape(loaded) != code_shape(code):
        raise PycError(f"{code.co_filename}: the written code object does not load back as the same code")
    return data


def compile_source(source: bytes, display_name: str) -> CodeType:
    """Compile a module like the import system does, with a fixed optimization level (asserts and docstrings
    kept, whatever -O the building interpreter runs with)."""
    return compile(source, display_name, "exec", dont_inherit=True, optimize=0)


def pyc_bytes(source: bytes, display_name: str) -> bytes:
    """A sourceless unchecked-hash .pyc (PEP 552): magic, flags, the source's hash, the marshalled code."""
    return (importlib.util.MAGIC_NUMBER + _UINT32.pack(PYC_UNCHECKED_HASH) + importlib.util.source_hash(source)
            + dumps(compile_source(source, display_name)))


def write_pyc(source: str | Path, out: str | Path, display_name: str) -> Path:
    """Compile ``source`` into ``out`` (mode 0644, whatever the umask or the source's mode)."""
    source_bytes = Path(source).read_bytes()
    try:
        data = pyc_bytes(source_bytes, display_name)
    except SyntaxError as e:
        raise PycError(f"compile {source}: {e}") from e
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    os.chmod(out, 0o644)
    return out
