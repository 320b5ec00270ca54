"""@model_class keeps the dataclass contract the rest of Styrolite relies on."""

from __future__ import annotations

import copy
import dataclasses

import pytest

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


def test_dataclass_protocol():
    ns = Namespace("pid")
    assert dataclasses.is_dataclass(ns)
    assert [f.name for f in dataclasses.fields(Namespace)] == ["type", "path"]
    assert dataclasses.replace(ns, path="/proc/1/ns/pid") == Namespace("pid", "/proc/1/ns/pid")
    assert dataclasses.asdict(Root("r")) == {"path": "r", "readonly": False}
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
