"""Boot-phase timings on CLOCK_BOOTTIME, so the host sees where the zone's boot time went, and what each
phase left resident in PID 1.

CLOCK_BOOTTIME counts from the kernel's start (and keeps counting across suspend), so the first
stamp already says how long the kernel took before it ran /init. The timeline is sent in the IDM
ready event; each phase carries its start and its duration in seconds and, when the timeline has a
``memory`` reader, PID 1's memory at the phase's end (``rss``, ``anon``, ``shmem``... in bytes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from styrolite.records import record


def boottime() -> float:
    """Seconds since the kernel started (CLOCK_BOOTTIME)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@record
class Phase:
    name: str
    start: float
    duration: float | None = None
    error: str | None = None
    memory: dict[str, int] | None = None


    def as_dict(self) -> dict[str, object]:
        record: dict[str, object] = {"name": self.name, "start": round(self.start, 6)}
        if self.duration is not None:
            record["duration"] = round(self.duration, 6)
        if self.error is not None:
            record["error"] = self.error
        if self.memory:
            record["memory"] = self.memory
        return record


class BootTimeline:
    """Records one stamp per boot phase: ``with timeline.phase("mounts"): ...`` or ``timeline.mark("ready")``."""

    def __init__(self, clock: Callable[[], float] = boottime,
                 memory: Callable[[], dict[str, int]] | None = None) -> None:
        self._clock = clock
        self._memory = memory
        self.phases: list[Phase] = []
        self.init_started = clock()

    @contextmanager
    def phase(self, name: str) -> Iterator[Phase]:
        record = Phase(name, self._clock())
        self.phases.append(record)
        try:
            yield record
        except BaseException as e:
            record.error = type(e).__name__
            raise
        finally:
            record.duration = self._clock() - record.start
            if self._memory is not None:
                record.memory = self._memory()

    def mark(self, name: str) -> Phase:
        """A point in time with no duration (e.g. ``ready``)."""
        record = Phase(name, self._clock())
        if self._memory is not None:
            record.memory = self._memory()
        self.phases.append(record)
        return record

    def as_dict(self) -> dict[str, object]:
        """The form sent in the IDM ready event and returned by zone.info."""
        return {
            "clock": "boottime",
            "init_started": round(self.init_started, 6),
            "phases": [p.as_dict() for p in self.phases],
        }
