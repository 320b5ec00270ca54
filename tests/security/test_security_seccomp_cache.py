"""The on-disk seccomp filter cache can save a compile, never change a filter."""

from __future__ import annotations

import os

import pytest

from styrolite import jsonio
from styrolite.security import seccomp, seccomp_cache
from styrolite.security.seccomp_default import default_profile
from styrolite.spec.model import Seccomp, SeccompSyscall


@pytest.fixture
def cache(tmp_path):
    directory = tmp_path / "state" / ".cache" / "seccomp"
    yield str(directory)


@pytest.fixture(autouse=True)
def no_memo(monkeypatch):
    """Each test sees a process that never compiled anything (only the disk can help)."""
    monkeypatch.setattr(seccomp, "_compiled", {})


def small_profile(action: str = "SCMP_ACT_ALLOW") -> Seccomp:
    return Seccomp(default_action="SCMP_ACT_ERRNO", syscalls=[SeccompSyscall(names=["read", "nosuch_call"],
                                                                             action=action)])


def test_a_second_process_gets_the_same_filter_without_compiling(cache, monkeypatch):
    first = seccomp.compile_filter(default_profile(), cache_dir=cache)
    assert os.stat(cache).st_mode & 0o777 == 0o700 and len(os.listdir(cache)) == 1
    monkeypatch.setattr(seccomp, "_compiled", {})
    monkeypatch.setattr(seccomp, "_compile", lambda *_: pytest.fail("compiled although the cache had it"))
    assert seccomp.compile_filter(default_profile(), cache_dir=cache) == first


def test_warnings_come_back_from_the_cache(cache, monkeypatch):
    first = seccomp.compile_filter(small_profile(), cache_dir=cache)
    assert first.warnings and "nosuch_call" in first.warnings[0]
    monkeypatch.setattr(seccomp, "_compiled", {})
    assert seccomp.compile_filter(small_profile(), cache_dir=cache).warnings == first.warnings


def test_another_profile_is_a_miss(cache):
    allow = seccomp.compile_filter(small_profile("SCMP_ACT_ALLOW"), cache_dir=cache)
    kill = seccomp.compile_filter(small_profile("SCMP_ACT_KILL"), cache_dir=cache)
    assert allow.program != kill.program and len(os.listdir(cache)) == 2


def test_an_entry_for_another_key_or_malformed_is_ignored_and_rewritten(cache, monkeypatch):
    profile = small_profile()
    good = seccomp.compile_filter(profile, cache_dir=cache)
    (entry,) = os.listdir(cache)
    path = os.path.join(cache, entry)
    key = seccomp_cache.cache_key(profile, "linux.seccomp")
    weak = seccomp.compile_filter(Seccomp(default_action="SCMP_ACT_ALLOW"))
    # the same file name with a filter made for another key: never used
    seccomp_cache.store(cache, key + "x", weak)
    os.replace(os.path.join(cache, seccomp_cache._sha256_hex((key + "x").encode())), path)
    assert seccomp_cache.load(cache, key) is None
    wrong = [{"key": key, "program": "zz", "flags": 0, "warnings": []},  # not hex
             {"key": key, "program": "00" * 7, "flags": 0, "warnings": []},  # not whole instructions
             {"key": key, "program": "00" * 8, "flags": "0", "warnings": []}]
    for junk in ("", "{", '{"key": 1}', *(jsonio.dumps(entry) for entry in wrong)):
        with open(path, "w") as f:
            f.write(junk)
        assert seccomp_cache.load(cache, key) is None
    monkeypatch.setattr(seccomp, "_compiled", {})
    assert seccomp.compile_filter(profile, cache_dir=cache) == good
    assert seccomp_cache.load(cache, key) == good  # rewritten


def test_a_directory_others_may_write_is_not_used(cache):
    profile = small_profile()
    seccomp.compile_filter(profile, cache_dir=cache)
    key = seccomp_cache.cache_key(profile, "linux.seccomp")
    os.chmod(cache, 0o777)
    assert seccomp_cache.load(cache, key) is None
    os.chmod(cache, 0o700)
    assert seccomp_cache.load(cache, key) is not None


def test_invalid_profiles_fail_before_the_cache_is_consulted(cache):
    from styrolite.errors import ConfigError

    with pytest.raises(ConfigError, match="defaultAction"):
        seccomp.compile_filter(Seccomp(default_action="SCMP_ACT_NOPE"), cache_dir=cache)
