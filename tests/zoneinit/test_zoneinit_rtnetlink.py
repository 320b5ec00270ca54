"""zoneinit.rtnetlink against the real kernel, in a throw-away network namespace (``unshare --net``)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = r"""
import errno, json, subprocess
from zoneinit.rtnetlink import NetlinkError, RtNetlink

def ip(*args):
    return json.loads(subprocess.run(["ip", "-j", *args], check=True, capture_output=True, text=True).stdout)

subprocess.run(["ip", "link", "add", "dummy0", "type", "veth", "peer", "name", "peer0"], check=True)
result = {}
with RtNetlink() as nl:
    index = nl.link_index("dummy0")
    result["missing"] = nl.link_index("nonesuch0")
    nl.set_link(nl.link_index("lo"), up=True)
    nl.set_link(index, mtu=1280, up=True)
    nl.add_address(index, "10.7.0.2", 24)
    nl.add_address(index, "fd07::2", 64, nodad=True)
    nl.add_route("0.0.0.0/0", gateway="10.7.0.1", oif=index)
    nl.add_route("192.168.70.0/24", gateway="10.7.0.254", metric=40)
    nl.add_route("::/0", gateway="fd07::1")
    nl.add_route("10.8.0.0/16", oif=index)
    try:
        nl.add_address(index, "10.7.0.2", 24)
    except NetlinkError as e:
        result["again"] = [e.errno == errno.EEXIST, str(e)]
    try:
        nl.set_link(99999, up=True)
    except NetlinkError as e:
        result["no_such_link"] = [e.errno, str(e)]
    try:
        nl.add_route("10.9.0.0/16", gateway="fd07::1")
    except ValueError as e:
        result["families"] = str(e)
link = ip("link", "show", "dummy0")[0]
result["link"] = {"mtu": link["mtu"], "up": "UP" in link["flags"]}
result["addrs"] = sorted([a["local"], a["prefixlen"]] for a in ip("addr", "show", "dummy0")[0]["addr_info"]
                         if a["scope"] == "global")
result["v6flags"] = [a.get("nodad", False) for a in ip("addr", "show", "dummy0")[0]["addr_info"]
                     if a["local"] == "fd07::2"]
result["routes"] = sorted([r["dst"], r.get("gateway"), r.get("metric"), r.get("scope")] for r in ip("route"))
result["routes6"] = [[r["dst"], r.get("gateway")] for r in ip("-6", "route") if r["dst"] == "default"]
print(json.dumps(result))
"""


@pytest.mark.root
def test_links_addresses_and_routes_in_a_real_namespace():
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("unshare"):
        pytest.skip("needs root, ip(8) and unshare(1)")
    out = subprocess.run(["unshare", "--net", sys.executable, "-c", SCRIPT], check=True, capture_output=True,
                         text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    result = json.loads(out.stdout)
    assert result["missing"] is None
    assert result["link"] == {"mtu": 1280, "up": True}
    assert result["addrs"] == [["10.7.0.2", 24], ["fd07::2", 64]]
    assert result["v6flags"] == [True]
    assert ["default", "10.7.0.1", None, None] in result["routes"]
    assert ["192.168.70.0/24", "10.7.0.254", 40, None] in result["routes"]
    assert ["10.8.0.0/16", None, None, "link"] in result["routes"]
    assert result["routes6"] == [["default", "fd07::1"]]
    exists, message = result["again"]
    assert exists and message.startswith("[Errno 17] add address 10.7.0.2/24")
    assert result["no_such_link"][0] == 19 and "set link 99999" in result["no_such_link"][1]
    assert "another address family" in result["families"]
