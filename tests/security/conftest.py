"""The ``forked`` fixture: security settings change the calling process for good, so tests apply them in a child."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from security_forking import ChildResult, run_forked


@pytest.fixture
def forked() -> Callable[[Callable[[], Any]], ChildResult]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    return run_forked
