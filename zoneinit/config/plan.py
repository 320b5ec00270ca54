"""What PID 1 is asked to do, in its own terms: disks to verify and mount, network, containers.

The zone config (``zoneinit.config.document``, read by the one parser) is translated into a ``LaunchPlan`` by
:func:`plan_from_config`; the rest of PID 1 sees only this plan, so a schema change touches this module.
A container created over IDM becomes a ``ContainerPlan`` through :func:`container_plan` the same way.
"""

from __future__ import annotations

from collections import namedtuple

from styrolite.records import asdict, field, record
from zoneinit.network import InterfacePlan, NetworkPlan, RoutePlan

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB
if TYPE_CHECKING:
    from typing import Any

if TYPE_CHECKING:  # the plan is what PID 1 keeps; the document is read in a forked child or per request
    from zoneinit.config.document import Container, ZoneConfig
    from zoneinit.containers.podspec import Volume


@record
class DiskPlan:
    name: str                    # "root0": how containers refer to it
    device: str                  # /dev/vdc
    sha256: str | None = None    # pinned digest: verified in full before mounting (fail closed)
    size: int | None = None      # bytes of image on the device (the device may be longer)
    fstype: str | None = None    # from the superblock when absent
    owner_shift: int = 0         # owners shifted by this: containers on it get a user namespace mapping 0 -> it
    role: str = "root"           # addons, root, data: only a root disk can be a container's image
    serial: str | None = None    # hot-plugged (IDM disk.attach): the virtio serial it was found by


# A value type, cheaper for PID 1 than a dataclass; a collections.namedtuple (typing.NamedTuple's class
# syntax would import typing into PID 1):
#   name: str                         mounted at /run/zone/extensions/<name>
#   disk: str                         DiskPlan.name (verified like every disk before it is mounted)
#   kernel_releases: tuple[str, ...]  its modules are for these releases; another kernel refuses it
#   modules: tuple[str, ...]          loaded from it at boot
#   tools: bool                       bin/ and lib/ offered to zone-level exec
ExtensionPlan = namedtuple("ExtensionPlan", ("name", "disk", "kernel_releases", "modules", "tools"),
                           defaults=((), (), False))


@record
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
    # a container created over IDM for a pod (zoneinit.containers.podspec): the host's OCI config to merge
    # under the zone's policy, its volumes, and whether the host attaches to its stdio from the first byte
    oci: dict[str, Any] | None = None
    volumes: list[Volume] = field(default_factory=list)
    attach: bool = False


@record
class LaunchPlan:
    name: str = "zone"
    hostname: str | None = None
    modules: list[str] = field(default_factory=list)
    addons: str | None = None       # the name of the addons DiskPlan
    debug: bool = False
    poweroff_on_exit: bool = True   # the main container's exit powers the zone off
    shutdown_grace: float = 10.0
    exit_ack_wait: float = 10.0     # before powering off: wait this long for the host to ack the exit event
    network: NetworkPlan | None = None
    disks: list[DiskPlan] = field(default_factory=list)
    containers: list[ContainerPlan] = field(default_factory=list)
    extensions: list[ExtensionPlan] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)   # as the config has them, for zone.info
    sysctls: dict[str, str] = field(default_factory=dict)   # the pod's: written into its namespaces when made

    def main_container(self) -> ContainerPlan | None:
        for c in self.containers:
            if c.main:
                return c
        return self.containers[0] if len(self.containers) == 1 else None


def container_plan(container: Container, hostname: str | None = None) -> ContainerPlan:
    """A container definition as PID 1 runs it; ``hostname`` is the zone's, used when it names none."""
    return ContainerPlan(
        id=container.name, image=container.image, args=list(container.args), env=list(container.env),
        cwd=container.cwd, uid=container.user.uid, gid=container.user.gid,
        additional_gids=list(container.user.additional_gids), terminal=container.terminal, stdin=container.stdin,
        main=container.main, hostname=container.hostname or hostname, readonly_root=container.readonly_root,
        annotations=dict(container.annotations), memory_limit=container.limits.memory, cpus=container.limits.cpus,
        pids_limit=container.limits.pids,
    )


def plan_from_config(config: ZoneConfig) -> LaunchPlan:
    """Translate the validated zone config into a LaunchPlan."""
    hostname = config.hostname or config.name
    network = None
    if config.network is not None:
        net = config.network
        addresses = [f"{a.address}/{a.prefix}" for a in (net.ipv4, net.ipv6) if a is not None]
        routes = [RoutePlan("default", a.gateway) for a in (net.ipv4, net.ipv6) if a is not None and a.gateway]
        network = NetworkPlan(hostname=hostname, interfaces=[InterfacePlan(net.interface, addresses, net.mtu)],
                              routes=routes, nameservers=list(net.dns), search=list(net.search))
    disks = [DiskPlan(d.name, d.device, d.sha256, d.size, d.fstype, d.owner_shift, d.role) for d in config.disks]
    addons = next((d.name for d in config.disks if d.role == "addons"), None)
    options = config.options
    extensions = [ExtensionPlan(e.name, e.disk, tuple(e.kernel_releases), tuple(e.modules), e.tools)
                  for e in config.extensions]
    components = [{k: v for k, v in asdict(c).items() if v is not None} for c in config.components]
    return LaunchPlan(name=config.name, hostname=hostname, modules=list(config.modules), addons=addons,
                      debug=options.debug, poweroff_on_exit=options.poweroff_on_exit,
                      shutdown_grace=options.shutdown_grace, network=network, disks=disks,
                      containers=[container_plan(c, hostname) for c in config.containers],
                      extensions=extensions, components=components, sysctls=dict(config.sysctls))
