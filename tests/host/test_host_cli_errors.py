"""CLI argument and input errors: one clear line on stderr, non-zero exit, no traceback (no boot)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from host.cli import main
from host.state import zone_dir
from host.zonedef import ZoneDef

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_state_env(monkeypatch, tmp_path):
    """main() exports --state-dir as ZONE_STATE; monkeypatch puts the old value back afterwards."""
    monkeypatch.setenv("ZONE_STATE", str(tmp_path / "default-state"))


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("argv", "needle"), [
    ([], "VERB"),
    (["frob"], "invalid choice"),
    (["run"], "missing IMAGE"),
    (["run", "--memory", "lots", "busybox"], "not a number"),
    (["run", "--memory", "0", "busybox"], "must be positive"),
    (["run", "--backend", "vmware", "busybox"], "invalid choice"),
    (["exec", "web"], "missing the command"),
    (["stop"], "ZONE"),
])
def test_usage_errors_are_one_line_and_exit_2(capsys, argv, needle):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("zonehost")


@pytest.mark.parametrize("verb", ["logs", "stop", "rm", "exec"])
def test_unknown_zone_is_one_line_and_exit_1(capsys, tmp_path, verb):
    extra = ["true"] if verb == "exec" else []
    code, _, err = run_cli(capsys, "--state-dir", str(tmp_path), verb, "nope", *extra)
    assert code == 1
    assert err.strip() == "zonehost: no zone named 'nope'"


def test_ps_lists_zones_from_the_state_directory(capsys, tmp_path):
    zone_dir("web", tmp_path).create(ZoneDef(name="web", kernel_image="/k", initrd="/i"))
    code, out, _ = run_cli(capsys, "--json", "--state-dir", str(tmp_path), "ps")
    assert code == 0
    rows = json.loads(out)
    assert [(r["name"], r["status"], r["backend"]) for r in rows] == [("web", "stopped", "qemu")]
    code, out, _ = run_cli(capsys, "--state-dir", str(tmp_path), "ps")
    assert code == 0 and out.splitlines()[1].split()[:3] == ["web", "qemu", "stopped"]


def test_rm_of_a_stopped_zone_and_logs_of_its_console(capsys, tmp_path):
    zone = zone_dir("web", tmp_path)
    zone.create(ZoneDef(name="web", kernel_image="/k", initrd="/i"))
    zone.console_log.write_text("booted\n")
    code, out, _ = run_cli(capsys, "--state-dir", str(tmp_path), "logs", "--console", "web")
    assert code == 0 and out == "booted\n"
    code, _, _ = run_cli(capsys, "--state-dir", str(tmp_path), "rm", "web")
    assert code == 0 and not zone.path.exists()


def test_entry_point_process_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "host.cli", "--state-dir", str(tmp_path), "stop", "ghost"],
                            cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stderr == "zonehost: no zone named 'ghost'\n"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("argv", "needle"), [
    (["run", "/no/such/image"], "image '/no/such/image': no such file or directory"),
    (["run", "Not A Ref"], "image 'Not A Ref': no such file or directory, and not an image reference"),
    (["run", "--extension", "/no/ext", "busybox"], "extension '/no/ext': no such file or directory"),
    (["run", "--module", "bad/name", "busybox"], "modules: 'bad/name' is not a kernel module name"),
    (["run", "-e", "NOEQUALS", "busybox"], "env: 'NOEQUALS' is not KEY=VALUE"),
    (["run", "--name", "Bad Name", "busybox"], "name: 'Bad Name'"),
    (["run", "--address", "10.0.2.999/24", "busybox"], "network.address"),
    (["run", "--kernel", "/no/kernel", "busybox"], "kernel image '/no/kernel'"),
    (["run", "--initrd", "/no/initrd", "busybox"], "initrd '/no/initrd'"),
])
def test_bad_run_input_fails_fast_with_one_line(capsys, tmp_path, argv, needle):
    code, out, err = run_cli(capsys, "--state-dir", str(tmp_path), *argv)
    assert code == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert not any(tmp_path.iterdir())   # nothing was created


def test_json_flag_is_accepted_after_the_verb_too(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "--state-dir", str(tmp_path), "ps", "--json")
    assert code == 0 and json.loads(out) == []
