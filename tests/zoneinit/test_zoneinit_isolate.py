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
