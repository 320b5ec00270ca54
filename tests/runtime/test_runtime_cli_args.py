"""The quick reader of the per-container command lines gives exactly what argparse gives, or stands aside."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from styrolite.cliargs import build_parser, quick_parse

ACCEPTED = [
    ["state", "c1"],
    ["--root", "/run/x", "state", "c1"],
    ["--root=/run/x", "--log", "/tmp/log.json", "--log-format", "json", "start", "c1"],
    ["--log-format=text", "--debug", "delete", "c1"],
    ["delete", "--force", "c1"],
    ["delete", "c1", "-f"],
    ["--root", "/r", "kill", "c1"],
    ["kill", "c1", "KILL"],
    ["kill", "--all", "c1", "9"],
    ["kill", "c1", "-a"],
    ["--systemd-cgroup", "state", "c1"],
    ["create", "--bundle", "/b", "--pid-file", "/p", "c1"],
    ["create", "-b", "/b", "--console-socket", "/s", "--preserve-fds", "3", "c1"],
    ["create", "--bundle=/b", "--no-pivot", "--no-new-keyring", "c1", "--preserve-fds=0"],
    ["run", "-b", "/b", "-d", "--keep", "c1"],
    ["run", "--detach", "c1"],
    ["--root", "state", "state", "c1"],  # a value that happens to be a command name
]
DECLINED = [
    [],
    ["--version"],
    ["-h"],
    ["state"],  # missing id: argparse says so
    ["state", "a", "b"],
    ["list"],
    ["exec", "c1", "true"],
    ["--ro", "/x", "state", "c1"],  # an abbreviation: argparse's business
    ["delete", "-fa", "c1"],
    ["delete", "--force=yes", "c1"],
    ["state", "--", "c1"],
    ["state", "-"],
    ["--root", "-x", "state", "c1"],
    ["--log-format", "xml", "state", "c1"],
    ["create", "--preserve-fds", "three", "c1"],
    ["create", "-b=/b", "c1"],
    ["state", "c1", "--root", "/x"],  # global options only before the command
    ["kill", "c1", "TERM", "extra"],
]


@pytest.mark.parametrize("argv", ACCEPTED, ids=" ".join)
def test_quick_parse_equals_argparse(argv):
    quick = quick_parse(argv)
    assert quick is not None, argv
    assert vars(quick) == vars(build_parser().parse_args(argv))


@pytest.mark.parametrize("argv", DECLINED, ids=lambda a: " ".join(a) or "<empty>")
def test_quick_parse_declines_what_it_does_not_read_exactly(argv):
    assert quick_parse(argv) is None


def test_the_default_root_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("STYROLITE_ROOT", "/tmp/elsewhere")
    assert quick_parse(["state", "c1"]).root == "/tmp/elsewhere"
    assert build_parser().parse_args(["state", "c1"]).root == "/tmp/elsewhere"


TOKENS = st.sampled_from(["state", "start", "delete", "kill", "create", "run", "list", "c1", "c2", "9", "KILL",
                          "--root", "/r", "--root=/r", "--log", "/l", "--log-format", "json", "text", "--debug",
                          "-f", "--force", "-a", "--all", "-b", "/b", "--bundle=/b", "--pid-file", "--keep", "-d",
                          "--preserve-fds", "2", "--no-pivot", "--", "-", "", "-x", "--forc"])


@settings(max_examples=400, deadline=None)
@given(st.lists(TOKENS, max_size=7))
def test_whenever_quick_parse_answers_argparse_agrees(argv):
    quick = quick_parse(argv)
    if quick is None:
        return
    try:
        expected = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"quick_parse accepted {argv} which argparse refuses")
    assert vars(quick) == vars(expected)
