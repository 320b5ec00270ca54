"""Bad input gets one clear line naming what was wrong, a non-zero exit, and leaves nothing behind."""

from __future__ import annotations

import json
import os

import pytest
from helpers import err


def assert_clean_failure(result, *fragments: str, state_root=None) -> None:
    assert result.returncode != 0
    message = err(result)
    assert len(message.strip().splitlines()) == 1, message
    assert "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, message
    if state_root is not None and state_root.exists():
        assert os.listdir(state_root) == []


def cgroup_leftovers(name: str) -> list[str]:
    found = []
    for base, dirs, _files in os.walk("/sys/fs/cgroup"):
        if os.path.basename(base) == name:
            found.append(base)
        if base.count("/") > 6:
            dirs[:] = []
    return found


def test_invalid_json(make_bundle, styrolite, state_root):
    bundle = make_bundle(["true"])
    (bundle / "config.json").write_text('{"ociVersion": "1.2.0",\n "process": }')
    assert_clean_failure(styrolite("create", "-b", str(bundle), "bad1"), "config.json", "line 2",
                         state_root=state_root)


@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda c: c["linux"]["namespaces"].append({"type": "warp"}), "linux.namespaces[5].type"),
    (lambda c: c["process"].update(cwd="relative"), "process.cwd"),
    (lambda c: c["process"].update(args=[]), "process.args"),
    (lambda c: c["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1000, "size": 0}]),
     "linux.uidMappings"),
    (lambda c: c["process"]["rlimits"].append({"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}),
     "process.rlimits[1].type"),
    (lambda c: c["process"]["capabilities"]["bounding"].append(" "), "process.capabilities.bounding"),
    (lambda c: c["mounts"].append({"destination": "rel/path", "type": "tmpfs"}), "mounts[7].destination"),
    (lambda c: c.update(ociVersion="9.9.9"), "ociVersion"),
])
def test_invalid_config_names_the_field(make_bundle, styrolite, state_root, edit, fragment):
    bundle = make_bundle(["true"], edit=edit)
    assert_clean_failure(styrolite("create", "-b", str(bundle), "bad2"), fragment, state_root=state_root)
    assert cgroup_leftovers(bundle.name) == []


def test_missing_rootfs(make_bundle, styrolite, state_root):
    bundle = make_bundle(["true"], edit=lambda c: c["root"].update(path="nowhere"))
    assert_clean_failure(styrolite("create", "-b", str(bundle), "bad3"), "nowhere", state_root=state_root)


def test_missing_bundle(styrolite, state_root, tmp_path):
    assert_clean_failure(styrolite("create", "-b", str(tmp_path / "absent"), "bad4"), "absent",
                         state_root=state_root)


@pytest.mark.root
def test_missing_executable_fails_at_create(make_bundle, styrolite, state_root):
    bundle = make_bundle(["/bin/definitely-not-here"])
    assert_clean_failure(styrolite("create", "-b", str(bundle), "bad5"), "definitely-not-here",
                         state_root=state_root)
    assert cgroup_leftovers(bundle.name) == []


@pytest.mark.root
def test_bad_mount_fails_cleanly(make_bundle, styrolite, state_root):
    bundle = make_bundle(["true"], edit=lambda c: c["mounts"].append(
        {"destination": "/x", "type": "bind", "source": "/no/such/source", "options": ["bind"]}))
    assert_clean_failure(styrolite("create", "-b", str(bundle), "bad6"), "/no/such/source", state_root=state_root)


@pytest.mark.root
def test_duplicate_id_is_refused_and_the_first_survives(make_bundle, styrolite):
    bundle = make_bundle(["sleep", "100"])
    styrolite("create", "-b", str(bundle), "dup", check=True)
    assert_clean_failure(styrolite("create", "-b", str(bundle), "dup"), "already exists")
    assert json.loads(styrolite("state", "dup", check=True).stdout)["status"] == "created"


@pytest.mark.parametrize("cid", ["../escape", "a/b", "", "-flag", "x" * 2000])
def test_invalid_ids(make_bundle, styrolite, cid):
    result = styrolite("create", "-b", str(make_bundle(["true"])), "--", cid) if cid.startswith("-") else \
        styrolite("create", "-b", str(make_bundle(["true"])), cid)
    assert result.returncode != 0 and "Traceback" not in err(result)


def test_unknown_container(styrolite):
    for verb in (["state"], ["start"], ["kill"], ["delete"], ["pause"], ["exec"], ["ps"]):
        args = [*verb, "ghost"] + (["true"] if verb == ["exec"] else [])
        assert_clean_failure(styrolite(*args), "ghost")


@pytest.mark.root
def test_start_twice_and_wrong_state(make_bundle, styrolite):
    bundle = make_bundle(["sleep", "100"])
    styrolite("create", "-b", str(bundle), "c1", check=True)
    assert_clean_failure(styrolite("resume", "c1"), "created")
    styrolite("start", "c1", check=True)
    assert_clean_failure(styrolite("start", "c1"), "running")


def test_systemd_cgroup_driver_is_refused(make_bundle, styrolite):
    assert_clean_failure(styrolite("--systemd-cgroup", "state", "x"), "systemd")
