import contextlib
import os
import signal

import pytest
from zoneinit_harness import Harness, RemoteError

from idm import messages as m


@pytest.fixture
def zone(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    for pid in harness.runtime.pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    harness.pump(lambda: not harness.containers.running())
    harness.close()


def _create(zone, cid, args, **extra):
    return zone.call("container.create", {"id": cid, "image": "root0", "args": args, "start": True, **extra})


def test_hello_ping_info(zone):
    hello = zone.event("zone.hello")
    assert hello.payload["zone"] == "test" and hello.payload["protocol"] == 1
    assert zone.call("ping", {"x": 1})["pong"] is True
    assert zone.call("zone.info") == {"zone": "test", "ready": True}


def test_container_exit_code_logs_and_event(zone):
    zone.call("hello", {"events": True})
    summary = _create(zone, "job", ["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert summary["id"] == "job" and summary["status"] == "running"
    assert zone.call("container.wait", {"id": "job"})["exit_code"] == 7
    event = zone.event("container.exit")
    assert event.payload == {"id": "job", "exit_code": 7, "main": False}
    logs = zone.call("container.logs", {"id": "job"})
    assert b"out\n" in logs["data"] and b"err\n" in logs["data"]
    listed = zone.call("container.list")["containers"]
    assert [(c["id"], c["status"], c["exit_code"]) for c in listed] == [("job", "stopped", 7)]
    assert zone.call("container.delete", {"id": "job"})["deleted"] is True
    assert zone.call("container.list")["containers"] == []


def test_signal_death_is_128_plus_signo(zone):
    _create(zone, "sleeper", ["sleep", "100"])
    wait_id = zone.request("container.wait", {"id": "sleeper"})
    zone.call("container.signal", {"id": "sleeper", "signal": "KILL"})
    assert zone.reply_to(wait_id)["exit_code"] == 137
    assert ("signal", "sleeper", signal.SIGKILL, False) in zone.runtime.calls


def test_errors_are_typed_replies(zone):
    with pytest.raises(RemoteError) as e:
        zone.call("container.start", {"id": "ghost"})
    assert e.value.code == "not-found"
    with pytest.raises(RemoteError) as e:
        zone.call("container.signal", {"id": "x", "signal": "NOPE"})
    assert e.value.code in ("invalid-argument", "not-found")
    _create(zone, "done", ["true"])
    zone.call("container.wait", {"id": "done"})
    with pytest.raises(RemoteError) as e:
        zone.call("exec", {"id": "done", "args": ["true"]})
    assert e.value.code == "invalid-argument"


def test_exec_stdin_stdout_round_trip_and_exit_code(zone):
    _create(zone, "box", ["sleep", "100"])
    reply = zone.call("exec", {"id": "box", "args": ["sh", "-c", "cat; echo bye >&2; exit 3"]})
    sid = reply["stream"]
    assert reply["pid"] > 0 and reply["tty"] is False
    zone.send(m.Message(m.DATA, sid, payload=b"hello through stdin\n", channel="stdin"))
    zone.send(m.Message(m.CLOSE, sid, channel="stdin"))
    data, result = zone.stream_until_close(sid)
    assert data["stdout"] == b"hello through stdin\n"
    assert data["stderr"] == b"bye\n"
    assert result == {"exit_code": 3}


def test_exec_defaults_to_the_main_container_and_takes_uid_gid(zone):
    _create(zone, "main", ["sleep", "100"], main=True)
    reply = zone.call("exec", {"command": ["sh", "-c", "exit 0"], "user": "0:0"})
    _data, result = zone.stream_until_close(reply["stream"])
    assert reply["id"] == "main" and result == {"exit_code": 0}


def test_exec_with_a_tty_and_resize(zone):
    _create(zone, "box", ["sleep", "100"])
    reply = zone.call("exec", {"id": "box", "args": ["sh", "-c", "read x; stty size; exit 5"], "tty": True,
                               "rows": 30, "cols": 100})
    sid = reply["stream"]
    zone.call("exec.resize", {"stream": sid, "rows": 40, "cols": 120})
    zone.send(m.Message(m.DATA, sid, payload=b"go\n", channel="stdin"))
    data, result = zone.stream_until_close(sid)
    assert b"40 120" in data["stdout"]
    assert set(data) == {"stdout"}
    assert result["exit_code"] == 5


def test_exec_output_respects_credit(zone):
    _create(zone, "box", ["sleep", "100"])
    size = 600_000
    reply = zone.call("exec", {"id": "box", "args": ["head", "-c", str(size), "/dev/zero"], "window": 65536})
    sid = reply["stream"]
    # without credit the zone stops at one window
    zone.pump(lambda: sum(len(x.payload) for x in zone.inbox if x.kind == m.DATA and x.id == sid) >= 65536)
    for _ in range(20):
        zone.pump_once()
    assert sum(len(x.payload) for x in zone.inbox if x.kind == m.DATA and x.id == sid) == 65536
    data, result = zone.stream_until_close(sid)
    assert len(data["stdout"]) == size and result == {"exit_code": 0}


def test_follow_logs_until_exit(zone):
    _create(zone, "talker", ["sh", "-c", "echo one; read x; echo two; exit 4"], stdin=True)
    zone.pump(lambda: zone.containers.get("talker").output.total >= 4)
    reply = zone.call("container.logs", {"id": "talker", "follow": True})
    zone.containers.get("talker").stdin.write(b"\n")  # its stdin: true pipe
    data, result = zone.stream_until_close(reply["stream"])
    assert data["stdout"] == b"one\ntwo\n"
    assert result["exit_code"] == 4


def test_metrics_and_shutdown(zone):
    _create(zone, "box", ["sleep", "100"])
    metrics = zone.call("zone.metrics")
    assert metrics["memory"]["MemTotal"] > 0 and "idle" in metrics["cpu"]["ticks"] and "1m" in metrics["load"]
    assert metrics["init_memory"]["rss"] > 0
    mappings = metrics["init_mappings"]   # the agent's own smaps, largest first
    assert mappings and all(row["rss"] >= row["anon"] >= 0 for row in mappings)
    assert [row["rss"] for row in mappings] == sorted((row["rss"] for row in mappings), reverse=True)
    assert metrics["containers"]["box"]["pids"] == {"current": 1}
    assert zone.call("zone.shutdown", {"reason": "test"}) == {"accepted": True, "action": "poweroff"}
    zone.pump(lambda: zone.shutdowns)
    assert zone.shutdowns == [("poweroff", "test")]
    zone.call("container.signal", {"id": "box", "signal": 9})


def test_create_reads_the_definition_with_the_zone_config_parser(zone):
    """container.create and the config disk share one parser: the same bad input, the same error."""
    bad = [({"container": {"name": "x", "image": "root0", "args": []}}, "$.container.args: empty"),
           ({"id": "x", "image": "root0", "args": ["true"], "limits": {"memory": "1G"}},
            "$.container.limits.memory: expected an integer"),
           ({"id": "x", "image": "root0", "args": ["true"], "surprise": 1}, "$.container.surprise: unknown field"),
           ({"id": "x", "args": ["true"]}, "$.container.image: missing"),
           ("not a map", "must be a map")]
    for payload, message in bad:
        with pytest.raises(RemoteError) as e:
            zone.call("container.create", payload)
        assert e.value.code == "invalid-argument" and message in str(e.value), (payload, str(e.value))
    summary = zone.call("container.create", {"container": {
        "name": "named", "image": "root0", "args": ["sleep", "100"], "hostname": "box",
        "annotations": {"org.example/a": "b"}, "readonly_root": True}})
    assert summary["id"] == "named" and summary["status"] == "created"
    config = zone.bundles["named"]
    assert config["hostname"] == "box" and config["root"]["readonly"] is True
    assert config["annotations"]["org.example/a"] == "b"
    zone.call("container.delete", {"id": "named", "force": True})
