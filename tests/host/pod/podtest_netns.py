"""Throw-away network namespaces and a pod network made by the real CNI plugins (helpers for conftest.py
and the tests; a module of its own because every test directory has a ``conftest``).

``cni_pod`` runs Debian's containernetworking-plugins (loopback, bridge + host-local) the way containerd does
(CNI_COMMAND=ADD, the conf on stdin), from inside a private "node" namespace so the bridge never lands in
the machine's own namespace, with host-local's state in the test's temp dir. Every namespace, bridge and
lease is removed afterwards (CNI DEL, then the namespaces).
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CNI_BIN = Path(os.environ.get("CNI_PATH", "/usr/lib/cni"))
NETNS_DIR = Path("/var/run/netns")


def unique(prefix: str) -> str:
    """A short name no other run (or helper) on this machine uses: prefix + pid + random."""
    return f"{prefix}{os.getpid() % 10000}{secrets.token_hex(2)}"


def ip_netns(*args: str) -> None:
    subprocess.run(["ip", "netns", *args], check=True, capture_output=True)


@contextmanager
def netns_pool() -> Iterator[Callable[[str], Path]]:
    """make(prefix) -> /var/run/netns/<unique name>; all deleted when the block ends."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    made: list[str] = []

    def make(prefix: str = "zpt") -> Path:
        name = unique(prefix)
        ip_netns("add", name)
        made.append(name)
        return NETNS_DIR / name

    try:
        yield make
    finally:
        for name in reversed(made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@dataclass
class CniPod:
    netns: Path          # the pod namespace (what containerd hands the shim)
    node: Path           # the "node" namespace holding the CNI bridge
    ip: str
    prefix: int
    gateway: str
    mtu: int
    bridge: str
    source: str          # "cni" or "pyroute2" (plugins not installed)


def _cni(plugin: str, command: str, conf: dict, pod: Path, node: Path, container_id: str) -> dict:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": str(pod),
           "CNI_IFNAME": "eth0", "CNI_PATH": str(CNI_BIN), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = subprocess.run(["nsenter", f"--net={node}", str(CNI_BIN / plugin)], input=json.dumps(conf).encode(),
                            env=env, capture_output=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"CNI {plugin} {command}: {result.stdout.decode()} {result.stderr.decode()}")
    return json.loads(result.stdout or b"{}")


def _pyroute2_pod(pod: Path, node: Path, bridge: str, subnet: ipaddress.IPv4Network, mtu: int) -> CniPod:
    """What the bridge plugin would make, made by hand (only when the plugins are not installed)."""
    from pyroute2 import IPRoute

    from host.pod.netns import run_in_netns

    gateway, address = str(subnet[1]), str(subnet[2])
    host_end = unique("vh")

    def in_node() -> None:
        with IPRoute() as ipr:
            ipr.link("add", ifname=bridge, kind="bridge")
            br = ipr.link_lookup(ifname=bridge)[0]
            ipr.addr("add", index=br, address=gateway, prefixlen=subnet.prefixlen)
            fd = os.open(pod, os.O_RDONLY)
            try:
                ipr.link("add", ifname=host_end, kind="veth", peer={"ifname": "eth0", "net_ns_fd": fd})
            finally:
                os.close(fd)
            end = ipr.link_lookup(ifname=host_end)[0]
            ipr.link("set", index=end, master=br, mtu=mtu, state="up")
            ipr.link("set", index=br, mtu=mtu, state="up")

    def in_pod() -> None:
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            ipr.link("set", index=eth0, mtu=mtu, state="up")
            ipr.addr("add", index=eth0, address=address, prefixlen=subnet.prefixlen)
            ipr.route("add", dst="0.0.0.0/0", gateway=gateway)

    run_in_netns(node, in_node)
    run_in_netns(pod, in_pod)
    return CniPod(pod, node, address, subnet.prefixlen, gateway, mtu, bridge, "pyroute2")


@contextmanager
def cni_network(make_netns: Callable[[str], Path], workdir: Path) -> Iterator[CniPod]:
    """A node namespace with a CNI bridge and a pod namespace attached to it (CNI ADD ... CNI DEL)."""
    node, pod = make_netns("zptnode"), make_netns("zptpod")
    bridge = unique("zbr")
    subnet = ipaddress.ip_network(f"10.{random.randint(64, 127)}.{random.randint(0, 255)}.0/24")
    mtu = 1400
    container_id = secrets.token_hex(16)
    bridge_conf = {"cniVersion": "1.0.0", "name": unique("zptnet"), "type": "bridge", "bridge": bridge,
                   "isGateway": True, "ipMasq": False, "mtu": mtu,
                   "ipam": {"type": "host-local", "ranges": [[{"subnet": str(subnet)}]],
                            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(workdir / "cni-ipam")}}
    loopback_conf = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}
    if not (CNI_BIN / "bridge").exists():
        yield _pyroute2_pod(pod, node, bridge, subnet, mtu)
        return
    _cni("loopback", "ADD", loopback_conf, pod, node, container_id)
    try:
        result = _cni("bridge", "ADD", bridge_conf, pod, node, container_id)
        cidr = ipaddress.ip_interface(result["ips"][0]["address"])
        yield CniPod(pod, node, str(cidr.ip), cidr.network.prefixlen, result["ips"][0]["gateway"], mtu, bridge,
                     "cni")
    finally:
        for plugin, conf in (("bridge", bridge_conf), ("loopback", loopback_conf)):
            try:
                _cni(plugin, "DEL", conf, pod, node, container_id)
            except RuntimeError as e:
                print(f"cleanup: {e}", file=sys.stderr)
