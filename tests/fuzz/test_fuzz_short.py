"""A short, seeded pass of each bench fuzzer (bench/fuzz_*.py) for CI: the same inputs every run, a few seconds
in all. The long runs (>= 1,000,000 inputs each) are ``python3 bench/fuzz_<name>.py``.

Each pass must finish with no non-typed exception: hostile IDM frames, OCI configs, zone configs and image
layers may only produce the project's typed errors.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from fuzz_common import mutate_tree, run_mutation  # noqa: E402

# inputs per fuzzer: sized for roughly half a second each on a 2-core machine
PASSES = {"fuzz_idm": 3000, "fuzz_oci_config": 800, "fuzz_zone_config": 1500, "fuzz_layers": 400}


@pytest.fixture(scope="module")
def fuzzers() -> Iterator[dict[str, ModuleType]]:
    modules = {name: importlib.import_module(name) for name in PASSES}
    yield modules
    shutil.rmtree(modules["fuzz_layers"].WORK, ignore_errors=True)


@pytest.mark.parametrize("name", sorted(PASSES))
def test_seeded_pass_finds_nothing(fuzzers: dict[str, ModuleType], name: str) -> None:
    module = fuzzers[name]
    stats = run_mutation(name, module.target, module.seeds(), runs=PASSES[name], seed=20261128,
                         tokens=getattr(module, "TOKENS", ()))
    assert stats.runs == PASSES[name]
    assert not stats.findings, stats.report()


@pytest.mark.root
def test_seeds_are_accepted_where_valid(fuzzers: dict[str, ModuleType]) -> None:
    """The seed corpora start from valid inputs, so the mutations explore near the accepted language."""
    from idm.messages import Message, MessageDecoder
    from styrolite.spec.parse import parse_config
    from zoneinit.config.parser import parse_container, parse_zone_config

    decoded = MessageDecoder(fuzzers["fuzz_idm"].MAX_FRAME).feed(fuzzers["fuzz_idm"].seeds()[0])
    assert len(decoded) == 1 and isinstance(decoded[0], Message)
    parse_config(fuzzers["fuzz_oci_config"].BASE)
    parse_zone_config(fuzzers["fuzz_zone_config"].DOCUMENT)
    parse_container(fuzzers["fuzz_zone_config"].CREATE)
    fuzzers["fuzz_layers"]._apply_layer(fuzzers["fuzz_layers"].LAYER)


def test_mutate_tree_never_changes_its_input() -> None:
    import random

    doc = {"a": [1, {"b": "c"}], "d": {"e": None}}
    before = repr(doc)
    for i in range(200):
        mutate_tree(doc, random.Random(i))
    assert repr(doc) == before


def test_a_non_typed_exception_is_reported(fuzzers: dict[str, ModuleType]) -> None:
    def target(data: bytes) -> None:
        if data.startswith(b"boom"):
            raise KeyError("found it")

    stats = run_mutation("selftest", target, [b"boom", b"ok"], runs=10, seed=1)
    assert [f.kind for f in stats.findings.values()] == ["KeyError"]
    assert "FINDING" in stats.report()


@pytest.mark.parametrize("name", [".wh.", ".wh..", ".wh...", "etc/.wh...", "a/b/.wh..."])
def test_whiteout_of_dot_or_dotdot_is_refused_and_removes_nothing(tmp_path: Path, name: str) -> None:
    """Found by bench/fuzz_layers.py: a top-level '.wh...' entry used to rmtree the unpack root's parent."""
    import io
    import tarfile

    from build.layers import LayerApplier, LayerError

    (tmp_path / "keep").mkdir()
    (tmp_path / "root" / "etc").mkdir(parents=True)
    (tmp_path / "root" / "a" / "b").mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(tarfile.TarInfo(name))
    buf.seek(0)
    with pytest.raises(LayerError, match="whiteout"):
        LayerApplier(tmp_path / "root").apply(buf)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep", "root"]
    assert (tmp_path / "root" / "etc").is_dir() and (tmp_path / "root" / "a" / "b").is_dir()
