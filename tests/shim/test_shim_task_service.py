"""The Task service over a real ttrpc connection, with the recording host-process backend double."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from google.protobuf import any_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shimtest import LOGGER, FifoReader, ShimUnderTest, container_annotations, sandbox_annotations

from shim.process import Status
from shim.protos import cgroups_v2_pb2, events_pb2, mount_pb2
from shim.protos import shim_pb2 as api
from shim.ttrpc import Code, RpcError

PROCESS_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"


def exec_spec(args: list[str], terminal: bool = False) -> any_pb2.Any:
    return any_pb2.Any(type_url=PROCESS_URL, value=json.dumps({"args": args, "terminal": terminal,
                                                               "cwd": "/"}).encode())


def create_sandbox(shim: ShimUnderTest, make_bundle, pod: str = "pod1") -> int:
    bundle = make_bundle(pod, ["/pause"], sandbox_annotations(pod))
    return shim.call("Create", api.CreateTaskRequest(id=pod, bundle=str(bundle))).pid


def expect_error(shim: ShimUnderTest, method: str, request, code: Code, text: str = "") -> RpcError:
    with pytest.raises(RpcError) as info:
        shim.call(method, request)
    assert info.value.code == code, info.value
    assert text in info.value.message
    return info.value


def test_sandbox_task_is_the_zone(shim: ShimUnderTest, make_bundle) -> None:
    pid = create_sandbox(shim, make_bundle)
    assert pid == shim.backend.zone.pid and shim.backend.names() == ["start_zone"]
    assert shim.backend.sandbox.sandbox_id == "pod1" and shim.backend.sandbox.namespace == "testns"
    state = shim.call("State", api.StateRequest(id="pod1"))
    assert (state.status, state.pid, state.id) == (Status.CREATED, pid, "pod1")
    assert shim.call("Start", api.StartRequest(id="pod1")).pid == pid
    assert shim.call("State", api.StateRequest(id="pod1")).status == Status.RUNNING
    assert [p.pid for p in shim.call("Pids", api.PidsRequest(id="pod1")).processes] == [pid]
    expect_error(shim, "Exec", api.ExecProcessRequest(id="pod1", exec_id="e", spec=exec_spec(["true"])),
                 Code.FAILED_PRECONDITION, "runs no process")
    expect_error(shim, "Pause", api.PauseRequest(id="pod1"), Code.FAILED_PRECONDITION)
    shim.call("Kill", api.KillRequest(id="pod1", signal=signal.SIGKILL))
    waited = shim.call("Wait", api.WaitRequest(id="pod1"))
    assert waited.exit_status == 128 + signal.SIGKILL and waited.exited_at.seconds > 0
    assert "stop_zone" in shim.backend.names()
    assert shim.call("State", api.StateRequest(id="pod1")).status == Status.STOPPED
    expect_error(shim, "Kill", api.KillRequest(id="pod1", signal=signal.SIGKILL), Code.NOT_FOUND,
                 "process already finished")
    deleted = shim.call("Delete", api.DeleteRequest(id="pod1"))
    assert deleted.exit_status == 137 and deleted.pid == pid
    shim.call("Shutdown", api.ShutdownRequest(id="pod1"))
    assert shim.shutdown.wait(5)
    assert shim.sink.topics() == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]


def test_container_in_pod_output_exit_and_events(shim: ShimUnderTest, make_bundle, tmp_path: Path) -> None:
    create_sandbox(shim, make_bundle)
    shim.call("Start", api.StartRequest(id="pod1"))
    bundle = make_bundle("c1", ["sh", "-c", "echo out; echo err >&2; exit 3"], container_annotations("pod1"))
    stdout, stderr = FifoReader(tmp_path / "c1-stdout"), FifoReader(tmp_path / "c1-stderr")
    rootfs = [mount_pb2.Mount(type="overlay", source="overlay", options=["lowerdir=/a", "upperdir=/b"])]
    created = shim.call("Create", api.CreateTaskRequest(id="c1", bundle=str(bundle), stdout=stdout.path,
                                                        stderr=stderr.path, rootfs=rootfs))
    assert shim.backend.names() == ["start_zone", "create_container"]  # one zone per pod
    state = shim.call("State", api.StateRequest(id="c1"))
    assert state.status == Status.CREATED and state.stdout == stdout.path and state.bundle == str(bundle)
    started = shim.call("Start", api.StartRequest(id="c1"))
    assert started.pid == created.pid == shim.backend.zone.pid  # containerd sees the VMM's pid
    waited = shim.call("Wait", api.WaitRequest(id="c1"))
    assert waited.exit_status == 3
    assert stdout.wait_for(b"out\n") == b"out\n" and stderr.wait_for(b"err\n") == b"err\n"
    state = shim.call("State", api.StateRequest(id="c1"))
    assert state.status == Status.STOPPED and state.exit_status == 3
    expect_error(shim, "Start", api.StartRequest(id="c1"), Code.FAILED_PRECONDITION, "stopped")
    shim.call("Delete", api.DeleteRequest(id="c1"))
    expect_error(shim, "State", api.StateRequest(id="c1"), Code.NOT_FOUND)
    shim.call("Shutdown", api.ShutdownRequest(id="pod1"))  # the sandbox is still there: the shim stays
    assert not shim.shutdown.wait(0.3)
    topics = shim.sink.topics()
    assert topics == ["/tasks/create", "/tasks/start", "/tasks/create", "/tasks/start", "/tasks/exit",
                      "/tasks/delete"]
    create_event = shim.sink.events[2][1]
    assert create_event.container_id == "c1" and create_event.io.stdout == stdout.path
    assert create_event.rootfs[0].options == ["lowerdir=/a", "upperdir=/b"]
    exit_event = shim.sink.wait_for("/tasks/exit")[0]
    assert (exit_event.container_id, exit_event.id, exit_event.exit_status) == ("c1", "c1", 3)
    assert exit_event.pid == started.pid


def test_output_to_a_file_uri(shim: ShimUnderTest, make_bundle, tmp_path: Path) -> None:
    bundle = make_bundle("solo", ["sh", "-c", "echo one; echo two >&2"])
    log = tmp_path / "logs" / "solo.log"
    shim.call("Create", api.CreateTaskRequest(id="solo", bundle=str(bundle), stdout=f"file://{log}",
                                              stderr=f"file://{log}"))
    assert shim.backend.names() == ["start_zone", "create_container"]  # no pod: a zone of its own
    shim.call("Start", api.StartRequest(id="solo"))
    assert shim.call("Wait", api.WaitRequest(id="solo")).exit_status == 0
    assert sorted(log.read_text().splitlines()) == ["one", "two"]


def test_stdin_reaches_the_process_and_its_eof_ends_it(shim: ShimUnderTest, make_bundle, tmp_path: Path) -> None:
    bundle = make_bundle("cat", ["cat"])
    stdin_path = tmp_path / "cat-stdin"
    os.mkfifo(stdin_path)
    stdout = FifoReader(tmp_path / "cat-stdout")
    shim.call("Create", api.CreateTaskRequest(id="cat", bundle=str(bundle), stdin=str(stdin_path),
                                              stdout=stdout.path))
    shim.call("Start", api.StartRequest(id="cat"))
    writer = os.open(stdin_path, os.O_WRONLY)
    os.write(writer, b"hello through the fifo\n")
    stdout.wait_for(b"hello through the fifo\n")
    os.close(writer)  # the client closes its end: EOF for cat
    assert shim.call("Wait", api.WaitRequest(id="cat")).exit_status == 0


def test_close_io_ends_stdin_while_the_client_holds_it(shim: ShimUnderTest, make_bundle, tmp_path: Path) -> None:
    bundle = make_bundle("cat2", ["cat"])
    stdin_path = tmp_path / "cat2-stdin"
    os.mkfifo(stdin_path)
    stdout = FifoReader(tmp_path / "cat2-stdout")
    shim.call("Create", api.CreateTaskRequest(id="cat2", bundle=str(bundle), stdin=str(stdin_path),
                                              stdout=stdout.path))
    shim.call("Start", api.StartRequest(id="cat2"))
    writer = os.open(stdin_path, os.O_WRONLY)
    try:
        os.write(writer, b"before close\n")
        stdout.wait_for(b"before close\n")
        shim.call("CloseIO", api.CloseIORequest(id="cat2", stdin=True))
        assert shim.call("Wait", api.WaitRequest(id="cat2")).exit_status == 0
    finally:
        os.close(writer)


def test_exec_with_terminal_and_resize(shim: ShimUnderTest, make_bundle, tmp_path: Path) -> None:
    bundle = make_bundle("app", ["sleep", "30"])
    shim.call("Create", api.CreateTaskRequest(id="app", bundle=str(bundle)))
    shim.call("Start", api.StartRequest(id="app"))
    out = FifoReader(tmp_path / "exec-out")
    shim.call("Exec", api.ExecProcessRequest(id="app", exec_id="e1", terminal=True, stdout=out.path,
                                             spec=exec_spec(["sh", "-c", "stty size; tty"], terminal=True)))
    shim.call("ResizePty", api.ResizePtyRequest(id="app", exec_id="e1", width=123, height=45))
    state = shim.call("State", api.StateRequest(id="app", exec_id="e1"))
    assert (state.id, state.exec_id, state.status, state.terminal) == ("e1", "e1", Status.CREATED, True)
    pid = shim.call("Start", api.StartRequest(id="app", exec_id="e1")).pid
    assert shim.call("Wait", api.WaitRequest(id="app", exec_id="e1")).exit_status == 0
    text = out.wait_for(b"/dev/pts/")
    assert b"45 123" in text
    expect_error(shim, "Exec", api.ExecProcessRequest(id="app", exec_id="e1", spec=exec_spec(["true"])),
                 Code.ALREADY_EXISTS)
    shim.call("Delete", api.DeleteRequest(id="app", exec_id="e1"))
    added = shim.sink.wait_for("/tasks/exec-added")[0]
    started = shim.sink.wait_for("/tasks/exec-started")[0]
    assert (added.exec_id, started.exec_id, started.pid) == ("e1", "e1", pid)
    exit_event = next(e for e in shim.sink.wait_for("/tasks/exit") if e.id == "e1")
    assert exit_event.container_id == "app"
    topics = shim.sink.topics()
    assert topics.index("/tasks/exec-started") < topics.index("/tasks/exit")
    assert topics.count("/tasks/delete") == 0  # deleting an exec publishes no TaskDelete (as runc's shim)
    shim.call("Kill", api.KillRequest(id="app", signal=signal.SIGTERM))
    assert shim.call("Wait", api.WaitRequest(id="app")).exit_status == 128 + signal.SIGTERM


def test_pause_resume_stats_update_pids(shim: ShimUnderTest, make_bundle) -> None:
    bundle = make_bundle("busy", ["sleep", "30"])
    shim.call("Create", api.CreateTaskRequest(id="busy", bundle=str(bundle)))
    expect_error(shim, "Pause", api.PauseRequest(id="busy"), Code.FAILED_PRECONDITION, "created")
    pid = shim.call("Start", api.StartRequest(id="busy")).pid
    assert [p.pid for p in shim.call("Pids", api.PidsRequest(id="busy")).processes] == [pid]
    shim.call("Pause", api.PauseRequest(id="busy"))
    assert shim.call("State", api.StateRequest(id="busy")).status == Status.PAUSED
    expect_error(shim, "Pause", api.PauseRequest(id="busy"), Code.FAILED_PRECONDITION, "paused")
    expect_error(shim, "Delete", api.DeleteRequest(id="busy"), Code.FAILED_PRECONDITION, "paused")
    shim.call("Resume", api.ResumeRequest(id="busy"))
    assert shim.call("State", api.StateRequest(id="busy")).status == Status.RUNNING
    expect_error(shim, "Resume", api.ResumeRequest(id="busy"), Code.FAILED_PRECONDITION, "running")
    stats = shim.call("Stats", api.StatsRequest(id="busy")).stats
    assert stats.type_url == "io.containerd.cgroups.v2.Metrics"
    metrics = cgroups_v2_pb2.Metrics.FromString(stats.value)
    assert metrics.memory.usage > 0 and metrics.pids.current == 1
    resources = {"memory": {"limit": 268435456}, "cpu": {"shares": 512}}
    shim.call("Update", api.UpdateTaskRequest(id="busy", annotations={"a": "b"}, resources=any_pb2.Any(
        type_url="types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
        value=json.dumps(resources).encode())))
    assert ("update", ("busy", resources, {"a": "b"})) in shim.backend.calls
    expect_error(shim, "Update", api.UpdateTaskRequest(id="busy", resources=any_pb2.Any(type_url="x")),
                 Code.INVALID_ARGUMENT, "expected an Any of type")
    shim.call("Kill", api.KillRequest(id="busy", signal=signal.SIGKILL))
    shim.call("Wait", api.WaitRequest(id="busy"))
    assert shim.sink.topics()[-3:] == ["/tasks/paused", "/tasks/resumed", "/tasks/exit"]
    expect_error(shim, "Update", api.UpdateTaskRequest(id="busy"), Code.FAILED_PRECONDITION, "stopped")


def test_errors_name_what_was_wrong(shim: ShimUnderTest, make_bundle, tmp_path: Path) -> None:
    expect_error(shim, "State", api.StateRequest(id="nope"), Code.NOT_FOUND, "'nope' not created")
    expect_error(shim, "Create", api.CreateTaskRequest(id="", bundle="/x"), Code.INVALID_ARGUMENT, "empty")
    expect_error(shim, "Create", api.CreateTaskRequest(id="a/b", bundle="/x"), Code.INVALID_ARGUMENT,
                 "not a valid identifier")
    expect_error(shim, "Create", api.CreateTaskRequest(id="x", bundle=str(tmp_path / "none")),
                 Code.INVALID_ARGUMENT, "cannot read config.json")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    expect_error(shim, "Create", api.CreateTaskRequest(id="x", bundle=str(broken)), Code.INVALID_ARGUMENT,
                 "not valid JSON")
    expect_error(shim, "Create", api.CreateTaskRequest(id="x", bundle=str(broken), checkpoint="/c"),
                 Code.UNIMPLEMENTED)
    expect_error(shim, "Checkpoint", api.CheckpointTaskRequest(id="x"), Code.UNIMPLEMENTED)
    bundle = make_bundle("ok", ["sleep", "30"])
    expect_error(shim, "Create", api.CreateTaskRequest(id="ok", bundle=str(bundle), stdout="binary:///no/logger"),
                 Code.INVALID_ARGUMENT, "cannot start logging binary /no/logger: No such file or directory")
    assert shim.backend.names()[-1] == "delete_container"  # nothing left behind in the zone
    expect_error(shim, "Create", api.CreateTaskRequest(id="ok", bundle=str(bundle), stdout="tcp://x"),
                 Code.INVALID_ARGUMENT, "unknown STDIO scheme")
    shim.call("Create", api.CreateTaskRequest(id="ok", bundle=str(bundle)))
    expect_error(shim, "Create", api.CreateTaskRequest(id="ok", bundle=str(bundle)), Code.ALREADY_EXISTS)
    expect_error(shim, "Exec", api.ExecProcessRequest(id="ok", exec_id="e", spec=any_pb2.Any(type_url="bad")),
                 Code.INVALID_ARGUMENT, "expected an Any of type")
    expect_error(shim, "Exec", api.ExecProcessRequest(id="ok", exec_id="e", spec=exec_spec([])),
                 Code.INVALID_ARGUMENT, "process.args")
    expect_error(shim, "State", api.StateRequest(id="ok", exec_id="zz"), Code.NOT_FOUND, "'zz'")
    expect_error(shim, "Kill", api.KillRequest(id="ok", signal=0), Code.INVALID_ARGUMENT, "signal 0")
    shim.call("Start", api.StartRequest(id="ok"))
    expect_error(shim, "Delete", api.DeleteRequest(id="ok"), Code.FAILED_PRECONDITION, "running")
    shim.backend.fail["signal"] = RuntimeError("link lost")
    expect_error(shim, "Kill", api.KillRequest(id="ok", signal=9), Code.INTERNAL,
                 "signal ok: RuntimeError: link lost")
    del shim.backend.fail["signal"]
    shim.call("Kill", api.KillRequest(id="ok", signal=9))
    shim.call("Wait", api.WaitRequest(id="ok"))
    shim.call("Delete", api.DeleteRequest(id="ok"))
    assert shim.call("Connect", api.ConnectRequest(id="ok")).shim_pid == os.getpid()


def test_zone_crash_reports_every_exit_and_refuses_new_work(shim: ShimUnderTest, make_bundle) -> None:
    create_sandbox(shim, make_bundle)
    shim.call("Start", api.StartRequest(id="pod1"))
    for name in ("a", "b"):
        shim.call("Create", api.CreateTaskRequest(id=name, bundle=str(make_bundle(name, ["sleep", "60"],
                                                                                  container_annotations("pod1")))))
        shim.call("Start", api.StartRequest(id=name))
    shim.backend.crash_zone()
    exits = {e.container_id: e.exit_status for e in shim.sink.wait_for("/tasks/exit", 3)}
    assert exits == {"pod1": 137, "a": 137, "b": 137}
    assert shim.call("Wait", api.WaitRequest(id="a")).exit_status == 137
    expect_error(shim, "Create", api.CreateTaskRequest(id="c", bundle=str(make_bundle("c", ["true"],
                 container_annotations("pod1")))), Code.UNAVAILABLE, "the VMM died")
    for name in ("a", "b", "pod1"):
        shim.call("Delete", api.DeleteRequest(id=name))
    shim.call("Shutdown", api.ShutdownRequest(id="pod1"))
    assert shim.shutdown.wait(5)


def test_wait_runs_beside_other_calls(shim: ShimUnderTest, make_bundle) -> None:
    shim.call("Create", api.CreateTaskRequest(id="w", bundle=str(make_bundle("w", ["sleep", "30"]))))
    shim.call("Start", api.StartRequest(id="w"))
    results: list[int] = []
    waiter = threading.Thread(target=lambda: results.append(shim.call("Wait", api.WaitRequest(id="w"),
                                                                      timeout=30).exit_status))
    waiter.start()
    time.sleep(0.2)
    for _ in range(5):
        assert shim.call("State", api.StateRequest(id="w")).status == Status.RUNNING
    shim.call("Kill", api.KillRequest(id="w", signal=signal.SIGTERM, all=True))
    waiter.join(10)
    assert results == [143]


def test_events_are_not_published_for_failed_calls(shim: ShimUnderTest, make_bundle) -> None:
    shim.backend.fail["create_container"] = RuntimeError("zone refused")
    expect_error(shim, "Create", api.CreateTaskRequest(id="f", bundle=str(make_bundle("f"))), Code.INTERNAL,
                 "create container f: RuntimeError: zone refused")
    assert shim.sink.topics() == []
    expect_error(shim, "State", api.StateRequest(id="f"), Code.NOT_FOUND)


def test_oom_event(shim: ShimUnderTest) -> None:
    shim.service.oom("c1")
    assert isinstance(shim.sink.wait_for("/tasks/oom")[0], events_pb2.TaskOOM)


def test_kill_before_start_ends_the_process(shim: ShimUnderTest, make_bundle) -> None:
    shim.call("Create", api.CreateTaskRequest(id="never", bundle=str(make_bundle("never", ["sleep", "30"]))))
    shim.call("Kill", api.KillRequest(id="never", signal=signal.SIGWINCH))  # ignored by default: still there
    assert shim.call("State", api.StateRequest(id="never")).status == Status.CREATED
    shim.call("Kill", api.KillRequest(id="never", signal=signal.SIGKILL))
    assert shim.call("Wait", api.WaitRequest(id="never")).exit_status == 137
    expect_error(shim, "Start", api.StartRequest(id="never"), Code.FAILED_PRECONDITION, "stopped")
    shim.call("Delete", api.DeleteRequest(id="never"))
    assert "start_container" not in shim.backend.names() and "delete_container" in shim.backend.names()
    assert shim.sink.topics() == ["/tasks/create", "/tasks/exit", "/tasks/delete"]


TASK_METHODS = [m.name for m in api.DESCRIPTOR.services_by_name["Task"].methods if m.name != "Shutdown"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(TASK_METHODS), payload=st.binary(max_size=200))
def test_fuzz_hostile_task_requests_get_answers(shim: ShimUnderTest, method: str, payload: bytes) -> None:
    """Any bytes as any Task call's payload: an answer (success or a status), promptly; the shim goes on."""
    from google.protobuf import empty_pb2

    try:
        shim.client.call("containerd.task.v2.Task", method, RawPayload(payload), empty_pb2.Empty, timeout=10)
    except RpcError as e:
        assert e.code != Code.DEADLINE_EXCEEDED, f"{method} hung on {payload!r}"
        assert e.code != Code.INTERNAL, f"{method} crashed on {payload!r}: {e.message}"
    assert shim.call("Connect", api.ConnectRequest()).shim_pid == os.getpid()


class RawPayload:
    """Stands in for a request message: serializes to the given bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data


def test_zone_dying_inside_a_call_does_not_deadlock(shim: ShimUnderTest, make_bundle) -> None:
    from shim.ttrpc import Unavailable

    shim.call("Create", api.CreateTaskRequest(id="d", bundle=str(make_bundle("d", ["sleep", "30"]))))

    def dies_while_starting(container_id: str) -> int:
        shim.backend.events.zone_stopped("the VMM died during start")  # reported from inside the call
        raise Unavailable("the zone is gone")

    shim.backend.start_container = dies_while_starting
    expect_error(shim, "Start", api.StartRequest(id="d"), Code.UNAVAILABLE, "the zone is gone")
    assert shim.call("Wait", api.WaitRequest(id="d")).exit_status == 137
    assert shim.sink.topics() == ["/tasks/create", "/tasks/exit"]




def test_logging_binary(shim: ShimUnderTest, make_bundle, tmp_path: Path) -> None:
    logger = tmp_path / "logger.sh"
    logger.write_text(LOGGER)
    logger.chmod(0o755)
    uri = f"binary://{logger}?dir={tmp_path}"
    bundle = make_bundle("logged", ["sh", "-c", "echo to-out; echo to-err >&2"])
    shim.call("Create", api.CreateTaskRequest(id="logged", bundle=str(bundle), stdout=uri, stderr=uri))
    shim.call("Start", api.StartRequest(id="logged"))
    assert shim.call("Wait", api.WaitRequest(id="logged")).exit_status == 0
    shim.call("Delete", api.DeleteRequest(id="logged"))
    out, err = tmp_path / "testns-logged.out", tmp_path / "testns-logged.err"
    deadline = time.monotonic() + 10
    while not (out.exists() and err.exists() and out.read_text() and err.read_text()) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    assert (out.read_text(), err.read_text()) == ("to-out\n", "to-err\n")
    expect_error(shim, "Create", api.CreateTaskRequest(id="nolog", bundle=str(make_bundle("nolog")),
                                                       stdout="binary:///does/not/exist"),
                 Code.INVALID_ARGUMENT, "cannot start logging binary /does/not/exist")
