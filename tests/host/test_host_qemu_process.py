"""QemuZone's process handling (start, socket wait, pidfile, liveness, quit) against a fake QEMU binary."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from host.bootplan import BootFiles
from host.errors import BackendError
from host.qemu import QemuZone
from host.state import zone_dir
from host.zonedef import ZoneDef

FAKE_QEMU = textwrap.dedent("""\
    #!{python}
    # Stands in for qemu-system-x86_64: opens the IDM socket, writes the pidfile, daemonizes on request.
    import os, socket, sys, time
    argv = sys.argv[1:]
    if os.environ.get("FAKE_QEMU_FAIL"):
        print("qemu-system-x86_64: -kernel: could not open kernel", file=sys.stderr)
        sys.exit(1)
    value = lambda opt: argv[argv.index(opt) + 1]
    sock_path = [a for a in argv if a.startswith("socket,id=idm,")][0].split("path=")[1].split(",")[0]
    if "-daemonize" in argv and os.fork() > 0:
        time.sleep(0.3)
        sys.exit(0)
    with open(value("-pidfile"), "w") as f:
        f.write(f"{{os.getpid()}}\\n")
    s = socket.socket(socket.AF_UNIX)
    s.bind(sock_path)
    s.listen(1)
    time.sleep(float(os.environ.get("FAKE_QEMU_LIFETIME", "60")))
""")


@pytest.fixture
def fake_qemu(tmp_path, monkeypatch):
    script = tmp_path / "qemu-system-x86_64"
    script.write_text(FAKE_QEMU.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("ZONE_QEMU", str(script))
    return script


def make_zone(tmp_path: Path):
    definition = ZoneDef(name="fake", kernel_image="/k", initrd="/i")
    zone = zone_dir("fake", tmp_path / "zones")
    zone.create(definition)
    boot = BootFiles(kernel=tmp_path / "k", initrd=tmp_path / "i", addons=tmp_path / "a", config_disk=tmp_path / "c")
    return definition, zone, boot


@pytest.mark.parametrize("daemonize", [False, True])
def test_start_waits_for_the_socket_records_the_pid_and_quit_ends_it(fake_qemu, tmp_path, daemonize):
    definition, zone, boot = make_zone(tmp_path)
    qemu = QemuZone(zone)
    pid = qemu.start(definition, boot, daemonize=daemonize, accel="tcg")
    assert zone.idm_socket.exists()
    assert zone.runtime()["pid"] == pid and zone.runtime()["accel"] == "tcg"
    assert zone.is_running() and qemu.running()
    # a second CLI process sees it through the state directory alone
    assert QemuZone(zone_dir("fake", tmp_path / "zones")).running()
    assert not qemu.wait(0.2)
    qemu.quit(timeout=2)      # no QMP socket in the fake: falls back to SIGTERM
    assert not qemu.running()
    if not daemonize:
        assert qemu.process is not None and qemu.process.returncode is not None


def test_a_qemu_that_fails_to_start_is_one_clear_error(fake_qemu, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_FAIL", "1")
    definition, zone, boot = make_zone(tmp_path)
    with pytest.raises(BackendError, match="could not open kernel"):
        QemuZone(zone).start(definition, boot, daemonize=True, accel="tcg")
    with pytest.raises(BackendError, match="exited: qemu-system-x86_64: -kernel: could not open kernel"):
        QemuZone(zone).start(definition, boot, daemonize=False, accel="tcg")


def test_missing_qemu_binary(tmp_path, monkeypatch):
    monkeypatch.setenv("ZONE_QEMU", str(tmp_path / "nope"))
    definition, zone, boot = make_zone(tmp_path)
    with pytest.raises(BackendError, match="not found"):
        QemuZone(zone).start(definition, boot, daemonize=True)
    assert os.environ["ZONE_QEMU"].endswith("nope")
