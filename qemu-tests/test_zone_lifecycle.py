"""Real zones under QEMU, driven through the zonehost CLI: boot, run, exit codes, exec, shutdown."""

from __future__ import annotations

import json
import os
import pty
import select
import time

import pytest

# a container init that leaves on SIGTERM (a pid-namespace init ignores it unless it has a handler)
LONG_RUNNING = ["sh", "-c", "trap 'exit 0' TERM; echo started; while true; do sleep 1; done"]


def describe(host, name: str, result) -> str:
    return f"rc={result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}\nconsole:\n" \
           f"{host.console(name)[-4000:]}"


@pytest.fixture(scope="module")
def running_zone(zonehost):
    """One detached zone (busybox, a long-running main container) shared by the read-only checks."""
    name = "lifecycle"
    result = zonehost.run("--json", "-d", "--name", name, "busybox", "--", *LONG_RUNNING)
    assert result.returncode == 0, describe(zonehost, name, result)
    yield name, json.loads(result.stdout)
    zonehost("rm", "-f", name, timeout=120)


def test_boot_emits_ready_event_with_phase_timings(running_zone):
    _name, ready = running_zone
    boot = ready["ready"]
    assert boot["clock"] == "boottime"
    phases = {p["name"]: p for p in boot["phases"]}
    for phase in ("addons", "config", "containers", "ready"):
        assert phase in phases, sorted(phases)
    assert all(p["start"] >= 0 for p in boot["phases"])
    assert phases["ready"]["start"] >= phases["containers"]["start"]
    for phase in ("addons", "config", "containers"):
        assert "error" not in phases[phase], boot


def test_ps_shows_the_zone_and_its_container(zonehost, running_zone):
    name, _ = running_zone
    result = zonehost("--json", "ps")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows[name]["status"] == "running"
    assert [c.get("id") for c in rows[name]["containers"]] == ["main"]


def test_logs_returns_the_container_output(zonehost, running_zone):
    name, _ = running_zone
    result = zonehost("logs", name)
    assert result.returncode == 0 and "started" in result.stdout, result


def test_exec_round_trips_stdin_to_stdout(zonehost, running_zone):
    name, _ = running_zone
    result = zonehost("exec", "-i", name, "sh", "-c", "tr a-z A-Z; echo err >&2; exit 3",
                      input="ping from the host\n", timeout=120)
    assert result.returncode == 3, result
    assert result.stdout == "PING FROM THE HOST\n"
    assert result.stderr == "err\n"


def test_exec_with_a_tty(zonehost, running_zone):
    name, _ = running_zone
    result = zonehost("exec", "-t", name, "sh", "-c", "tty; test -t 1 && echo is-a-tty", timeout=120)
    assert result.returncode == 0, result
    assert "/dev/pts/" in result.stdout and "is-a-tty" in result.stdout


def _read_until(master: int, output: bytearray, needle: bytes, proc, timeout: float = 60, since: int = 0) -> bool:
    deadline = time.monotonic() + timeout
    while needle not in output[since:] and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:   # EIO: the CLI exited and closed the terminal
                return needle in output[since:]
            if not chunk:
                break
            output += chunk
        elif proc.poll() is not None:
            break
    return needle in output[since:]


def test_interactive_tty_exec_from_a_terminal(zonehost, running_zone):
    """`exec -it` from a real terminal (a pty here): raw mode, keystrokes to the zone's pty, its exit code.
    Input is typed after each prompt, as a person would (a shell may flush input typed ahead of its prompt)."""
    name, _ = running_zone
    master, slave = pty.openpty()
    proc = zonehost.spawn("exec", "-i", "-t", name, "sh", stdin=slave, stdout=slave, stderr=slave,
                          start_new_session=True)
    os.close(slave)
    output = bytearray()
    try:
        assert _read_until(master, output, b"# ", proc), output.decode(errors="replace")
        os.write(master, b"echo $((6*7)) $(tty)\r")
        assert _read_until(master, output, b"42 /dev/pts/", proc), output.decode(errors="replace")
        answered = output.index(b"42 /dev/pts/")
        assert _read_until(master, output, b"# ", proc, since=answered), output.decode(errors="replace")
        os.write(master, b"exit 5\r")
        assert proc.wait(60) == 5, output.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


def test_container_exit_code_is_the_cli_exit_code(zonehost):
    """Also the --no-userns opt-out: an unshifted image, and the container's ids are the zone's."""
    result = zonehost.run("--rm", "--timing", "--no-userns", "--name", "exit7", "busybox", "--",
                          "sh", "-c", "cat /proc/self/uid_map; stat -c %u /bin/busybox; "
                                      "echo hello from the zone; exit 7")
    assert result.returncode == 7, describe(zonehost, "exit7", result)
    map_line, owner, hello = result.stdout.splitlines()
    assert map_line.split() == ["0", "0", "4294967295"] and owner == "0"
    assert hello == "hello from the zone"
    assert "zone ready at" in result.stderr
    assert not (zonehost.state / "exit7").exists()   # --rm


def test_sigkill_death_is_137(zonehost):
    """A container init cannot SIGKILL itself (pid-namespace init protection), so the kill comes from the
    host: `zonehost kill` -> IDM container.signal -> the foreground `zonehost run` exits 128+9."""
    name = "killed"
    runner = zonehost.spawn_run("--name", name, "busybox", "--", "sh", "-c", "echo waiting; exec sleep 100000")
    try:
        deadline = time.monotonic() + zonehost.boot_timeout
        while time.monotonic() < deadline and runner.poll() is None:
            rows = json.loads(zonehost("--json", "ps").stdout or "[]")
            row = next((r for r in rows if r["name"] == name), None)
            if row and any(c.get("status") == "running" for c in row["containers"]):
                break
            time.sleep(1)
        kill = zonehost("kill", name)
        assert kill.returncode == 0, kill
        out, err = runner.communicate(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 137, f"{out}\n{err}\n{zonehost.console(name)[-3000:]}"
    assert "waiting" in out
    rows = json.loads(zonehost("--json", "ps").stdout)
    row = next(r for r in rows if r["name"] == name)
    assert row["status"] == "stopped" and row["exit_code"] == 137
    assert zonehost("rm", name).returncode == 0


def test_stop_is_a_clean_power_off(zonehost):
    name = "stopme"
    result = zonehost.run("-d", "--name", name, "busybox", "--", *LONG_RUNNING)
    assert result.returncode == 0, describe(zonehost, name, result)
    started = time.monotonic()
    result = zonehost("stop", name, timeout=120)
    assert result.returncode == 0, describe(zonehost, name, result)
    assert "clean shutdown" in result.stdout, describe(zonehost, name, result)
    assert time.monotonic() - started < 60
    console = zonehost.console(name)
    assert "Power down" in console, console[-3000:]
    shutdown = console[console.index("poweroff (zonehost stop)"):]      # PID 1's shutdown sequence
    assert "container main exited with 0" in shutdown, shutdown       # SIGTERM within the grace period
    assert "unmount " not in shutdown, shutdown                         # every file system unmounted
    assert "zoneinit: poweroff\n" in shutdown
    assert zonehost("rm", name).returncode == 0


def test_a_missing_program_is_one_clear_error(zonehost):
    result = zonehost.run("--rm", "-q", "--name", "noprog", "busybox", "--", "/no/such/program")
    assert result.returncode not in (0, 1), describe(zonehost, "noprog", result)   # the container's code
    lines = [line for line in result.stderr.splitlines() if line.startswith("zonehost")]
    assert len(lines) == 1 and "/no/such/program" in lines[0], result.stderr
    assert result.stdout == ""
