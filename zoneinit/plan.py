"""What PID 1 is asked to do, in its own terms: disks to verify and mount, network, containers.

The zone config (helper-6's schema in zoneinit/zoneconfig.py, docs/zone-config.md) is translated into a
``LaunchPlan`` by ``plan_from_config``; the rest of PID 1 only sees this plan, so a schema change touches
one function. Until zoneconfig lands, ``plan_from_dict`` reads a minimal JSON document directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zoneinit.errors import ZoneInitError
from zoneinit.network import InterfacePlan, NetworkPlan, RoutePlan


@dataclass
class DiskPlan:
    name: str                    # "root0": how containers refer to it
    device: str                  # /dev/vdc
    sha256: str | None = None    # pinned digest: verified in full before mounting (fail closed)
    size: int | None = None      # bytes of image on the device (the device may be longer)
    fstype: str | None = None    # from the superblock when absent
    owner_shift: int = 0         # owners shifted by this: containers on it get a user namespace mapping 0 -> it


@dataclass
class ContainerPlan:
    id: str
    image: str | None = None     # DiskPlan.name whose file system is the container's root
    args: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    terminal: bool = False
    stdin: bool = False          # keep a pipe to its stdin (else /dev/null)
    main: bool = False           # the zone's workload: its exit is the zone's exit
    hostname: str | None = None
    readonly_root: bool = False  # the overlay upper is tmpfs either way; this only forbids writes
    annotations: dict[str, str] = field(default_factory=dict)
    memory_limit: int | None = None   # bytes
    cpus: float | None = None         # CPU quota in CPUs (1.5 = one and a half)
    pids_limit: int | None = None


@dataclass
class LaunchPlan:
    name: str = "zone"
    hostname: str | None = None
    modules: list[str] = field(default_factory=list)
    addons: str | None = None       # device of the addons image (or the name of its DiskPlan)
    idm: str | None = None
    debug: bool = False
    poweroff_on_exit: bool = True   # the main container's exit powers the zone off
    shutdown_grace: float = 10.0
    exit_ack_wait: float = 10.0     # before powering off: wait this long for the host to ack the exit event
    network: NetworkPlan | None = None
    disks: list[DiskPlan] = field(default_factory=list)
    containers: list[ContainerPlan] = field(default_factory=list)

    def disk(self, name: str) -> DiskPlan:
        for d in self.disks:
            if d.name == name:
                return d
        raise ZoneInitError(f"no disk named {name!r} in the zone config")

    def main_container(self) -> ContainerPlan | None:
        for c in self.containers:
            if c.main:
                return c
        return self.containers[0] if len(self.containers) == 1 else None


def _get(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = None, where: str = "") -> Any:
    value = doc.get(key, default)
    if value is not None and not isinstance(value, kind):
        raise ZoneInitError(f"zone config: {where}{key}: expected {getattr(kind, '__name__', kind)}")
    return value


def network_from_dict(doc: dict[str, Any]) -> NetworkPlan:
    interfaces = [InterfacePlan(name=i.get("name", "eth0"), addresses=list(i.get("addresses", [])), mtu=i.get("mtu"))
                  for i in doc.get("interfaces", [])]
    if "address" in doc:  # the short form: one address on eth0
        interfaces.append(InterfacePlan("eth0", [doc["address"]] if doc["address"] else []))
    routes = [RoutePlan(r.get("destination", "default"), r.get("gateway"), r.get("interface"), r.get("metric"))
              for r in doc.get("routes", [])]
    if doc.get("gateway"):
        routes.append(RoutePlan("default", doc["gateway"]))
    hosts = {k: list(v) for k, v in doc.get("hosts", {}).items()}
    return NetworkPlan(hostname=doc.get("hostname"), domain=doc.get("domain"), interfaces=interfaces, routes=routes,
                       nameservers=list(doc.get("nameservers", doc.get("dns", []))), search=list(doc.get("search", [])),
                       hosts=hosts)


def container_from_dict(doc: dict[str, Any], index: int = 0) -> ContainerPlan:
    where = f"containers[{index}]."
    if not isinstance(doc, dict):
        raise ZoneInitError(f"zone config: {where[:-1]}: expected an object")
    cid = _get(doc, "id", str, where=where) or _get(doc, "name", str, where=where)
    if not cid:
        raise ZoneInitError(f"zone config: {where}id: missing")
    env = doc.get("env", [])
    if isinstance(env, dict):
        env = [f"{k}={v}" for k, v in env.items()]
    # This also reads IDM container.create from the host: check every shape, so hostile input is a typed error
    user = _get(doc, "user", dict, where=where) or {}
    limits = _get(doc, "limits", dict, where=where) or {}
    args = _get(doc, "args", list, [], where) or []
    gids = user.get("additional_gids") or []
    for key, values, kind in (("args", args, str), ("env", env, str), ("user.additional_gids", gids, int)):
        if not isinstance(values, list) or not all(type(v) is kind for v in values):
            raise ZoneInitError(f"zone config: {where}{key}: expected a list of {kind.__name__}")
    ids = [user.get("uid", 0), user.get("gid", 0), *gids]
    if not all(type(v) is int and 0 <= v < 2**32 for v in ids):
        raise ZoneInitError(f"zone config: {where}user: uid/gid must be integers in [0, 2^32)")
    annotations = _get(doc, "annotations", dict, {}, where) or {}
    if not all(type(k) is str and type(v) is str for k, v in annotations.items()):
        raise ZoneInitError(f"zone config: {where}annotations: expected strings")
    for key, kinds in (("memory", (int,)), ("pids", (int,)), ("cpus", (int, float))):
        value = limits.get(key)
        if value is not None and (type(value) not in kinds or value <= 0):
            raise ZoneInitError(f"zone config: {where}limits.{key}: expected a positive number")
    return ContainerPlan(
        id=cid, image=_get(doc, "image", str, where=where), args=list(args),
        env=list(env), cwd=_get(doc, "cwd", str, "/", where), uid=user.get("uid", 0), gid=user.get("gid", 0),
        additional_gids=list(gids), terminal=bool(doc.get("terminal", False)),
        stdin=bool(doc.get("stdin", False)), main=bool(doc.get("main", False)),
        hostname=_get(doc, "hostname", str, where=where),
        readonly_root=bool(doc.get("readonly_root", False)), annotations=dict(annotations),
        memory_limit=limits.get("memory"), cpus=limits.get("cpus"), pids_limit=limits.get("pids"),
    )


def plan_from_dict(doc: Any) -> LaunchPlan:
    """The minimal local reading of a zone config document (JSON object)."""
    if not isinstance(doc, dict):
        raise ZoneInitError("zone config: expected a JSON object")
    disks = [DiskPlan(name=d["name"], device=d["device"], sha256=d.get("sha256"), size=d.get("size"),
                      fstype=d.get("fstype"), owner_shift=_get(d, "owner_shift", int, 0, "disks[].") or 0)
             for d in _get(doc, "disks", list, [])]
    containers = [container_from_dict(c, i) for i, c in enumerate(_get(doc, "containers", list, []))]
    network = doc.get("network")
    return LaunchPlan(
        name=_get(doc, "name", str, "zone"), hostname=_get(doc, "hostname", str),
        modules=list(_get(doc, "modules", list, [])),
        addons=_get(doc, "addons", str), idm=_get(doc, "idm", str), debug=bool(doc.get("debug", False)),
        poweroff_on_exit=bool(doc.get("poweroff_on_exit", True)),
        shutdown_grace=float(doc.get("shutdown_grace", 10.0)),
        exit_ack_wait=float(doc.get("exit_ack_wait", 10.0)),
        network=network_from_dict(network) if isinstance(network, dict) else None,
        disks=disks, containers=containers,
    )


def plan_from_zoneconfig(config: Any) -> LaunchPlan:
    """Translate helper-6's validated ``zoneinit.zoneconfig.ZoneConfig`` into a LaunchPlan."""
    network = None
    if config.network is not None:
        net = config.network
        addresses = [f"{a.address}/{a.prefix}" for a in (net.ipv4, net.ipv6) if a is not None]
        routes = [RoutePlan("default", a.gateway) for a in (net.ipv4, net.ipv6) if a is not None and a.gateway]
        network = NetworkPlan(hostname=config.hostname or config.name,
                              interfaces=[InterfacePlan(net.interface, addresses, net.mtu)], routes=routes,
                              nameservers=list(net.dns), search=list(net.search))
    disks = [DiskPlan(d.name, d.device, d.sha256, d.size, d.fstype, d.owner_shift) for d in config.disks]
    addons = next((d.name for d in config.disks if d.role == "addons"), None)
    containers = [
        ContainerPlan(
            id=c.name, image=c.image, args=list(c.args), env=list(c.env), cwd=c.cwd, uid=c.user.uid, gid=c.user.gid,
            additional_gids=list(c.user.additional_gids), terminal=c.terminal, stdin=c.stdin, main=c.main,
            hostname=config.hostname or config.name, memory_limit=c.limits.memory, cpus=c.limits.cpus,
            pids_limit=c.limits.pids,
        )
        for c in config.containers
    ]
    options = config.options
    return LaunchPlan(name=config.name, hostname=config.hostname or config.name, modules=list(config.modules),
                      addons=addons, debug=options.debug, poweroff_on_exit=options.poweroff_on_exit,
                      shutdown_grace=options.shutdown_grace, network=network, disks=disks, containers=containers)
