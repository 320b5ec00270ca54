"""The user-namespace id range of a zone's containers: the one rule the host (zonebuild.idshift, the config
it writes) and the zone (the config parser, the bundle) share. Imports nothing, so PID 1 can load it cheaply."""

from __future__ import annotations

ID_RANGE = 65536   # ids a user-namespace container sees: 0..65535
MAX_ID = 2**32 - 2  # (uid_t)-1 is "no id"


def owner_shift_problem(shift: int) -> str | None:
    """Why ``shift`` cannot be a root image's owner shift, or None: a whole id range, never overlapping the
    zone's own ids 0..65535, ending below (uid_t)-1."""
    if isinstance(shift, bool) or not isinstance(shift, int) or shift < ID_RANGE or shift % ID_RANGE:
        return f"owner shift {shift!r}: must be a multiple of {ID_RANGE}, at least {ID_RANGE}"
    if shift + ID_RANGE - 1 > MAX_ID:
        return f"owner shift {shift}: the range {shift}..{shift + ID_RANGE - 1} passes 2^32-2"
    return None
