"""The library path the zone's PID 1 uses: create/start/exec/signal/stats/delete from one warm process.

The scenario runs in a child Python process because the runtime makes its caller a child subreaper,
which must not leak into pytest itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCENARIO = textwrap.dedent("""
    import json, os, signal, sys
    from styrolite.api import Pipes, Runtime, exit_code_of
    from styrolite.spec.parse import parse_process

    rt = Runtime(sys.argv[1])
    pipes = Pipes.open()
    c = rt.create("lib1", sys.argv[2], stdio=pipes.child)
    pipes.close_child_ends()
    result = {"state_after_create": rt.state("lib1")["status"]}
    rt.start("lib1")
    result["state_after_start"] = rt.state("lib1")["status"]

    exec_pipes = Pipes.open()
    process = parse_process({"args": ["sh", "-c", "echo exec-out; exit 5"], "cwd": "/",
                             "env": ["PATH=/bin"]})
    executed = rt.exec("lib1", process, stdio=exec_pipes.child)
    exec_pipes.close_child_ends()
    result["exec_out"] = os.read(exec_pipes.stdout, 100).decode()
    _, status = os.waitpid(executed.pid, 0)        # the caller reaps, as PID 1 does
    result["exec_code"] = exit_code_of(status)
    result["exec_owner"] = rt.child_exited(executed.pid, status)

    tty_process = parse_process({"args": ["stty", "size"], "cwd": "/", "env": ["PATH=/bin"], "terminal": True,
                                 "consoleSize": {"height": 33, "width": 101}})
    executed = rt.exec("lib1", tty_process, terminal=True)
    tty_out = b""
    while True:
        try:
            chunk = os.read(executed.console_fd, 100)
        except OSError:   # EIO: the process side is closed
            break
        if not chunk:
            break
        tty_out += chunk
    rt.child_exited(executed.pid, os.waitpid(executed.pid, 0)[1])
    result["exec_tty_size"] = tty_out.decode().strip()
    result["cgroup_directory"] = rt.cgroup_directory("lib1") is None or os.path.isdir(rt.cgroup_directory("lib1"))

    result["stats_pids"] = rt.stats("lib1")["pids"]["current"]
    os.write(pipes.stdin, b"ping\\n")
    os.close(pipes.stdin)
    result["init_out"] = os.read(pipes.stdout, 100).decode()
    rt.signal("lib1", signal.SIGKILL)
    pid, status = os.waitpid(c.state.pid, 0)
    result["owner"] = rt.child_exited(pid, status)
    result["exit_code"] = rt.exit_code("lib1")
    result["state_after_exit"] = rt.state("lib1")["status"]
    rt.delete("lib1")
    result["listed_after_delete"] = rt.list()
    print(json.dumps(result))
""")


@pytest.mark.root
def test_library_lifecycle_from_a_warm_process(make_bundle, state_root):
    bundle = make_bundle(["sh", "-c", "read line; echo got-$line; sleep 100"])
    done = subprocess.run([sys.executable, "-c", SCENARIO, str(state_root), str(bundle)], capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)
    assert result == {
        "state_after_create": "created",
        "state_after_start": "running",
        "exec_out": "exec-out\n",
        "exec_code": 5,
        "exec_owner": "lib1/exec",
        "exec_tty_size": "33 101",   # exec's consoleSize is on the pty before the process runs
        "cgroup_directory": True,
        "stats_pids": result["stats_pids"],
        "init_out": "got-ping\n",
        "owner": "lib1",
        "exit_code": 137,
        "state_after_exit": "stopped",
        "listed_after_delete": [],
    }
    assert result["stats_pids"] >= 1
