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
