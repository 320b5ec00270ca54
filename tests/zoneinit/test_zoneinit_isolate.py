import subprocess
import sys

import pytest

from zoneinit.errors import DigestMismatch, ZoneInitError
from zoneinit.isolate import in_child
from zoneinit.mounts.verify import verify_sha256


def _boom():
    raise DigestMismatch("disk x: sha256 differs")


def test_result_and_typed_error_come_back(tmp_path):
    (tmp_path / "d").write_bytes(b"abc")
    digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert in_child(verify_sha256, str(tmp_path / "d"), digest) == digest
    with pytest.raises(DigestMismatch, match="sha256 differs"):
        in_child(_boom)
    with pytest.raises(ZoneInitError, match="invalid literal"):
        in_child(int, "not a number")


def test_the_parent_never_imports_hashlib(tmp_path):
    code = (
        "import sys; from zoneinit.isolate import in_child; from zoneinit.mounts.verify import sha256_of\n"
        f"print(in_child(sha256_of, {str(tmp_path / 'd')!r}), 'hashlib' in sys.modules, '_hashlib' in sys.modules)"
    )
    (tmp_path / "d").write_bytes(b"abc")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "False", "False"]


def _run_loop_until(supervisor, done, timeout=20.0):
    import time

    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        supervisor.run_once(0.05)
        supervisor.reap()
    assert done()


def test_start_in_child_answers_on_the_loop(tmp_path):
    from zoneinit.isolate import start_in_child
    from zoneinit.supervisor.loop import Supervisor

    sup = Supervisor()
    results = []
    (tmp_path / "d").write_bytes(b"abc")
    start_in_child(sup, lambda value, error: results.append((value, error)), verify_sha256, str(tmp_path / "d"),
                   "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    start_in_child(sup, lambda value, error: results.append((value, error)), _boom)
    assert results == []   # nothing waited for: the loop gets the answers
    _run_loop_until(sup, lambda: len(results) == 2)
    values = {type(error).__name__ if error else value for value, error in results}
    assert values == {"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "DigestMismatch"}


def test_one_hash_for_every_waiter_and_a_detach_answers_them(tmp_path):
    import hashlib

    from zoneinit.config.plan import DiskPlan
    from zoneinit.mounts.disks import DiskStore
    from zoneinit.mounts.table import MountTable
    from zoneinit.supervisor.loop import Supervisor

    sup = Supervisor()
    store = DiskStore([], MountTable(), str(tmp_path / "images"))
    data = b"x" * (3 << 20)
    (tmp_path / "vdz").write_bytes(data)
    store.add(DiskPlan("img", str(tmp_path / "vdz"), "sha256:" + hashlib.sha256(data).hexdigest(), len(data)))
    answers: list[object] = []
    store.verify_async("img", sup, answers.append)
    store.verify_async("img", sup, answers.append)
    _run_loop_until(sup, lambda: len(answers) == 2)
    assert answers == [None, None] and "img" in store.verified
    store.verify_async("img", sup, answers.append)   # known good: at once
    assert answers[-1] is None
    store.remove("img")
    store.add(DiskPlan("img", str(tmp_path / "vdz"), "sha256:" + "0" * 64, len(data)))
    store.verify_async("img", sup, answers.append)
    store.remove("img")   # detached while its hash runs: the waiter is told, the late result ignored
    assert "detached before it was verified" in str(answers[-1])
    with pytest.raises(ValueError, match="already attached"):
        store.add(DiskPlan("x", "/dev/a")) or store.add(DiskPlan("x", "/dev/b"))
