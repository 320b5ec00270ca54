"""host.pod.snapshot: containerd's rootfs mounts -> the layer chain (no privileges needed)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from host.pod.errors import RootfsError
from host.pod.snapshot import Mount, layer_identity, snapshot_chain, upper_entries


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    names = {"l1": "snapshots/1/fs", "l2": "snapshots/2/fs", "upper": "snapshots/3/fs", "work": "snapshots/3/work"}
    made = {key: tmp_path / value for key, value in names.items()}
    for path in made.values():
        path.mkdir(parents=True)
    return made


def test_overlay_mount_as_containerd_sends_it(dirs: dict[str, Path]) -> None:
    # the shape of a containerd.types.Mount protobuf message: attributes, options a repeated string
    message = SimpleNamespace(type="overlay", source="overlay", target="",
                              options=["index=off", f"workdir={dirs['work']}", f"upperdir={dirs['upper']}",
                                       f"lowerdir={dirs['l2']}:{dirs['l1']}", "userxattr"])
    chain = snapshot_chain([message])
    assert chain.lowers == (dirs["l2"], dirs["l1"])       # topmost first, as given
    assert chain.upper == dirs["upper"] and chain.userxattr
    assert upper_entries(chain) == []
    (dirs["upper"] / "a").write_text("")
    assert upper_entries(chain) == ["a"]


def test_bind_mounts(dirs: dict[str, Path]) -> None:
    view = snapshot_chain([{"type": "bind", "source": str(dirs["l1"]), "options": ["ro", "rbind"]}])
    assert view.lowers == (dirs["l1"],) and view.upper is None
    active = snapshot_chain([Mount("bind", str(dirs["upper"]), ("rw", "rbind"))])
    assert active.lowers == () and active.upper == dirs["upper"]


def test_identity_is_the_directory_inode(dirs: dict[str, Path]) -> None:
    before = layer_identity(dirs["l1"])
    assert before["path"] == str(dirs["l1"].resolve())
    dirs["l1"].rmdir()
    dirs["l1"].mkdir()
    assert layer_identity(dirs["l1"]) != before


@pytest.mark.parametrize(("mount", "message"), [
    ({"type": "overlay", "source": "overlay", "options": ["lowerdir=relative/fs"]}, "not an absolute path"),
    ({"type": "overlay", "source": "overlay", "options": ["lowerdir=/a,b"]}, "contains ','"),
    ({"type": "overlay", "source": "overlay", "options": ["upperdir=/tmp"]}, "no lowerdir= option"),
    ({"type": "overlay", "source": "overlay", "options": "lowerdir=/x"}, "options must be a list"),
    ({"type": "zfs", "source": "pool/ds", "options": []}, "rootfs mount type 'zfs' from pool/ds"),
    ({"type": "", "source": "x"}, "needs a 'type'"),
])
def test_refusals(mount: dict, message: str) -> None:
    with pytest.raises(RootfsError, match=message):
        snapshot_chain([mount])


def test_a_layer_listed_twice(dirs: dict[str, Path]) -> None:
    with pytest.raises(RootfsError, match="listed twice"):
        snapshot_chain([Mount("overlay", "overlay", (f"lowerdir={dirs['l1']}:{dirs['l1']}",))])
