import json
import os
import shutil
import subprocess
import sys

import pytest

from styrolite.syscalls.fake import RecordingSyscalls
from zoneinit.network import InterfacePlan, NetworkPlan, RoutePlan, apply_hostname, hosts_file, resolv_conf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _plan():
    return NetworkPlan(
        hostname="zone1", domain="example.test",
        interfaces=[InterfacePlan("eth0", ["10.9.0.15/24", "fd00::15/64"], mtu=1400)],
        routes=[RoutePlan(gateway="10.9.0.1"), RoutePlan(gateway="fd00::1"),
                RoutePlan("192.168.77.0/24", "10.9.0.254", metric=50)],
        nameservers=["10.9.0.3", "fd00::3"], search=["example.test"], hosts={"10.9.0.7": ["db", "db.local"]},
    )


def test_name_files():
    plan = _plan()
    assert resolv_conf(plan) == "nameserver 10.9.0.3\nnameserver fd00::3\nsearch example.test\n"
    hosts = hosts_file(plan)
    assert "10.9.0.15\tzone1 zone1.example.test\n" in hosts
    assert "10.9.0.7\tdb db.local\n" in hosts and hosts.startswith("127.0.0.1\tlocalhost\n")
    assert resolv_conf(NetworkPlan()) == ""


def test_hostname_through_the_seam():
    fake = RecordingSyscalls()
    apply_hostname(_plan(), fake)
    assert fake.of("sethostname") == [("zone1",)] and fake.of("setdomainname") == [("example.test",)]


CONFIGURE = r"""
import dataclasses, json, socket, sys
from zoneinit.network import *
plan = NetworkPlan(**json.loads(sys.argv[1]))
plan.interfaces = [InterfacePlan(**i) for i in plan.interfaces]
plan.routes = [RoutePlan(**r) for r in plan.routes]
files = configure_network(plan, sys.argv[2])
configure_links(plan)  # applying it twice is harmless
print(json.dumps({"files": files, "hostname": socket.gethostname()}))
"""


@pytest.fixture
def netns():
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("unshare"):
        pytest.skip("needs root, ip(8) and unshare(1)")
    name = f"zinit{os.getpid()}"
    host_end = f"zh{os.getpid()}"[:15]
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", name],
                       check=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], check=True)


@pytest.mark.root
def test_configure_network_in_a_real_namespace(netns, tmp_path):
    plan = _plan()
    as_json = json.dumps({
        "hostname": plan.hostname, "domain": plan.domain, "nameservers": plan.nameservers, "search": plan.search,
        "hosts": plan.hosts, "interfaces": [vars(i) for i in plan.interfaces], "routes": [vars(r) for r in plan.routes],
    })
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "unshare", "--uts", sys.executable, "-c", CONFIGURE, as_json, str(tmp_path)],
        check=True, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO},
    )
    result = json.loads(out.stdout)
    assert result["hostname"] == "zone1"
    assert (tmp_path / "resolv.conf").read_text().startswith("nameserver 10.9.0.3\n")
    assert (tmp_path / "hostname").read_text() == "zone1\n"

    def ip(*args):
        return json.loads(subprocess.run(["ip", "-j", "-n", netns, *args], check=True, capture_output=True,
                                         text=True).stdout)

    links = {link["ifname"]: link for link in ip("link")}
    assert "UP" in links["lo"]["flags"] and "UP" in links["eth0"]["flags"]
    assert links["eth0"]["mtu"] == 1400
    addrs = {(a["local"], a["prefixlen"]) for link in ip("addr", "show", "eth0") for a in link["addr_info"]}
    assert {("10.9.0.15", 24), ("fd00::15", 64)} <= addrs
    routes4 = {(r["dst"], r.get("gateway"), r.get("metric")) for r in ip("route")}
    assert ("default", "10.9.0.1", None) in routes4
    assert ("192.168.77.0/24", "10.9.0.254", 50) in routes4
    routes6 = {(r["dst"], r.get("gateway")) for r in ip("-6", "route")}
    assert ("default", "fd00::1") in routes6


WORKLOAD = r"""
import json, os, subprocess, sys
from zoneinit.isolate import in_child
from zoneinit.network import *
pin = os.path.join(sys.argv[1], "netns", "workload")
plan = NetworkPlan(interfaces=[InterfacePlan("eth0", ["10.9.1.15/24"])], routes=[RoutePlan(gateway="10.9.1.1")])
in_child(create_workload_namespace, pin)
in_child(create_workload_namespace, pin)  # idempotent: the pinned namespace is kept
in_child(configure_network, plan, sys.argv[1], pin)
def links(*prefix):
    return json.loads(subprocess.run([*prefix, "ip", "-j", "addr"], check=True, capture_output=True, text=True).stdout)
print(json.dumps({"mine": links(), "workload": links("nsenter", f"--net={pin}"),
                  "same": os.stat("/proc/self/ns/net").st_ino == os.stat(pin).st_ino}))
"""


@pytest.mark.root
def test_the_nic_moves_into_a_pinned_workload_namespace(netns, tmp_path):
    """PID 1's namespace ends with no interface but a loopback; the workload one has lo up and eth0 configured."""
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "private", "--uts", sys.executable,
         "-c", WORKLOAD, str(tmp_path)],
        check=True, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO},
    )
    result = json.loads(out.stdout)
    assert result["same"] is False
    assert [link["ifname"] for link in result["mine"]] == ["lo"]
    workload = {link["ifname"]: link for link in result["workload"]}
    assert set(workload) == {"lo", "eth0"} and "UP" in workload["lo"]["flags"]
    assert ("10.9.1.15", 24) in {(a["local"], a["prefixlen"]) for a in workload["eth0"]["addr_info"]}
