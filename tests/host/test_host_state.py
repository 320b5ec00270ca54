"""The per-zone state directory: create, find again, refuse duplicates, liveness from the pidfile."""

from __future__ import annotations

import os
import subprocess

import pytest

from host.errors import ZoneExistsError, ZoneNotFoundError
from host.state import ZoneDir, existing_zone, list_zones, zone_dir
from host.zonedef import ZoneDef


def definition(name: str = "web") -> ZoneDef:
    return ZoneDef(name=name, kernel_image="/k", initrd="/i", command=["true"])


def test_create_then_a_second_lookup_finds_the_zone(tmp_path):
    zone = zone_dir("web", tmp_path)
    zone.create(definition())
    assert (tmp_path / "web" / "zone.json").is_file()
    assert (tmp_path / "web" / "disks").is_dir()
    assert oct((tmp_path / "web").stat().st_mode & 0o777) == "0o700"
    found = existing_zone("web", tmp_path)
    assert found.load() == definition()
    assert [z.name for z in list_zones(tmp_path)] == ["web"]


def test_state_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ZONE_STATE", str(tmp_path / "elsewhere"))
    zone_dir("a").create(definition("a"))
    assert (tmp_path / "elsewhere" / "a" / "zone.json").exists()


def test_duplicate_name_is_refused(tmp_path):
    zone_dir("web", tmp_path).create(definition())
    with pytest.raises(ZoneExistsError, match="already exists"):
        zone_dir("web", tmp_path).create(definition())


def test_leftover_directory_without_definition_is_taken_over(tmp_path):
    (tmp_path / "web").mkdir()
    zone_dir("web", tmp_path).create(definition())
    assert existing_zone("web", tmp_path).exists()


def test_missing_and_invalid_names(tmp_path):
    with pytest.raises(ZoneNotFoundError, match="no zone named 'nope'"):
        existing_zone("nope", tmp_path)
    with pytest.raises(ZoneNotFoundError, match="not a valid zone name"):
        zone_dir("../etc", tmp_path)
    assert list_zones(tmp_path / "absent") == []


def test_liveness_follows_the_pid(tmp_path):
    zone = zone_dir("web", tmp_path)
    zone.create(definition())
    assert zone.pid() is None and not zone.is_running()
    zone.pidfile.write_text(f"{os.getpid()}\n")
    assert zone.is_running()
    child = subprocess.Popen(["true"])
    child.wait()
    zone.pidfile.write_text(f"{child.pid}\n")
    assert not zone.is_running()


def test_runtime_info_and_remove(tmp_path):
    zone = zone_dir("web", tmp_path)
    zone.create(definition())
    zone.save_runtime(backend="qemu", pid=123)
    zone.update_runtime(exit_code=7)
    info = zone.runtime()
    assert info["pid"] == 123 and info["exit_code"] == 7 and "started_at" in info
    zone.remove()
    assert not zone.path.exists()
    assert isinstance(zone, ZoneDir)
