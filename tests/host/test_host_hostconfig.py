"""The host configuration (default kernel reference, extensions, pull policy, registry settings) and how zonehost
run's arguments are read over it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from host.cli import build_parser
from host.errors import HostError
from host.hostconfig import HostConfigError, load_host_config
from host.sources import check_image_argument

KERNEL = "127.0.0.1:5000/zone/kernel@sha256:" + "ab" * 32


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "zonehost.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZONE_HOST_CONFIG", raising=False)
    monkeypatch.delenv("ZONE_KERNEL", raising=False)
    config = load_host_config(tmp_path / "absent.toml")
    assert (config.kernel, config.extensions, config.pull, config.store, config.source) == (None, (), "missing",
                                                                                           None, None)


def test_a_file_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZONE_KERNEL", raising=False)
    path = _write(tmp_path, f'[images]\nkernel = "{KERNEL}"\nextensions = ["a:1", "b:2"]\npull = "always"\n'
                            '[registry]\nstore = "/s"\ncert_dir = "/c"\n')
    config = load_host_config(path)
    assert (config.kernel, config.extensions, config.pull, config.store, config.cert_dir) == (
        KERNEL, ("a:1", "b:2"), "always", "/s", "/c")
    monkeypatch.setenv("ZONE_KERNEL", "other/kernel:1")
    assert load_host_config(path).kernel == "other/kernel:1"


@pytest.mark.parametrize(("text", "reason"), [
    ("[images]\nkernle = 'x'\n", "unknown key images.kernle"),
    ("[image]\nkernel = 'x'\n", "unknown section [image]"),
    ("[images]\nextensions = 'x'\n", "images.extensions must be a list of strings"),
    ("[images]\npull = 'sometimes'\n", "images.pull must be one of missing, always, never"),
    ("[images\n", "host config"),
])
def test_mistakes_are_named(tmp_path: Path, text: str, reason: str) -> None:
    with pytest.raises(HostConfigError, match=reason.replace("[", r"\[").replace(".", r"\.")):
        load_host_config(_write(tmp_path, text))


def test_a_named_file_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZONE_HOST_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(HostConfigError, match="no such file"):
        load_host_config()


def test_run_arguments_over_the_host_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from host.launch import definition_from_args

    monkeypatch.delenv("ZONE_KERNEL", raising=False)
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"x")
    config = load_host_config(_write(tmp_path, f'[images]\nkernel = "{KERNEL}"\nextensions = ["base/ext:1"]\n'))
    args = build_parser().parse_args(["run", "--initrd", str(initrd), "--extension", "more/ext:2", "--module",
                                      "btrfs", "127.0.0.1:5000/app:1"])
    definition = definition_from_args(args, config)
    assert definition.kernel_image == KERNEL and definition.app_image == "127.0.0.1:5000/app:1"
    assert definition.extensions == ["base/ext:1", "more/ext:2"] and definition.modules == ["btrfs"]
    assert definition.pull == "missing"
    args = build_parser().parse_args(["run", "--initrd", str(initrd), "--kernel", "mine/kernel:2", "--pull", "never",
                                      "busybox"])
    definition = definition_from_args(args, config)
    assert definition.kernel_image == "mine/kernel:2" and definition.app_image is None and definition.pull == "never"


def test_image_arguments_are_checked_before_anything_is_built(tmp_path: Path) -> None:
    check_image_argument("127.0.0.1:5000/app@sha256:" + "cd" * 32, "image")
    check_image_argument(str(tmp_path), "image")
    check_image_argument("busybox", "image")
    with pytest.raises(HostError, match=r"no such file or directory$"):
        check_image_argument("./missing-layout", "image")
    with pytest.raises(HostError, match="not an image reference"):
        check_image_argument("bad ref", "kernel image")
    assert isinstance(build_parser().parse_args(["pull", "x:1"]), argparse.Namespace)
