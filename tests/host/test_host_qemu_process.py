"""QemuBackend's process handling (boot, socket wait, pidfile, liveness, connect, kill) against a fake QEMU."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from host.backends import backend_for
from host.backends.qemu import QemuBackend
from host.bootplan import BootFiles
from host.errors import BackendError
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
def test_boot_waits_for_the_socket_records_the_pid_and_kill_ends_it(fake_qemu, tmp_path, daemonize):
    definition, zone, boot = make_zone(tmp_path)
    qemu = QemuBackend(zone)
    qemu.boot(definition, boot, daemonize=daemonize, accel="tcg")
    assert zone.idm_socket.exists()
    assert zone.runtime()["pid"] == zone.pid() and zone.runtime()["accel"] == "tcg"
    assert zone.is_running() and qemu.alive()
    # a second CLI process sees it through the state directory alone, and the chooser picks QEMU
    again = backend_for(zone_dir("fake", tmp_path / "zones"))
    assert isinstance(again, QemuBackend) and again.alive()
    again.connect(timeout=5).close()   # the IDM byte stream: the chardev socket accepts
    assert not qemu.wait(0.2)
    qemu.kill(timeout=2)      # no QMP socket in the fake: falls back to SIGTERM
    assert not qemu.alive()
    if not daemonize:
        assert qemu.process is not None and qemu.process.returncode is not None


def test_a_qemu_that_fails_to_start_is_one_clear_error(fake_qemu, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_FAIL", "1")
    definition, zone, boot = make_zone(tmp_path)
    with pytest.raises(BackendError, match="could not open kernel"):
        QemuBackend(zone).boot(definition, boot, daemonize=True, accel="tcg")
    with pytest.raises(BackendError, match="exited: qemu-system-x86_64: -kernel: could not open kernel"):
        QemuBackend(zone).boot(definition, boot, daemonize=False, accel="tcg")


def test_missing_qemu_binary(tmp_path, monkeypatch):
    monkeypatch.setenv("ZONE_QEMU", str(tmp_path / "nope"))
    definition, zone, boot = make_zone(tmp_path)
    with pytest.raises(BackendError, match="not found"):
        QemuBackend(zone).boot(definition, boot, daemonize=True)
    assert os.environ["ZONE_QEMU"].endswith("nope")


def test_connect_waits_for_the_chardev_socket_and_gives_up_at_its_deadline(tmp_path):
    import socket
    import threading

    from idm.errors import IdmTimeout

    _definition, zone, _boot = make_zone(tmp_path)
    listener = socket.socket(socket.AF_UNIX)

    def listen_late() -> None:
        listener.bind(str(zone.idm_socket))
        listener.listen(1)

    timer = threading.Timer(0.3, listen_late)
    timer.start()
    try:
        QemuBackend(zone).connect(timeout=10).close()
    finally:
        timer.join()
        listener.close()
    zone.idm_socket.unlink()
    with pytest.raises(IdmTimeout, match="did not accept a connection"):
        QemuBackend(zone).connect(timeout=0.3)
