"""The OCI lifecycle through the styrolite CLI, as runc/crun users drive it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import err, out, state_of


@pytest.mark.root
def test_run_prints_output_and_returns_exit_code(make_bundle, styrolite):
    bundle = make_bundle(["sh", "-c", "echo hello; exit 7"])
    result = styrolite("run", "--bundle", str(bundle), "c1")
    assert result.returncode == 7, err(result)
    assert out(result) == "hello\n"


@pytest.mark.root
def test_signal_death_is_128_plus_signo(make_bundle, styrolite, state_root):
    # pid 1 of a pid namespace ignores its own SIGKILL, so the signal comes from outside, as in real life
    bundle = make_bundle(["sleep", "100"])
    run = subprocess.Popen([sys.executable, "-m", "styrolite.cli", "--root", str(state_root), "run", "-b",
                            str(bundle), "c1"], stderr=subprocess.PIPE)
    deadline = time.time() + 10
    while time.time() < deadline:
        if styrolite("state", "c1").returncode == 0 and state_of(styrolite, "c1")["status"] == "running":
            break
        time.sleep(0.05)
    styrolite("kill", "c1", "SIGKILL", check=True)
    assert run.wait(timeout=10) == 137, run.stderr.read()


@pytest.mark.root
def test_create_start_state_kill_delete(make_bundle, styrolite, state_root):
    bundle = make_bundle(["sleep", "100"], edit=lambda c: c.setdefault("annotations", {}).update({"a": "b"}))
    pid_file = bundle / "pid"
    styrolite("create", "--bundle", str(bundle), "--pid-file", str(pid_file), "c1", check=True)
    st = state_of(styrolite, "c1")
    assert st["status"] == "created" and st["id"] == "c1" and st["ociVersion"].startswith("1.")
    assert st["bundle"] == str(bundle) and st["annotations"] == {"a": "b"}
    assert int(pid_file.read_text()) == st["pid"]
    # created: the process is our init waiting, not the user's program yet
    assert "sleep" not in Path(f"/proc/{st['pid']}/cmdline").read_text()

    styrolite("start", "c1", check=True)
    assert state_of(styrolite, "c1")["status"] == "running"
    deadline = time.time() + 5
    while "sleep" not in Path(f"/proc/{st['pid']}/cmdline").read_text() and time.time() < deadline:
        time.sleep(0.02)
    assert "sleep" in Path(f"/proc/{st['pid']}/cmdline").read_text()

    refused = styrolite("delete", "c1")
    assert refused.returncode != 0 and "running" in err(refused)
    styrolite("kill", "c1", "KILL", check=True)
    deadline = time.time() + 5
    while state_of(styrolite, "c1")["status"] != "stopped" and time.time() < deadline:
        time.sleep(0.02)
    assert state_of(styrolite, "c1")["status"] == "stopped"
    assert "pid" not in state_of(styrolite, "c1")
    styrolite("delete", "c1", check=True)
    assert not (state_root / "c1").exists()
    gone = styrolite("state", "c1")
    assert gone.returncode != 0 and "does not exist" in err(gone)


@pytest.mark.root
def test_delete_force_kills_running_container(make_bundle, styrolite):
    bundle = make_bundle(["sleep", "100"])
    styrolite("run", "-d", "-b", str(bundle), "c1", check=True)
    pid = state_of(styrolite, "c1")["pid"]
    styrolite("delete", "--force", "c1", check=True)
    assert not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]


@pytest.mark.root
def test_kill_by_name_number_and_all(make_bundle, styrolite):
    bundle = make_bundle(["sh", "-c", "trap 'exit 3' TERM; while true; do sleep 0.05; done"])
    styrolite("run", "-d", "-b", str(bundle), "c1", check=True)
    assert styrolite("kill", "c1", "NOPE").returncode != 0
    styrolite("kill", "c1", "15", check=True)
    deadline = time.time() + 5
    while state_of(styrolite, "c1")["status"] != "stopped" and time.time() < deadline:
        time.sleep(0.02)
    assert state_of(styrolite, "c1")["status"] == "stopped"
    bundle2 = make_bundle(["sh", "-c", "sleep 100 & sleep 100"])
    styrolite("run", "-d", "-b", str(bundle2), "c2", check=True)
    time.sleep(0.2)
    pids = json.loads(out(styrolite("ps", "--format", "json", "c2", check=True)))
    assert len(pids) >= 2
    styrolite("kill", "--all", "c2", "KILL", check=True)
    deadline = time.time() + 5
    while state_of(styrolite, "c2")["status"] != "stopped" and time.time() < deadline:
        time.sleep(0.02)
    assert state_of(styrolite, "c2")["status"] == "stopped"


@pytest.mark.root
def test_list_and_ps(make_bundle, styrolite):
    bundle = make_bundle(["sleep", "100"])
    styrolite("run", "-d", "-b", str(bundle), "c1", check=True)
    rows = json.loads(out(styrolite("list", "--format", "json", check=True)))
    assert [r["id"] for r in rows] == ["c1"] and rows[0]["status"] == "running"
    assert out(styrolite("list", "-q", check=True)).split() == ["c1"]
    table = out(styrolite("ps", "c1", check=True))
    assert "sleep 100" in table


@pytest.mark.root
def test_pause_and_resume_freeze_the_processes(make_bundle, styrolite):
    bundle = make_bundle(["sleep", "100"])
    styrolite("run", "-d", "-b", str(bundle), "c1", check=True)
    pid = state_of(styrolite, "c1")["pid"]
    styrolite("pause", "c1", check=True)
    assert state_of(styrolite, "c1")["status"] == "paused"
    assert styrolite("pause", "c1").returncode != 0
    styrolite("resume", "c1", check=True)
    assert state_of(styrolite, "c1")["status"] == "running"
    assert os.path.exists(f"/proc/{pid}")


@pytest.mark.root
def test_exec_into_running_container(make_bundle, styrolite):
    bundle = make_bundle(["sleep", "100"])
    styrolite("run", "-d", "-b", str(bundle), "c1", check=True)
    result = styrolite("exec", "--env", "GREETING=hi", "--cwd", "/tmp", "--user", "65534:65534", "c1",
                       "sh", "-c", "echo $GREETING $(pwd) $(id -u):$(id -g); cat; exit 4", input=b"from stdin\n")
    assert result.returncode == 4, err(result)
    assert out(result) == "hi /tmp 65534:65534\nfrom stdin\n"
    # exec joins the container's namespaces: same pid namespace as the init
    pid = state_of(styrolite, "c1")["pid"]
    inside = out(styrolite("exec", "c1", "readlink", "/proc/self/ns/pid", check=True)).strip()
    assert inside == os.readlink(f"/proc/{pid}/ns/pid")
    missing = styrolite("exec", "c1", "no-such-binary")
    assert missing.returncode != 0 and "no-such-binary" in err(missing)


@pytest.mark.root
def test_a_container_joins_another_ones_pid_namespace_by_path(make_bundle, styrolite):
    """runc's semantics for a pid namespace path (docker's --pid=container:, CRI's POD and TARGET modes):
    setns, then the container's init is forked into it; it sees the other's processes, and the other's init
    stays pid 1 there."""
    styrolite("run", "-d", "-b", str(make_bundle(["sleep", "4242"])), "c1", check=True)
    pid = state_of(styrolite, "c1")["pid"]

    def join(config: dict) -> None:
        config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "pid"] + [
            {"type": "pid", "path": f"/proc/{pid}/ns/pid"}]

    bundle = make_bundle(["sh", "-c", "readlink /proc/self/ns/pid; cat /proc/1/cmdline | tr '\\0' ' '; echo; "
                          "ps -o pid,args"], edit=join)
    result = styrolite("run", "-b", str(bundle), "c2")
    assert result.returncode == 0, err(result)
    lines = out(result).splitlines()
    assert lines[0] == os.readlink(f"/proc/{pid}/ns/pid")
    assert lines[1].strip() == "sleep 4242"
    assert any(line.split(None, 1) == ["1", "sleep 4242"] for line in lines[2:]), lines


@pytest.mark.root
def test_exec_with_process_json(make_bundle, styrolite, tmp_path):
    bundle = make_bundle(["sleep", "100"])
    styrolite("run", "-d", "-b", str(bundle), "c1", check=True)
    process = {"args": ["sh", "-c", "echo $X; umask"], "cwd": "/", "env": ["X=from-json"],
               "user": {"uid": 0, "gid": 0, "umask": 63}}
    (tmp_path / "p.json").write_text(json.dumps(process))
    result = styrolite("exec", "--process", str(tmp_path / "p.json"), "c1", check=True)
    assert out(result) == "from-json\n0077\n"


@pytest.mark.root
def test_update_changes_limits(make_bundle, styrolite):
    bundle = make_bundle(["sleep", "100"])
    styrolite("run", "-d", "-b", str(bundle), "c1", check=True)
    styrolite("update", "--pids-limit", "42", "c1", check=True)
    pids_max = out(styrolite("exec", "c1", "cat", "/sys/fs/cgroup/pids/pids.max")).strip()
    stats = json.loads(out(styrolite("events", "--stats", "c1", check=True)))
    assert stats["data"]["pids"]["limit"] == 42 or pids_max == "42"


def test_features_version_and_spec(styrolite, tmp_path):
    features = json.loads(out(styrolite("features", check=True)))
    assert features["ociVersionMin"].startswith("1.0") and "linux" in features
    version = out(styrolite("--version", check=True))
    assert "styrolite version" in version and "spec: 1.3" in version
    styrolite("spec", "--bundle", str(tmp_path), check=True)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["process"]["args"] == ["sh"]
    again = styrolite("spec", "--bundle", str(tmp_path))
    assert again.returncode != 0 and "already exists" in err(again)
