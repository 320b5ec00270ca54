import json
import os
import signal
import subprocess
import sys

import pytest

from styrolite.exitstatus import exit_code_of
from zoneinit.console import ConsoleLog
from zoneinit.supervisor.loop import Supervisor

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs in its own process: it makes itself a child subreaper (as PID 1 effectively is), forks children
# and a daemonizing child whose grandchild is orphaned to us, and reports every reaped exit.
REAPER = r"""
import json, os, signal, sys, time
import prctl
from styrolite.exitstatus import exit_code_of
from zoneinit.supervisor.loop import Supervisor

prctl.set_child_subreaper(1)
sup = Supervisor()
sup.install_signals()
exits = {}
sup.on_child_exit.append(lambda pid, status: exits.__setitem__(pid, exit_code_of(status)))
term = []
sup.add_signal_handler(signal.SIGTERM, lambda s: term.append(s))

def spawn(body):
    pid = os.fork()
    if pid == 0:
        try:
            body()
        finally:
            os._exit(99)
    return pid

seven = spawn(lambda: os._exit(7))
killed = spawn(lambda: (os.kill(os.getpid(), signal.SIGKILL)))
r, w = os.pipe()          # releases the grandchild
pid_r, pid_w = os.pipe()  # tells us the grandchild's pid
def daemonize():
    grandchild = os.fork()
    if grandchild == 0:
        os.read(r, 1)  # wait until our parent is gone, so we are reparented to the subreaper
        os._exit(3)
    os.write(pid_w, str(grandchild).encode().ljust(16))
    os._exit(0)
parent = spawn(daemonize)
orphan = int(os.read(pid_r, 16).decode())
os.kill(os.getpid(), signal.SIGTERM)
deadline = time.monotonic() + 20
sup.run(until=lambda: (parent in exits and (os.write(w, b"x") or True) and orphan in exits
                       and seven in exits and killed in exits and term) or time.monotonic() > deadline,
        timeout=0.2)
print(json.dumps({"exits": {str(k): v for k, v in exits.items()}, "seven": seven, "killed": killed,
                  "parent": parent, "orphan": orphan, "term": term}))
"""


def test_reaper_collects_children_signal_deaths_and_orphans():
    out = subprocess.run([sys.executable, "-c", REAPER], check=True, capture_output=True, text=True, cwd=REPO,
                         timeout=60)
    result = json.loads(out.stdout)
    exits = {int(k): v for k, v in result["exits"].items()}
    assert exits[result["seven"]] == 7
    assert exits[result["killed"]] == 128 + signal.SIGKILL
    assert exits[result["parent"]] == 0
    assert exits[result["orphan"]] == 3  # reparented to the subreaper and reaped by waitpid(-1)
    assert result["term"] == [signal.SIGTERM]


def test_exit_code_of():
    assert exit_code_of(7 << 8) == 7
    assert exit_code_of(signal.SIGKILL) == 137
    assert exit_code_of(signal.SIGTERM | 0x80) == 143  # core dumped flag


class RecordingLog(ConsoleLog):
    def __init__(self):
        super().__init__(fd=-1)
        self.errors = []

    def error(self, message, error=None):
        self.errors.append((message, error))


def test_a_failing_callback_is_logged_and_the_loop_goes_on():
    log = RecordingLog()
    sup = Supervisor(log)
    calls = []

    def boom():
        raise RuntimeError("boom")

    sup.call_later(0, boom)
    sup.call_later(0, lambda: calls.append("after"))
    cancelled = sup.call_later(0, lambda: calls.append("cancelled"))
    sup.cancel(cancelled)
    sup.run_once(0)
    assert calls == ["after"]
    assert log.errors[0][0] == "unexpected error in timer"
    assert isinstance(log.errors[0][1], RuntimeError)


def test_readers_and_writers_on_one_fd():
    sup = Supervisor(RecordingLog())
    a, b = __import__("socket").socketpair()
    got = []
    sup.add_reader(a.fileno(), lambda fd: got.append(("r", os.read(fd, 10))))
    sup.add_writer(a.fileno(), lambda fd: (got.append(("w", fd)), sup.remove_writer(fd)))
    b.send(b"hi")
    sup.run_once(1)
    assert ("r", b"hi") in got and ("w", a.fileno()) in got
    sup.run_once(0)
    assert len(got) == 2
    sup.remove_reader(a.fileno())
    with pytest.raises(KeyError):
        sup.selector.get_key(a.fileno())
    a.close()
    b.close()


def test_timed_services_run_when_due_without_fd_activity():
    sup = Supervisor(RecordingLog())
    due = [0.0]
    ran = []
    sup.timed_services.append((lambda: due[0], lambda: (ran.append(1), due.__setitem__(0, None))))
    sup.run_once(5)  # returns at once: the service is due now
    assert ran == [1]
    sup.run_once(0)
    assert ran == [1]  # no longer due
