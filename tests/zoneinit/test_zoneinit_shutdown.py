import os
import signal

from styrolite.syscalls.constants import RB_AUTOBOOT, RB_POWER_OFF
from styrolite.syscalls.fake import RecordingSyscalls
from zoneinit.console import ConsoleLog
from zoneinit.mounts.table import MountTable
from zoneinit.supervisor.loop import Supervisor
from zoneinit.supervisor.shutdown import Shutdown


class FakeContainers:
    def __init__(self, journal, running, stubborn=()):
        self.journal = journal
        self._running = set(running)
        self.stubborn = set(stubborn)

    def running(self):
        return sorted(self._running)

    def signal(self, cid, signum, all_processes=False):
        self.journal.append(("signal", cid, signum, all_processes))
        if signum == signal.SIGKILL or cid not in self.stubborn:
            self._running.discard(cid)


def _setup(tmp_path, running, stubborn=(), grace=0.0):
    journal = []
    fake = RecordingSyscalls()
    table = MountTable(fake)
    table.mount("proc", str(tmp_path / "proc"), "proc", essential=True)
    table.mount("/dev/vda", str(tmp_path / "addons"), "squashfs")
    table.mount("overlay", str(tmp_path / "bundle/rootfs"), "overlay")
    sup = Supervisor(ConsoleLog(fd=-1))
    containers = FakeContainers(journal, running, stubborn)
    shutdown = Shutdown(sup, containers, table, sys=fake, grace=grace, kill_wait=0.0,
                        kill_everything=lambda s: journal.append(("kill-everything", s)),
                        sync=lambda: journal.append(("sync",)))
    shutdown.before_power_off.append(lambda action, reason: journal.append(("announce", action, reason)))
    return journal, fake, sup, shutdown


def test_clean_shutdown_sequence(tmp_path):
    journal, fake, _sup, shutdown = _setup(tmp_path, ["web", "db"])
    shutdown.request("poweroff", "zone.shutdown")
    # both obeyed SIGTERM -> finished at once, in this order:
    assert journal == [
        ("signal", "db", signal.SIGTERM, True),
        ("signal", "web", signal.SIGTERM, True),
        ("kill-everything", signal.SIGKILL),
        ("announce", "poweroff", "zone.shutdown"),
        ("sync",),
        ("sync",),
    ]
    assert [os.path.relpath(a[0], tmp_path) for a in fake.of("umount2")] == ["bundle/rootfs", "addons"]
    assert fake.names()[-1] == "reboot" and fake.of("reboot") == [(RB_POWER_OFF,)]
    assert fake.names().index("reboot") > max(i for i, n in enumerate(fake.names()) if n == "umount2")
    shutdown.request("reboot")  # a second request while (or after) shutting down changes nothing
    assert fake.of("reboot") == [(RB_POWER_OFF,)]


def test_stubborn_container_gets_sigkill_after_grace(tmp_path):
    journal, fake, sup, shutdown = _setup(tmp_path, ["web"], stubborn=["web"])
    shutdown.request("reboot", "signal")
    assert shutdown.state == "terminating" and not fake.of("reboot")
    sup.run_once(0)  # grace (0 s) elapses -> SIGKILL
    assert ("signal", "web", signal.SIGKILL, True) in journal
    shutdown.check()  # the next child exit notices nothing is left running
    assert fake.of("reboot") == [(RB_AUTOBOOT,)]


def test_reboot_failure_keeps_pid1_up(tmp_path):
    _journal, fake, _sup, shutdown = _setup(tmp_path, [])
    fake.fail_on("reboot")
    shutdown.request()
    assert shutdown.state == "done" and fake.of("reboot") == [(RB_POWER_OFF,)]
