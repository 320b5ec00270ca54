"""Whatever JSON arrives, the parser answers with a Spec or a ConfigError, never another exception."""

from __future__ import annotations

import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from styrolite.errors import ConfigError
from styrolite.spec import default_config, parse_config, parse_process, to_json_obj

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
    st.sampled_from(["", "/", "..", "pid", "user", "CAP_KILL", "RLIMIT_NOFILE", "SCMP_ACT_ALLOW", "1.2.0", "a=b"]),
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def _paths(obj: object, prefix: tuple = ()):
    """Every (container, key) position inside a JSON document, to splice random values into."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield (prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield (prefix, i)
            yield from _paths(value, (*prefix, i))


BASE = default_config()
POSITIONS = list(_paths(BASE))


def _accepts_or_config_error(parse, doc: object) -> None:
    try:
        result = parse(doc)
    except ConfigError as e:
        assert e.message
        return
    # whatever parses must serialize and parse back to the same thing
    assert parse(json.loads(json.dumps(to_json_obj(result)))) == result


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_random_documents(doc):
    _accepts_or_config_error(parse_config, doc)
    _accepts_or_config_error(parse_process, doc)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(POSITIONS), json_values)
def test_random_value_spliced_into_a_valid_config(position, value):
    doc = copy.deepcopy(BASE)
    parents, key = position
    container = doc
    for step in parents:
        container = container[step]
    container[key] = value
    _accepts_or_config_error(parse_config, doc)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([p for p in POSITIONS if isinstance(p[1], str)]))
def test_removing_any_key(position):
    doc = copy.deepcopy(BASE)
    parents, key = position
    container = doc
    for step in parents:
        container = container[step]
    del container[key]
    _accepts_or_config_error(parse_config, doc)
