"""@record keeps the contract the model and the runtime's plans rely on, without ``dataclasses``."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from styrolite import records
from styrolite.cgroups.paths import CgroupPath
from styrolite.records import FrozenInstanceError, field, record
from styrolite.spec.model import IDMapping, Namespace, Process, Root, Spec, User


def test_construction_positional_keyword_and_defaults():
    assert Root("rootfs") == Root(path="rootfs", readonly=False)
    assert IDMapping(0, 1000, 1).host_id == 1000
    process = Process(cwd="/")
    assert process.args == [] and process.user == User() and process.capabilities is None
    assert Process(cwd="/").env is not process.env  # default_factory gives each object its own list


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: Root(), "missing required argument: 'path'"),
        (lambda: Root("a", True, 3), "takes 2 positional arguments but 3 were given"),
        (lambda: Root("a", path="b"), "multiple values for argument 'path'"),
        (lambda: Root("a", writable=True), "unexpected keyword argument 'writable'"),
    ],
)
def test_construction_errors(call, message):
    with pytest.raises(TypeError, match=message):
        call()


def test_record_protocol():
    ns = Namespace("pid")
    assert records.is_record(ns) and records.is_record(Namespace) and not records.is_record("pid")
    assert [f.name for f in records.fields(Namespace)] == ["type", "path"]
    assert records.replace(ns, path="/proc/1/ns/pid") == Namespace("pid", "/proc/1/ns/pid")
    assert records.asdict(Root("r")) == {"path": "r", "readonly": False}
    assert records.asdict(Spec("1.2.0", root=Root("r")))["root"] == {"path": "r", "readonly": False}
    assert repr(ns) == "Namespace(type='pid', path=None)"
    assert ns != Namespace("net") and ns != "pid"
    with pytest.raises(TypeError):
        hash(ns)
    spec = Spec(oci_version="1.2.0", root=Root("r"))
    assert copy.deepcopy(spec) == spec and copy.deepcopy(spec).root is not spec.root
    match ns:
        case Namespace(type="pid"):
            pass
        case _:
            pytest.fail("match by field failed")
    match ns:
        case Namespace("pid", None):
            pass
        case _:
            pytest.fail("match by position failed")


def test_frozen_records_are_hashable_and_immutable():
    path = CgroupPath(("a", "b"), True)
    assert hash(path) == hash(CgroupPath(("a", "b"), True)) and {path: 1}[CgroupPath(("a", "b"), True)] == 1
    with pytest.raises(FrozenInstanceError):
        path.absolute = False  # type: ignore[misc]
    assert copy.deepcopy(path) == path


def test_field_order_and_metadata():
    @record
    class Base:
        a: int
        b: list[int] = field(default_factory=list, metadata={"json": "bee"})

    @record
    class Child(Base):
        c: str = "c"

    assert [f.name for f in records.fields(Child)] == ["a", "b", "c"]
    assert records.fields(Child)[1].metadata == {"json": "bee"} and records.fields(Child)[1].type == "list[int]"
    assert Child(1).b == [] and Child(1, [2], "x") == Child(a=1, b=[2], c="x")
    with pytest.raises(TypeError, match="non-default field 'b' follows"):
        @record
        class Bad:
            a: int = 0
            b: int


def test_the_model_and_the_parser_do_not_import_dataclasses_or_typing():
    """What ``styrolite create`` loads to parse a config stays free of the heavy stdlib modules."""
    code = ("import sys; import styrolite.spec.parse, styrolite.state, styrolite.cli;"
            "print(sorted(m for m in ('dataclasses', 'typing', 're', 'json', 'inspect', 'logging', 'argparse')"
            " if m in sys.modules))")
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert result.stdout.strip() == "[]", result.stdout
