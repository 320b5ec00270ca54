import pytest

from zoneinit.boot.timing import BootTimeline, boottime


def test_phases_record_start_and_duration_from_the_clock():
    ticks = iter([1.0, 2.0, 2.5, 3.0, 4.25, 5.0])
    timeline = BootTimeline(clock=lambda: next(ticks))
    with timeline.phase("mounts"):
        pass
    with pytest.raises(ValueError), timeline.phase("modules"):
        raise ValueError("boom")
    timeline.mark("ready")
    d = timeline.as_dict()
    assert d["init_started"] == 1.0
    assert d["phases"] == [
        {"name": "mounts", "start": 2.0, "duration": 0.5},
        {"name": "modules", "start": 3.0, "duration": 1.25, "error": "ValueError"},
        {"name": "ready", "start": 5.0},
    ]


def test_boottime_is_monotonic_and_positive():
    a = boottime()
    b = boottime()
    assert 0 < a <= b


def test_each_phase_records_what_pid1_holds_at_its_end():
    """With a memory reader, every phase (and the ready mark) carries PID 1's memory as it ended."""
    readings = iter([{"rss": 10, "anon": 4, "shmem": 6}, {"rss": 12, "anon": 6, "shmem": 6}])
    timeline = BootTimeline(clock=lambda: 1.0, memory=lambda: next(readings))
    with timeline.phase("idm"):
        pass
    timeline.mark("ready")
    phases = timeline.as_dict()["phases"]
    assert phases[0]["memory"] == {"rss": 10, "anon": 4, "shmem": 6}
    assert phases[1]["memory"] == {"rss": 12, "anon": 6, "shmem": 6}


def test_the_zone_timeline_reads_pid1_memory_from_proc():
    from zoneinit.boot.zone import Zone

    zone = Zone(pid1=False, console=False)
    with zone.timeline.phase("probe"):
        pass
    memory = zone.timeline.as_dict()["phases"][-1]["memory"]
    assert memory["rss"] > 0 and memory["anon"] > 0 and "shmem" in memory


def test_stage0_and_the_imports_come_from_the_stamps_before_pid1_ran(monkeypatch):
    """stage0 (build/stage0) stamps ZONE_STAGE0_NS, the program's entry ZONE_ENTRY_NS: the timeline splits the time
    before PID 1's boot into stage0 (exec, interpreter start) and imports."""
    from zoneinit.boot.zone import Zone

    now = boottime()
    monkeypatch.setenv("ZONE_STAGE0_NS", str(int((now - 2.0) * 1e9)))
    monkeypatch.setenv("ZONE_ENTRY_NS", str(int((now - 0.5) * 1e9)))
    phases = Zone(pid1=False, console=False).timeline.as_dict()["phases"]
    assert [p["name"] for p in phases] == ["stage0", "imports"]
    assert phases[0]["duration"] == pytest.approx(1.5, abs=0.01)
    assert phases[1]["start"] == pytest.approx(now - 0.5, abs=0.01) and phases[1]["duration"] >= 0.5
    monkeypatch.delenv("ZONE_ENTRY_NS")
    phases = Zone(pid1=False, console=False).timeline.as_dict()["phases"]
    assert [p["name"] for p in phases] == ["stage0"] and phases[0]["duration"] >= 2.0
