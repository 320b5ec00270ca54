"""What a pod's ``container.create`` adds to a container definition: the host's OCI config, its volumes, and
whether the host attaches to its stdio (docs/pods-contract.md, docs/idm.md section 7).

Read here, at request time, before anything is made: a field the zone cannot honour is refused with the
JSON path of the field and the reason (``$.oci.hooks: ...``), so a pod never runs without something it
asked for and a bad request leaves nothing behind. What is taken from the OCI config and what the zone
decides itself is applied to the bundle by ``zoneinit.containers.ocimerge``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from zoneinit.errors import ZoneConfigError

# linux.namespaces: how a container gets each namespace in a zone (ocimerge turns these into config.json)
OWN = "own"           # a new namespace of its own
POD = "pod"           # the pod's, shared by its containers (a path in the OCI config, or no entry at all)

# file systems a container mounts inside the zone (no host source): taken from the OCI config as given
KERNEL_FILESYSTEMS = frozenset({"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"})
IGNORED_TOP = frozenset({"ociVersion"})          # the zone's runtime writes its own
IGNORED_LINUX = frozenset({"cgroupsPath", "uidMappings", "gidMappings", "mountLabel"})   # the zone decides these
TAKEN_LINUX = frozenset({"namespaces", "resources", "sysctl", "devices", "seccomp", "maskedPaths", "readonlyPaths",
                         "rootfsPropagation", "personality"})
DROPPED_PROCESS = ("apparmorProfile", "selinuxLabel")   # no LSM in the zone kernel: a warning, not a refusal
MAX_VOLUME_BYTES = 1 << 20          # file contents per create (an IDM frame is 1 MiB)
DEFAULT_FILE_MODE = 0o644
EMPTYDIR_MEDIA = ("", "memory")


class VolumeFile(NamedTuple):
    path: str          # relative to the volume's destination; "" = the destination is this file
    data: bytes
    mode: int


class Volume(NamedTuple):
    """One volume of a pod container: ``emptydir`` (a pod-wide directory by name) or ``files`` (contents sent
    by the host: a configMap, a secret, /etc/hosts, a termination log)."""

    kind: str                      # "emptydir" | "files"
    destination: str               # absolute path in the container
    readonly: bool
    name: str = ""                 # emptydir: shared by every container of the pod that names it
    medium: str = ""               # emptydir: "" (the zone's scratch) or "memory" (a tmpfs of its own)
    size: int | None = None        # emptydir on "memory": the tmpfs size in bytes
    files: tuple[VolumeFile, ...] = ()


class PodSpec(NamedTuple):
    oci: dict[str, Any] | None
    volumes: list[Volume]
    attach: bool
    warnings: list[str]


def parse_pod_spec(payload: dict[str, Any]) -> PodSpec:
    """The ``oci``, ``volumes`` and ``attach`` of a ``container.create`` payload, checked."""
    warnings: list[str] = []
    oci = payload.get("oci")
    checked = None if oci is None else check_oci(oci, warnings)
    volumes = parse_volumes(payload.get("volumes"))
    attach = payload.get("attach", False)
    if not isinstance(attach, bool):
        raise ZoneConfigError("$.attach", f"expected true or false, got {type(attach).__name__}")
    if checked is not None:
        _check_destinations(checked, volumes)
    return PodSpec(checked, volumes, attach, warnings)


# --- the OCI config ------------------------------------------------------------------------------------------

def _map(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ZoneConfigError(path, f"expected an object, got {type(value).__name__}")
    return value


def check_oci(oci: Any, warnings: list[str]) -> dict[str, Any]:
    """The parts of containerd's config.json the zone takes (a new dict); refuses what it cannot honour."""
    oci = _map(oci, "$.oci")
    taken: dict[str, Any] = {}
    for key, value in oci.items():
        path = f"$.oci.{key}"
        if key in IGNORED_TOP:
            continue
        if key == "hooks":
            if value and (not isinstance(value, dict) or any(value.values())):   # {} or empty lists: nothing
                raise ZoneConfigError(path, "hooks run programs on the host; a zone cannot run them")
        elif key == "process":
            taken["process"] = take_process(value, path, warnings)
        elif key == "root":
            readonly = _map(value, path).get("readonly", False)
            if not isinstance(readonly, bool):
                raise ZoneConfigError(f"{path}.readonly", "expected true or false")
            taken["root"] = {"readonly": readonly}   # never the host's path: the zone's overlay of the image
        elif key in ("hostname", "domainname"):
            if not isinstance(value, str):
                raise ZoneConfigError(path, "expected a string")
            taken[key] = value
        elif key == "annotations":
            annotations = _map(value, path)
            for name, text in annotations.items():
                if not isinstance(text, str):
                    raise ZoneConfigError(f"{path}.{name}", "expected a string")
            taken[key] = dict(annotations)
        elif key == "mounts":
            taken[key] = _check_mounts(value, path)
        elif key == "linux":
            taken[key] = _check_linux(_map(value, path), path)
        else:
            raise ZoneConfigError(path, "not supported in a zone")
    return taken


def take_process(value: Any, path: str, warnings: list[str]) -> dict[str, Any]:
    """An OCI process as the zone runs it (create or exec): as given, minus the LSM labels the zone kernel
    cannot apply (a warning each). The runtime's parser validates the rest."""
    process = dict(_map(value, path))
    for dropped in DROPPED_PROCESS:
        if process.pop(dropped, None):
            warnings.append(f"{path}.{dropped}: the zone kernel has no such security module; ignored")
    return process


def _check_mounts(mounts: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(mounts, list):
        raise ZoneConfigError(path, "expected a list")
    kept = []
    for i, mount in enumerate(mounts):
        item = _map(mount, f"{path}[{i}]")
        destination = item.get("destination")
        if not isinstance(destination, str) or not destination.startswith("/"):
            raise ZoneConfigError(f"{path}[{i}].destination", "expected an absolute path")
        fstype, source = item.get("type"), item.get("source")
        options = item.get("options") or []
        bind = fstype in ("bind", "rbind", "none", None) or "bind" in options or "rbind" in options
        if bind or fstype not in KERNEL_FILESYSTEMS or (isinstance(source, str) and source.startswith("/")):
            raise ZoneConfigError(f"{path}[{i}]", f"{destination}: a {fstype or 'bind'} mount of host path "
                                  f"{source!r} cannot be honoured in a zone (send it as a volume)")
        kept.append(dict(item))
    return kept


def _check_linux(linux: dict[str, Any], path: str) -> dict[str, Any]:
    taken: dict[str, Any] = {}
    for key, value in linux.items():
        if key in IGNORED_LINUX:
            continue
        if key not in TAKEN_LINUX:
            raise ZoneConfigError(f"{path}.{key}", "not supported in a zone")
        taken[key] = value
    taken["namespaces"] = namespace_modes(linux.get("namespaces", []), f"{path}.namespaces")
    return taken


def namespace_modes(entries: Any, path: str) -> dict[str, str]:
    """linux.namespaces -> {type: OWN or POD}. Paths are host paths: a path means "share the pod's", which in
    a zone is the pod's namespace PID 1 keeps, never a host one. A pid path is CRI's POD mode (a pod with
    ``shareProcessNamespace``, or a container config without namespace options): the pod's pid namespace.
    CRI's TARGET mode (an ephemeral container in another container's pid namespace) names the target's pid,
    which the host only knows as the VMM's, like the sandbox's: it is the pod's pid namespace too."""
    if not isinstance(entries, list):
        raise ZoneConfigError(path, "expected a list")
    given: dict[str, bool] = {}
    for i, entry in enumerate(entries):
        entry = _map(entry, f"{path}[{i}]")
        kind = entry.get("type")
        if not isinstance(kind, str):
            raise ZoneConfigError(f"{path}[{i}].type", "expected a string")
        if kind in given:
            raise ZoneConfigError(f"{path}[{i}].type", f"duplicate namespace type {kind!r}")
        ns_path = entry.get("path") or ""    # absent, null or "": no path (runc's reading)
        if not isinstance(ns_path, str) or "\0" in ns_path:
            raise ZoneConfigError(f"{path}[{i}].path", f"expected a path (a string), got {ns_path!r:.80}")
        given[kind] = bool(ns_path)
    for kind in given:
        if kind not in ("pid", "ipc", "uts", "mount", "network", "cgroup", "user", "time"):
            raise ZoneConfigError(path, f"unknown namespace type {kind!r}")
    if "pid" not in given:
        raise ZoneConfigError(path, "no pid namespace: sharing the host's (hostPID) is not possible in a zone pod")
    if given.get("mount", False) or "mount" not in given:
        raise ZoneConfigError(path, "the container needs a mount namespace of its own")
    if "time" in given:
        raise ZoneConfigError(path, "time namespaces are not supported in a zone pod")
    return {
        "pid": POD if given["pid"] else OWN,
        "mount": OWN, "cgroup": OWN,
        "ipc": OWN if given.get("ipc") is False else POD,
        "uts": OWN if given.get("uts") is False else POD,
        "network": POD,      # the pod's network is the zone's workload namespace, whatever the host says
    }


# --- volumes ---------------------------------------------------------------------------------------------------

def _destination(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise ZoneConfigError(path, "expected an absolute path")
    if ".." in value.split("/"):
        raise ZoneConfigError(path, f"{value!r} must not contain '..'")
    return "/" + "/".join(part for part in value.split("/") if part)


def parse_volumes(value: Any) -> list[Volume]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ZoneConfigError("$.volumes", "expected a list")
    volumes: list[Volume] = []
    total = 0
    for i, raw in enumerate(value):
        path = f"$.volumes[{i}]"
        item = _map(raw, path)
        kind = item.get("kind")
        destination = _destination(item.get("destination"), f"{path}.destination")
        if destination == "/":
            raise ZoneConfigError(f"{path}.destination", "a volume cannot replace the root")
        readonly = item.get("readonly", kind == "files")
        if not isinstance(readonly, bool):
            raise ZoneConfigError(f"{path}.readonly", "expected true or false")
        if kind == "emptydir":
            volumes.append(_emptydir(item, path, destination, readonly))
        elif kind == "files":
            volume = _files(item, path, destination, readonly)
            total += sum(len(f.data) for f in volume.files)
            volumes.append(volume)
        else:
            raise ZoneConfigError(f"{path}.kind", f"{kind!r} is not one of emptydir, files")
        unknown = sorted(set(item) - {"kind", "destination", "readonly", "name", "medium", "size", "files"})
        if unknown:
            raise ZoneConfigError(f"{path}.{unknown[0]}", "unknown field")
    if total > MAX_VOLUME_BYTES:
        raise ZoneConfigError("$.volumes", f"{total} bytes of file contents exceed {MAX_VOLUME_BYTES} per create")
    seen: dict[str, int] = {}
    for i, volume in enumerate(volumes):
        if volume.destination in seen:
            raise ZoneConfigError(f"$.volumes[{i}].destination",
                                  f"{volume.destination} is also $.volumes[{seen[volume.destination]}]'s")
        seen[volume.destination] = i
    return volumes


def _emptydir(item: dict[str, Any], path: str, destination: str, readonly: bool) -> Volume:
    from zoneinit.config.parser import NAME_RE  # the zone's one name rule

    name = item.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ZoneConfigError(f"{path}.name", f"{name!r} is not a valid volume name")
    medium = item.get("medium", "")
    if medium not in EMPTYDIR_MEDIA:
        raise ZoneConfigError(f"{path}.medium", f"{medium!r} is not one of '', 'memory'")
    size = item.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 4096):
        raise ZoneConfigError(f"{path}.size", "expected a number of bytes >= 4096")
    if size is not None and medium != "memory":
        raise ZoneConfigError(f"{path}.size", "a size limit needs medium 'memory' (its own tmpfs)")
    if item.get("files") is not None:
        raise ZoneConfigError(f"{path}.files", "an emptydir volume starts empty")
    return Volume("emptydir", destination, readonly, name=name, medium=medium, size=size)


def _files(item: dict[str, Any], path: str, destination: str, readonly: bool) -> Volume:
    entries = item.get("files")
    if not isinstance(entries, list) or not entries:
        raise ZoneConfigError(f"{path}.files", "expected a non-empty list of {path, data, mode}")
    files: list[VolumeFile] = []
    names: set[str] = set()
    for j, entry in enumerate(entries):
        entry_path = f"{path}.files[{j}]"
        entry = _map(entry, entry_path)
        relative = entry.get("path", "")
        if not isinstance(relative, str) or relative.startswith("/") or "\0" in relative or \
                ".." in relative.split("/"):
            raise ZoneConfigError(f"{entry_path}.path", "expected a relative path without '..'")
        relative = "/".join(part for part in relative.split("/") if part)
        if relative in names:
            raise ZoneConfigError(f"{entry_path}.path", f"{relative!r} is given twice")
        names.add(relative)
        data = entry.get("data", b"")
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, bytes):
            raise ZoneConfigError(f"{entry_path}.data", "expected bytes")
        mode = entry.get("mode", DEFAULT_FILE_MODE)
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise ZoneConfigError(f"{entry_path}.mode", "expected a file mode (0..0o7777)")
        unknown = sorted(set(entry) - {"path", "data", "mode"})
        if unknown:
            raise ZoneConfigError(f"{entry_path}.{unknown[0]}", "unknown field")
        files.append(VolumeFile(relative, data, mode & 0o777))   # no setuid/setgid/sticky from the host
    if "" in names and len(files) > 1:
        raise ZoneConfigError(f"{path}.files", "a file volume (path '') holds exactly one file")
    if item.get("name") is not None or item.get("medium") is not None:
        raise ZoneConfigError(path, "name and medium belong to emptydir volumes")
    return Volume("files", destination, readonly, files=tuple(files))


def _check_destinations(oci: dict[str, Any], volumes: list[Volume]) -> None:
    """A volume and an OCI kernel mount at the same place: the host asked for two things at once."""
    taken = {m["destination"].rstrip("/") or "/": i for i, m in enumerate(oci.get("mounts", []))}
    for i, volume in enumerate(volumes):
        if volume.destination in taken:
            raise ZoneConfigError(f"$.volumes[{i}].destination",
                                  f"{volume.destination} is also $.oci.mounts[{taken[volume.destination]}]")
