"""Model records -> JSON-ready dicts: the inverse of ``parse.decode``.

Used for the state/debug output and for round-trip tests. Absent optionals (None) and empty lists/maps
are left out, as Go's ``omitempty`` does, so the output reads like a hand-written config.json.
"""

from __future__ import annotations

from styrolite import records
from styrolite.spec.parse import fields_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def to_json_obj(value: Any) -> Any:
    """A model record (or list/dict/scalar of them) as plain JSON values with the spec's key names."""
    if records.is_record(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for info in fields_of(type(value)):
            item = getattr(value, info.name)
            if item is None or (isinstance(item, list | dict) and not item and not info.required):
                continue
            out[info.json] = to_json_obj(item)
        return out
    if isinstance(value, list):
        return [to_json_obj(item) for item in value]
    if isinstance(value, dict):
        return {key: to_json_obj(item) for key, item in value.items()}
    return value
