"""Fixtures for host.pod: throw-away network namespaces and a CNI-made pod network (podtest_netns)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from podtest_netns import CniPod, cni_network, netns_pool


@pytest.fixture
def make_netns() -> Iterator[Callable[[str], Path]]:
    """make_netns(prefix) -> /var/run/netns/<unique name>; all deleted at the end of the test."""
    with netns_pool() as make:
        yield make


@pytest.fixture
def cni_pod(make_netns: Callable[[str], Path], tmp_path: Path) -> Iterator[CniPod]:
    with cni_network(make_netns, tmp_path) as pod:
        yield pod
