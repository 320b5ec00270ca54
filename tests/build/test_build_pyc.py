"""zonebuild.pyc: .pyc bytes that depend on the code alone, never on the state of the compiling process.

CPython's own marshal writer marks objects for back-references by their reference count and writes strings as
interned when the process happens to have interned them; the same source then gives different .pyc files
(and different initrds). These tests check our writer against marshal.loads (and against the fields CPython
writes), and compile a few hundred stdlib modules in a clean and in a disturbed process.
"""

from __future__ import annotations

import marshal
import os
import struct
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from zonebuild.pyc import MARSHAL_VERSION, PycError, code_shape, compile_source, dumps, write_pyc

REPO = Path(__file__).resolve().parents[2]

SAMPLE = '''
"""A module that exercises what marshal has to carry."""
import functools

BIG = 2 ** 100
NEGATIVE_BIG = -(2 ** 70) + 12345
EDGES = (2 ** 31 - 1, 2 ** 31, -(2 ** 31), -(2 ** 31) - 1, 0, -1)
FLOATS = (0.0, -0.0, 1.5, float("inf"), 1e308)
COMPLEX = (1 + 2j, -0.0j)
TEXT = ("ascii", "caf\\u00e9", "\\U0001f600", "x" * 300, "with space", "", "a", "_", "\\udcff")
DATA = (b"", b"\\x00\\xff" * 200, bytes(range(256)))
LONG_TUPLE = tuple(range(300))
NESTED = ((1, (2, (3, ("deep",)))), frozenset({1, 2}))


def closure(a, b=2, *args, c, d=4, **kw):
    total = a + b + c + d + sum(args) + sum(kw.values())

    def inner(x):
        nonlocal total
        total += x
        return total + a
    return inner


class Base:
    def greet(self):
        return "base"


class Child(Base):
    label = "child"

    def greet(self):
        return super().greet() + "/" + self.label + "/" + __class__.__name__


def membership(word):
    return word in {"alpha", "beta", "gamma", "delta", "epsilon"}, word in frozenset({1.5, 2, "x"})


def comprehensions(n):
    squares = [i * i for i in range(n)]
    lookup = {i: str(i) for i in range(n)}
    return squares, lookup, sum(x for x in squares if x % 2), {c for c in "abcabc"}


def generator(n):
    for i in range(n):
        yield i
    try:
        raise ValueError("boom")
    except ValueError as e:
        yield str(e)
    finally:
        pass


async def coroutine(x):
    return x * 2


def matcher(value):
    match value:
        case {"kind": "point", "x": x, "y": y}:
            return ("point", x, y)
        case [first, *rest]:
            return ("list", first, len(rest))
        case _:
            return ("other",)


@functools.lru_cache(maxsize=None)
def cached(n):
    return n if n < 2 else cached(n - 1) + cached(n - 2)


RESULT = (closure(1, 2, 3, c=4, e=5)(10), Child().greet(), membership("beta"), comprehensions(5),
          list(generator(3)), matcher({"kind": "point", "x": 1, "y": 2}), matcher([1, 2, 3]), cached(30),
          (lambda *a, **k: (a, k))(1, z=2))
'''


def run_module(code: object) -> dict:
    namespace: dict = {"__name__": "sample"}
    exec(code, namespace)
    return namespace


# --- a reader for the test only: marshal data -> values, references resolved, flags dropped ----------------------

class Reader:
    """Parses marshal v4 into plain values (a code object becomes a tuple of its marshalled fields), so the
    fields CPython writes and the ones we write can be compared one by one, kinds of locals included."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.refs = data, 0, []

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def i32(self) -> int:
        return struct.unpack("<i", self.take(4))[0]

    def value(self) -> object:
        code = self.take(1)[0]
        flag, kind = code & 0x80, chr(code & 0x7F)
        simple = {"N": None, "T": True, "F": False, ".": Ellipsis, "S": StopIteration}
        if kind in simple:
            return simple[kind]
        if kind == "r":
            return self.refs[self.i32()]
        index = len(self.refs)
        if flag:
            self.refs.append(None)  # reserved before the children, like marshal.loads
        result = self.body(kind)
        if flag:
            self.refs[index] = result
        return result

    def body(self, kind: str) -> object:
        if kind == "i":
            return self.i32()
        if kind == "l":
            n = self.i32()
            digits = [struct.unpack("<H", self.take(2))[0] for _ in range(abs(n))]
            value = sum(d << (15 * i) for i, d in enumerate(digits))
            return -value if n < 0 else value
        if kind == "g":
            return ("float", self.take(8))
        if kind == "y":
            return ("complex", self.take(16))
        if kind == "s":
            return ("bytes", self.take(self.i32()))
        if kind in "zZ":
            return self.take(self.take(1)[0]).decode("ascii")
        if kind in "aA":
            return self.take(self.i32()).decode("ascii")
        if kind in "ut":
            return self.take(self.i32()).decode("utf-8", "surrogatepass")
        if kind in ")(":
            n = self.take(1)[0] if kind == ")" else self.i32()
            return ("tuple", tuple(self.value() for _ in range(n)))
        if kind == ">":
            return ("frozenset", frozenset(self.value() for _ in range(self.i32())))
        if kind == "c":
            integers = tuple(self.i32() for _ in range(5))
            objects = [self.value() for _ in range(8)]
            firstlineno = self.i32()
            return ("code", integers, tuple(objects), firstlineno, self.value(), self.value())
        raise AssertionError(f"unexpected marshal type {kind!r} at {self.pos - 1}")


def fields(data: bytes) -> object:
    reader = Reader(data)
    result = reader.value()
    assert reader.pos == len(data)
    return result


# --- the writer ---------------------------------------------------------------------------------------------------

def test_written_code_loads_and_runs_like_the_original() -> None:
    code = compile_source(SAMPLE.encode(), "sample.py")
    loaded = marshal.loads(dumps(code))
    assert code_shape(loaded) == code_shape(code)
    assert run_module(loaded)["RESULT"] == run_module(code)["RESULT"]


def test_fields_match_what_cpython_writes() -> None:
    """Every marshalled field (bytecode, constants, names, localsplus names and kinds, tables) equals CPython's;
    only the FLAG_REF/TYPE_REF and interning choices may differ."""
    sources = [SAMPLE.encode()]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in ("functools.py", "dataclasses.py", "typing.py", "enum.py", "asyncio/tasks.py", "json/decoder.py",
                 "argparse.py", "contextlib.py", "inspect.py", "collections/__init__.py"):
        sources.append((stdlib / name).read_bytes())
    for source in sources:
        code = compile_source(source, "m.py")
        assert fields(dumps(code)) == fields(marshal.dumps(code, MARSHAL_VERSION))


def test_same_code_same_bytes_whatever_the_identity_of_equal_constants() -> None:
    a = compile_source(b"x = ('a b', 'a b' + '')\n", "m.py")
    b = compile_source(b"x = ('a b', 'a b' + '')\n", "m.py")
    assert dumps(a) == dumps(b)


def test_pyc_header_is_unchecked_hash_and_importable(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("VALUE = sum(range(10))\n")
    out = write_pyc(source, tmp_path / "pkg" / "mod.pyc", "mod.py")
    data = out.read_bytes()
    import importlib.util

    assert data[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(data[4:8], "little") == 0b01  # hash-based, unchecked (PEP 552)
    assert data[8:16] == importlib.util.source_hash(source.read_bytes())
    assert out.stat().st_mode & 0o777 == 0o644
    result = subprocess.run([sys.executable, "-c", "import mod; print(mod.VALUE)"], cwd=out.parent,
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "45"


def test_unknown_constant_type_is_refused() -> None:
    code = compile_source(b"x = 1\n", "m.py")
    odd = code.replace(co_consts=(*code.co_consts, [1, 2]))
    with pytest.raises(PycError, match="list"):
        dumps(odd)


# --- the payload, built in two different processes ---------------------------------------------------------------

PAYLOAD = r"""
import hashlib, os, sys, sysconfig
if sys.argv[1] == "disturb":
    [sys.intern(chr(i)) for i in range(256)]          # interned strings CPython would mark in the .pyc
    import decimal, email.message, http.client, json, xml.dom.minidom  # noqa: F401  (other objects, refcounts)
    from zonebuild.kernel_image import parse_metadata  # noqa: F401  (what `zonehost run` imports first)
from pathlib import Path
from zonebuild.pyc import write_pyc
target = Path(sys.argv[2])
stdlib = Path(sysconfig.get_paths()["stdlib"])
count = 0
for package in ("asyncio", "email", "json", "logging", "multiprocessing", "unittest", "xml", "importlib", "encodings"):
    for source in sorted((stdlib / package).rglob("*.py")):
        rel = source.relative_to(stdlib)
        write_pyc(source, target / rel.with_suffix(".pyc"), str(rel))
        count += 1
digest = hashlib.sha256()
for directory, dirs, files in sorted(os.walk(target)):
    dirs.sort()
    for name in sorted(files):
        path = os.path.join(directory, name)
        digest.update(os.path.relpath(path, target).encode() + b"\0")
        digest.update(oct(os.stat(path).st_mode).encode() + b"\0")
        with open(path, "rb") as f:
            digest.update(f.read())
print(count, digest.hexdigest())
"""


def _payload_digest(mode: str, target: Path) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONHASHSEED="random")
    prelude = "import tests.build.conftest\n"  # registers zonebuild for a source checkout
    result = subprocess.run([sys.executable, "-c", prelude + PAYLOAD, mode, str(target)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    count, digest = result.stdout.split()[-2:]
    return int(count), digest


@pytest.mark.slow
def test_bytecode_payload_is_the_same_in_a_disturbed_process(tmp_path: Path) -> None:
    clean = _payload_digest("clean", tmp_path / "clean")
    disturbed = _payload_digest("disturb", tmp_path / "disturbed")
    assert clean[0] > 200  # a few stdlib packages' worth of modules
    assert clean == disturbed


def test_the_disturbance_does_change_cpython_marshal() -> None:
    """The control: the same disturbance makes CPython's own writer produce other bytes, so the payload test
    above would catch a return to marshal.dumps."""
    probe = ("import sys, hashlib, marshal\n"
             "if sys.argv[1] == 'disturb':\n    [sys.intern(chr(i)) for i in range(256)]\n"
             "src = open(sys.argv[2], 'rb').read()\n"
             "print(hashlib.sha256(marshal.dumps(compile(src, 'm.py', 'exec', dont_inherit=True))).hexdigest())\n")
    import argparse

    source = argparse.__file__
    outputs = {mode: subprocess.run([sys.executable, "-c", probe, mode, source], capture_output=True, text=True,
                                    check=True).stdout for mode in ("clean", "disturb")}
    assert outputs["clean"] != outputs["disturb"]
