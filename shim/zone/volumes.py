"""A container's OCI mounts, classified: what the zone makes itself, what the shim copies in, what it refuses.

A zone shares no directory with the host live (its cloud kernel has no 9p, Debian 12 has no virtiofsd, and
Xen PV must work too), so every ``mounts[]`` entry of the container's OCI config becomes one of
(``container.create``'s ``oci.mounts`` and ``volumes``, docs/pods-contract.md):

* a kernel file system (proc, sysfs, tmpfs, devpts, mqueue, cgroup): kept in ``oci.mounts``, the zone
  mounts it itself;
* CRI's sandbox files (``hosts``, ``hostname``, ``resolv.conf``): a ``files`` volume with their content;
* CRI's sandbox ``shm``: an ``emptydir`` volume ``dev-shm`` on ``memory``, shared by the pod's containers
  as a pod's IPC namespace shares it;
* a kubelet ``emptyDir``: an ``emptydir`` volume of the same name, shared by the pod's containers
  (``memory`` when kubelet made it a tmpfs);
* a kubelet ``configMap``, ``secret``, ``projected`` or ``downwardAPI`` volume: a read-only ``files`` volume;
* kubelet's termination-log file: a writable ``files`` volume, copied back to the host path after the exit
  (``container.read_file``), where kubelet reads it;
* any other host path that is read-only and small: a ``files`` volume, a copy made at create time;
* a read-write host path, a device, a subPath, a big directory: **refused** at CreateContainer, naming the
  mount -- never a container silently without its volume.

File contents of one create are limited to ``FILES_LIMIT`` bytes in all (they travel in one IDM message,
whose frame is at most 1 MiB).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any

from shim.ttrpc.status import InvalidArgument

FILES_LIMIT = 768 * 1024
KERNEL_FILESYSTEMS = {"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"}
CRI_SANDBOX_DIR = re.compile(r"/io\.containerd\.grpc\.v1\.cri/sandboxes/[0-9a-f]{64}/"
                             r"(hosts|hostname|resolv\.conf|shm)$")
KUBELET_VOLUME = re.compile(r"/pods/([^/]+)/volumes/kubernetes\.io~([^/]+)/([^/]+)(/.*)?$")
KUBELET_CONTAINER_FILE = re.compile(r"/pods/([^/]+)/containers/([^/]+)/([^/]+)$")
KUBELET_SUBPATH = re.compile(r"/pods/[^/]+/volume-subpaths/")
CONTENT_PLUGINS = {"configmap", "secret", "projected", "downward-api"}
TMPFS_MAGIC = 0x01021994


@dataclass
class Delivery:
    """How a container's mounts reach the zone: ``mounts`` (``oci.mounts``) and ``volumes`` of the
    ``container.create``, and the files to copy back to the host after the exit."""

    mounts: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    copy_back: list[tuple[str, str]] = field(default_factory=list)   # (path in the container, host path)

    @property
    def file_bytes(self) -> int:
        return sum(len(f["data"]) for v in self.volumes for f in v.get("files", ()))


def _readonly(mount: dict[str, Any]) -> bool:
    return "ro" in (mount.get("options") or [])


def _refuse(container_id: str, destination: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"container {container_id}: mount {destination}: {why}")


def _is_tmpfs(path: str) -> bool:
    """Whether ``path`` is on a tmpfs (kubelet mounts one for an emptyDir with medium Memory)."""
    import ctypes
    import ctypes.util

    class Statfs(ctypes.Structure):
        _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_long * 15)]

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    buf = Statfs()
    return libc.statfs(os.fsencode(path), ctypes.byref(buf)) == 0 and buf.f_type == TMPFS_MAGIC


def _file(source: str, relative: str = "") -> dict[str, Any]:
    with open(source, "rb") as f:
        data = f.read(FILES_LIMIT + 1)
    return {"path": relative, "data": data, "mode": stat.S_IMODE(os.stat(source).st_mode)}


def _file_volume(source: str, destination: str, readonly: bool) -> dict[str, Any]:
    """One host file as a ``files`` volume holding exactly that file."""
    return {"kind": "files", "destination": destination, "readonly": readonly, "files": [_file(source)]}


def _tree_volume(container_id: str, source: str, destination: str, readonly: bool) -> dict[str, Any]:
    """Every file of a directory as it is seen through it (kubelet's atomic writer shows ``..data`` symlinks:
    the visible names are followed; hidden ``..`` entries are its bookkeeping and are left out). An empty
    directory is an empty read-only directory of the container's own."""
    entries: list[dict[str, Any]] = []
    total = 0
    for directory, dirs, files in os.walk(source, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".."))
        for name in sorted(files):
            if name.startswith(".."):
                continue
            path = os.path.join(directory, name)
            if not os.path.isfile(path):
                raise _refuse(container_id, destination, f"{path} is not a regular file; a zone gets copies of "
                                                         "files only")
            entry = _file(path, os.path.relpath(path, source))
            total += len(entry["data"])
            if total > FILES_LIMIT:
                raise _refuse(container_id, destination, f"{source} holds more than {FILES_LIMIT // 1024} KiB; "
                                                         "a zone gets copies of small read-only directories only")
            entries.append(entry)
    if not entries:
        name = "ro-" + hashlib.sha256(f"{container_id}:{destination}".encode()).hexdigest()[:16]
        return {"kind": "emptydir", "name": name, "destination": destination, "readonly": True}
    return {"kind": "files", "destination": destination, "readonly": readonly, "files": entries}


def classify(container_id: str, spec: dict[str, Any]) -> Delivery:
    """The mounts of ``spec`` (the container's OCI config), classified; InvalidArgument names the first mount
    a zone cannot honour."""
    delivery = Delivery()
    for mount in spec.get("mounts") or []:
        if not isinstance(mount, dict) or not isinstance(mount.get("destination"), str):
            raise InvalidArgument(f"container {container_id}: a mount without a destination: {mount!r}")
        destination, kind, source = mount["destination"], mount.get("type") or "", mount.get("source") or ""
        readonly = _readonly(mount)
        options = mount.get("options") or []
        bind = kind in ("bind", "rbind") or "bind" in options or "rbind" in options
        if not bind:
            if kind not in KERNEL_FILESYSTEMS:
                raise _refuse(container_id, destination, f"file system type {kind!r} cannot be mounted in a zone")
            delivery.mounts.append(mount)
            continue
        if (sandbox_file := CRI_SANDBOX_DIR.search(source)) is not None:
            if sandbox_file.group(1) == "shm":
                delivery.volumes.append({"kind": "emptydir", "name": "dev-shm", "medium": "memory",
                                         "destination": destination, "readonly": readonly})
            else:
                delivery.volumes.append(_file_volume(source, destination, readonly))
        elif KUBELET_SUBPATH.search(source):
            raise _refuse(container_id, destination, f"subPath volume {source}: a zone cannot bind part of a host "
                                                     "volume")
        elif (volume := KUBELET_VOLUME.search(source)) is not None:
            plugin, name = volume.group(2), volume.group(3)
            if plugin == "empty-dir":
                delivery.volumes.append({"kind": "emptydir", "name": name, "medium": "memory" if _is_tmpfs(source)
                                         else "", "destination": destination, "readonly": readonly})
            elif plugin in CONTENT_PLUGINS:
                if not readonly:
                    raise _refuse(container_id, destination, f"{plugin} volume {name} mounted read-write")
                delivery.volumes.append(_tree_volume(container_id, source, destination, True))
            else:
                raise _refuse(container_id, destination, f"volume plugin {plugin} ({name}): a zone shares no host "
                                                         "directory; use emptyDir, configMap, secret, projected or "
                                                         "downwardAPI volumes")
        elif KUBELET_CONTAINER_FILE.search(source) and os.path.isfile(source):
            delivery.volumes.append(_file_volume(source, destination, False))   # the termination log
            delivery.copy_back.append((destination, source))
        else:
            delivery.volumes.append(_host_path(container_id, source, destination, readonly))
        if delivery.file_bytes > FILES_LIMIT:
            raise _refuse(container_id, destination, f"the files copied into the zone exceed {FILES_LIMIT // 1024} KiB")
    return delivery


def _host_path(container_id: str, source: str, destination: str, readonly: bool) -> dict[str, Any]:
    try:
        st = os.stat(source)
    except OSError as e:
        raise _refuse(container_id, destination, f"host path {source}: {e.strerror}") from e
    if not readonly:
        what = "directory" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "path"
        raise _refuse(container_id, destination, f"zone pods cannot share host {what} {source} read-write (a zone "
                                                 "has its own kernel and file systems; mount it read-only to get a "
                                                 "copy, or use an emptyDir)")
    if stat.S_ISREG(st.st_mode):
        return _file_volume(source, destination, True)
    if stat.S_ISDIR(st.st_mode):
        return _tree_volume(container_id, source, destination, True)
    raise _refuse(container_id, destination, f"host path {source} is a device or special file; a zone sees only its "
                                             "own devices")
