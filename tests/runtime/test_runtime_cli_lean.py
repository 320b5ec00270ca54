"""The per-container CLI calls stay lean and keep their contracts: log formats, records of older versions."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import err, state_of

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("argparse", "dataclasses", "typing", "re", "json", "logging", "inspect", "socket", "subprocess", "enum",
         "contextlib", "shutil", "_cffi_backend")


def imported_by(state_root: Path, *args: str) -> tuple[int, set[str]]:
    """Run one CLI call in a fresh interpreter (no site, as the launcher runs it); the heavy modules it loaded."""
    code = ("import sys\nfrom styrolite.cli import main\ncode = main(sys.argv[1:])\n"
            f"sys.stderr.write('LOADED ' + ' '.join(m for m in {HEAVY!r} if m in sys.modules) + '\\n')\n"
            "sys.exit(code)\n")
    third_party = {os.path.dirname(importlib.util.find_spec(name).origin) for name in ("_cffi_backend", "prctl")}
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), *third_party]), "PATH": os.environ.get("PATH", "")}
    result = subprocess.run([sys.executable, "-S", "-c", code, "--root", str(state_root), *args],
                            capture_output=True, text=True, env=env, timeout=60)
    loaded = re.search(r"LOADED ?(.*)", result.stderr)
    assert loaded, result.stderr
    return result.returncode, set(loaded.group(1).split())


def test_state_start_kill_delete_import_none_of_the_heavy_modules(make_bundle, styrolite, state_root):
    bundle = make_bundle(["sleep", "100"])
    styrolite("create", "-b", str(bundle), "c1", check=True)
    pid = state_of(styrolite, "c1")["pid"]
    for call in (("state", "c1"), ("start", "c1"), ("kill", "c1", "KILL")):
        code, loaded = imported_by(state_root, *call)
        assert code == 0 and not loaded, (call, loaded)
    _wait_gone(pid)
    code, loaded = imported_by(state_root, "delete", "c1")
    assert code == 0 and not loaded, loaded
    assert not (state_root / "c1").exists()


def test_a_record_written_by_an_older_styrolite_still_works(make_bundle, styrolite, state_root):
    """state.json without the recorded cgroup, hook phases and mount namespace: the calls work them out."""
    bundle = make_bundle(["sleep", "100"])
    styrolite("create", "-b", str(bundle), "c1", check=True)
    path = state_root / "c1" / "state.json"
    record = json.loads(path.read_text())
    directories = list(record["cgroup"]["directories"].values())
    assert all(os.path.isdir(d) for d in directories)
    for key in ("cgroup", "hooks", "own_mount_namespace"):
        del record[key]
    path.write_text(json.dumps(record))
    styrolite("start", "c1", check=True)
    assert state_of(styrolite, "c1")["status"] == "running"
    styrolite("delete", "--force", "c1", check=True)
    assert not (state_root / "c1").exists()
    assert not any(os.path.isdir(d) for d in directories)


def test_log_formats(styrolite, tmp_path):
    text_log, json_log = tmp_path / "log.txt", tmp_path / "log.json"
    failed = styrolite("--log", str(text_log), "start", "nosuch")
    assert failed.returncode == 1 and err(failed) == "styrolite: container 'nosuch' does not exist\n"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR container 'nosuch' does not exist\n",
                        text_log.read_text())
    failed = styrolite("--log", str(json_log), "--log-format", "json", "start", "nosuch")
    assert failed.returncode == 1
    for line in (err(failed), json_log.read_text()):
        record = json.loads(line)
        assert record["level"] == "error" and record["msg"] == "container 'nosuch' does not exist"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["time"])


def test_the_log_file_exists_after_a_quiet_call(styrolite, tmp_path):
    """containerd's shim reads the log file after a failure; runc creates it at every call."""
    log = tmp_path / "log.json"
    styrolite("--log", str(log), "--log-format", "json", "delete", "--force", "nosuch", check=True)
    assert log.exists() and log.read_text() == ""


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.01)
    state = Path(f"/proc/{pid}/stat")
    assert not state.exists() or state.read_text().split(") ")[1].startswith("Z")
