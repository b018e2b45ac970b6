"""Path MTU discovery against a real Linux router (RFC 1191): ``fasttcp serve http`` on a
TUN device in namespace A, which forwards (ip_forward=1 inside A only) to a veth pair of
MTU 1400 into namespace B, where curl downloads 64 MiB with timestamps on (Linux's
default). The kernel router answers each oversized DF packet with a real ICMP
fragmentation-needed; fasttcp must cut its segments to fit the 1400-byte path, options
included, or the download stalls in a black hole.

Every namespace, device, address and route is made here (pyroute2) and removed afterwards;
the only sysctl written is ip_forward inside namespace A.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
from interop_util import US, script_cmd, sha256_file
from netns_util import TUN_MARKS, temp_netns, unique_ifname, wait_until

import fasttcp as _fasttcp
from fasttcp.cli.servers import generated_body
from fasttcp.link import netns as ns

pytestmark = TUN_MARKS

CURL = shutil.which("curl")
ROUTER_B, CLIENT_B = "10.77.1.1", "10.77.1.2"     # namespace A's and B's end of the veth
PATH_MTU = 1400
FORWARD = "/proc/sys/net/ipv4/ip_forward"
CHILD_CWD = "/"
CHILD_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    [os.path.dirname(os.path.dirname(os.path.abspath(_fasttcp.__file__)))]
    + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))


def _router_and_client(a: str, b: str) -> None:
    """veth A<->B with MTU 1400, B routes fasttcp's /24 through A, A forwards."""
    from pyroute2 import IPRoute

    with IPRoute(netns=a, flags=0) as ipr:
        ipr.link("add", ifname="vr", kind="veth", peer={"ifname": "vc", "net_ns_fd": b})
        idx = ipr.link_lookup(ifname="vr")[0]
        ipr.link("set", index=idx, mtu=PATH_MTU)
        ipr.addr("add", index=idx, address=ROUTER_B, prefixlen=24)
        ipr.link("set", index=idx, state="up")
    with IPRoute(netns=b, flags=0) as ipr:
        idx = ipr.link_lookup(ifname="vc")[0]
        ipr.link("set", index=idx, mtu=PATH_MTU)
        ipr.addr("add", index=idx, address=CLIENT_B, prefixlen=24)
        ipr.link("set", index=idx, state="up")
        # curl announces MSS 1460, as a client on a 1500-byte LAN behind this 1400-byte
        # hop would (the route's advmss): only the router knows the path is smaller.
        ipr.route("add", dst="10.77.0.0/24", gateway=ROUTER_B, metrics={"advmss": 1460})
    # net.ipv4.ip_forward is per namespace: written by this thread from inside A.
    with ns.entered(a):
        with open(FORWARD, "w") as f:
            f.write("1")
        with open(FORWARD) as f:
            assert f.read().strip() == "1"


def _stats(ctl: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "fasttcp", "stats", "--control", ctl, "--json"],
                       cwd=CHILD_CWD, env=CHILD_ENV, capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
@pytest.mark.parametrize("offload", [False, True], ids=["no-offload", "offload"])
def test_curl_downloads_64mib_through_a_router_with_a_smaller_mtu(tmp_path, offload):
    size = 64 << 20
    ctl = str(tmp_path / "ctl.sock")
    out = str(tmp_path / "body")
    tun = unique_ifname("ftp")
    with open(FORWARD) as f:
        host_forward = f.read()
    with temp_netns() as a, temp_netns() as b:
        _router_and_client(a, b)
        serve = subprocess.Popen(
            [sys.executable, "-m", "fasttcp", "serve", "http", "--netns", a, "--tun", tun,
             "--size", str(size), "--duration", "150", "--control", ctl]
            + ([] if offload else ["--no-offload"]),
            cwd=CHILD_CWD, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        try:
            assert wait_until(lambda: os.path.exists(ctl) or serve.poll() is not None, 20)
            assert serve.poll() is None, serve.communicate()
            curl = subprocess.run(
                script_cmd(b, "exec", "--", CURL, "-sS", "--max-time", "100", "-o", out,
                           f"http://{US}/f"),
                capture_output=True, text=True, timeout=120)
            stats = _stats(ctl)["stats"]
        finally:
            if serve.poll() is None:
                serve.terminate()                 # SIGTERM: a clean stop
            sout, serr = serve.communicate(timeout=30)
    with open(FORWARD) as f:
        assert f.read() == host_forward           # the host's own setting untouched
    assert curl.returncode == 0, curl.stderr
    assert serve.returncode == 0, serr
    # The kernel router said "fragmentation needed" and fasttcp listened.
    assert stats.get("pmtu_updates", 0) >= 1, stats
    n, digest = sha256_file(out)
    assert n == size and digest == hashlib.sha256(generated_body(size)).hexdigest()
