"""Runtime.child_exited records an exit in the container's state; a failure to do so is an error, not silence."""

from __future__ import annotations

import os

import pytest

from styrolite.api import Runtime
from styrolite.errors import ContainerError
from styrolite.state import ContainerState

KILLED = 9  # a wait status: killed by SIGKILL


def runtime_with(tmp_path, pid: int) -> Runtime:
    rt = Runtime(str(tmp_path), subreaper=False)
    rt.store.reserve("c1")
    rt.store.save(ContainerState(id="c1", bundle="/b", pid=pid, status="running"))
    rt._owners[pid] = "c1"  # as create() records its init
    return rt


def test_the_exit_is_recorded(tmp_path):
    rt = runtime_with(tmp_path, 4242)
    assert rt.child_exited(4242, KILLED) == "c1" and rt.exit_code("c1") == 137
    with open(tmp_path / "c1" / "state.json") as f:
        assert '"exit_code": 137' in f.read()


def test_a_deleted_container_is_nothing_to_record(tmp_path):
    rt = runtime_with(tmp_path, 4243)
    os.remove(tmp_path / "c1" / "state.json")
    assert rt.child_exited(4243, KILLED) == "c1" and rt.exit_code("c1") == 137


def test_a_state_that_cannot_be_written_is_reported(tmp_path):
    rt = runtime_with(tmp_path, 4244)
    os.mkdir(tmp_path / "c1" / "state.json.tmp")  # the write-then-rename cannot write
    with pytest.raises(ContainerError, match=r"record the exit \(137\) of container 'c1'"):
        rt.child_exited(4244, KILLED)
    assert rt.exit_code("c1") == 137  # known all the same
