"""styrolite.jsonio is json.loads/json.dumps without importing json: same results, same refusals."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from styrolite import jsonio

SCALARS = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | \
    st.floats(allow_nan=False) | st.text(max_size=12)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                            max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_dumps_matches_json(value):
    assert jsonio.dumps(value) == json.dumps(value)
    assert jsonio.dumps(value, indent=2) == json.dumps(value, indent=2)
    assert jsonio.loads(json.dumps(value)) == json.loads(json.dumps(value))
    assert jsonio.loads(json.dumps(value, indent=1)) == value or value != value


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20))
def test_loads_refuses_what_json_refuses(text):
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            jsonio.loads(text)
        return
    except RecursionError:
        return
    got = jsonio.loads(text)
    assert got == expected or (isinstance(got, float) and math.isnan(got) and math.isnan(expected))


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}'])
def test_constants_are_refused_when_asked(text):
    json.loads(text)  # json accepts them by default, and so does jsonio
    jsonio.loads(text)
    with pytest.raises(ValueError, match="is not valid JSON"):
        jsonio.loads(text, constants=False)


def test_non_string_keys_and_tuples_are_written_as_json_writes_them():
    value = {1: (1, 2), None: [], False: {}, 2.5: "x"}
    assert jsonio.dumps(value) == json.dumps(value)
    assert jsonio.dumps(value, indent=2) == json.dumps(value, indent=2)


def test_whitespace_around_a_document():
    assert jsonio.loads(" \n\t{\"a\": [1, 2.5]}\r\n ") == {"a": [1, 2.5]}
    with pytest.raises(ValueError, match="extra data"):
        jsonio.loads("{} {}")
