"""The IPv6 test helpers against the kernel: ping -6, the kernel-side programs and curl -6
over IPv6, and the router topology that sends a real ICMPv6 Packet Too Big.

The Host does not speak IPv6 on this branch: fasttcp's side here is scapy on the TUN
link; the end-to-end tests with a fasttcp Host use these same helpers once it does.
Every namespace is made by the helpers (``netns_util.temp_netns``) and removed.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from interop_util import (KERNEL, KERNEL6, R_IN6, SERVER6, US, US6, _hostport, curl_argv,
                          family_of, hostport, http_url, ping, router_netns, script_cmd,
                          tun_netns, veth_netns)
from netns_util import TUN_MARKS, Background, sock_in

import fasttcp as _fasttcp

scapy = pytest.importorskip("scapy.all")
IPv6, UDP, TCP, Raw = scapy.IPv6, scapy.UDP, scapy.TCP, scapy.Raw

pytestmark = TUN_MARKS

CHILD_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    [os.path.dirname(os.path.dirname(os.path.abspath(_fasttcp.__file__)))]
    + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
CURL = shutil.which("curl")


def read_ipv6(link, pred, timeout: float = 5.0) -> "scapy.Packet":
    """The first IPv6 packet from the link that satisfies ``pred`` (a scapy packet)."""
    end = time.monotonic() + timeout
    for _ in range(10_000):
        for raw in link.recv_batch():
            if raw[0] >> 4 == 6:
                pkt = IPv6(bytes(raw))
                if pred(pkt):
                    return pkt
        if time.monotonic() > end:
            break
        link.wait_readable(0.05)
    raise AssertionError("expected IPv6 packet not seen")


def test_url_and_address_forms():
    assert http_url(US6, 8080, "/f") == "http://[fd77::2]:8080/f"
    assert http_url(US) == "http://10.77.0.2:80/"
    assert hostport(US6, 80) == "[fd77::2]:80" and hostport(US, 7) == "10.77.0.2:7"
    assert _hostport("[fd77::2]:80") == ("fd77::2", 80)
    assert _hostport("10.77.0.2:80") == ("10.77.0.2", 80)
    argv = curl_argv(US6, 8080, "/f", ("--max-time", "5"), curl="/x/curl")
    assert argv == ["/x/curl", "-sS", "-g", "-6", "--max-time", "5",
                    "http://[fd77::2]:8080/f"]
    assert curl_argv(US, curl="/x/curl")[3] == "-4"
    assert family_of(US6) == socket.AF_INET6 and family_of(US) == socket.AF_INET


def test_ping_both_families_across_a_veth_pair():
    """ping (ICMPv6 echo, RFC 4443 4.1, and ICMP) gets and checks each reply."""
    from interop_util import VETH_B, VETH_B6
    with veth_netns(ipv6=True) as (a, _b):
        assert len(ping(a, VETH_B6, count=3)) == 3
        assert len(ping(a, VETH_B, count=2)) == 2
        with pytest.raises(TimeoutError):
            ping(a, "fd77:1::9", count=1, timeout=0.3)              # nobody there


def test_dual_and_ipv6_tun_netns():
    """tun_netns(family="dual") gives the link both families; an echo request to
    fasttcp's IPv6 address comes up the TUN link."""
    with tun_netns(family="dual") as (ns, link):
        assert link.addresses == (US, US6) and link.kernel_addresses == (KERNEL, KERNEL6)
        # Nobody answers for fasttcp's address here (no Host): a clean TimeoutError, and
        # the echo request came up the TUN link as an ICMPv6 packet.
        with pytest.raises(TimeoutError):
            ping(ns, US6, count=1, timeout=0.3)
        req = read_ipv6(link, lambda p: p.haslayer(scapy.ICMPv6EchoRequest))
        assert (req.src, req.dst, bytes(req[scapy.ICMPv6EchoRequest].data)) == (
            KERNEL6, US6, b"fasttcp-ping")
    with tun_netns(family="ipv6") as (ns, link):
        assert link.addresses == (US6,) and link.kernel_addresses == (KERNEL6,)


def test_kernel_programs_and_curl_over_ipv6():
    """The kernel-side script over IPv6 (``--listen [ADDR]:PORT``): a sink and a sender
    across a veth pair, and curl -6 with a bracketed URL against the ``source`` server."""
    with veth_netns(ipv6=True) as (a, b):
        from interop_util import VETH_B6
        srv = subprocess.Popen(script_cmd(b, "sink", "--listen", f"[{VETH_B6}]:5001"),
                               stdout=subprocess.PIPE, text=True, env=CHILD_ENV, cwd="/")
        try:
            assert srv.stdout.readline().strip() == "ready"
            r = subprocess.run(script_cmd(a, "send", "--connect", f"[{VETH_B6}]:5001",
                                          "--bytes", str(3 << 20)),
                               capture_output=True, text=True, timeout=60, env=CHILD_ENV,
                               cwd="/")
            assert r.returncode == 0, r.stderr
            assert '"bytes": 3145728' in r.stdout
            assert srv.wait(30) == 0
        finally:
            if srv.poll() is None:
                srv.kill()
            srv.communicate(timeout=10)
        if CURL is None:
            return
        size = 200_000
        srv = subprocess.Popen(script_cmd(b, "source", "--listen", f"[{VETH_B6}]:8080",
                                          "--bytes", str(size)),
                               stdout=subprocess.PIPE, text=True, env=CHILD_ENV, cwd="/")
        try:
            assert srv.stdout.readline().strip() == "ready"
            r = subprocess.run(script_cmd(a, "exec", "--", *curl_argv(
                VETH_B6, 8080, "/x", ("--max-time", "30", "-o", "/dev/null", "-w",
                                      "%{http_code} %{size_download} %{remote_ip}"))),
                capture_output=True, text=True, timeout=60, env=CHILD_ENV, cwd="/")
            assert r.returncode == 0, r.stderr
            assert r.stdout.split() == ["200", str(size), VETH_B6]
        finally:
            if srv.poll() is None:
                srv.kill()
            srv.communicate(timeout=10)


def test_router_topology_sends_a_real_packet_too_big():
    """Through the router namespace, with its 1280-byte link to the server: a kernel
    client in the TUN namespace reaches the server; a 1200-byte packet from fasttcp's
    address (scapy on the TUN) reaches a server socket; a 1400-byte one is answered by
    the router with an ICMPv6 Packet Too Big (RFC 4443 3.2) of MTU 1280 that quotes it,
    sent back up the TUN to fasttcp's address."""
    with router_netns() as net:
        link = net.link
        assert len(ping(net.tun_ns, SERVER6, count=2)) == 2
        # A kernel TCP client across both links (its path MTU drops to 1280 on the way).
        srv = sock_in(net.server_ns, socket.AF_INET6)
        srv.bind((SERVER6, 5001))
        srv.listen(1)
        data = os.urandom(300_000)

        def serve() -> bytes:
            c, _ = srv.accept()
            c.settimeout(20)
            got = bytearray()
            while chunk := c.recv(65536):
                got += chunk
            c.close()
            return bytes(got)

        bg = Background(serve)
        cl = sock_in(net.tun_ns, socket.AF_INET6, timeout=20)
        try:
            cl.connect((SERVER6, 5001))
            cl.sendall(data)
        finally:
            cl.close()
        assert bg.join(30) == data
        srv.close()
        # fasttcp's side: raw packets from US6 on the TUN.
        u = sock_in(net.server_ns, socket.AF_INET6, socket.SOCK_DGRAM, timeout=5)
        try:
            u.bind((SERVER6, 9000))
            fits = bytes(IPv6(src=US6, dst=SERVER6) / UDP(sport=4000, dport=9000)
                         / Raw(b"f" * (1200 - 48)))
            assert len(fits) == 1200 and link.send_batch([fits]) == 1
            payload, peer = u.recvfrom(2048)
            assert payload == b"f" * 1152 and peer[0] == US6
            big = bytes(IPv6(src=US6, dst=SERVER6, hlim=64) / UDP(sport=4000, dport=9000)
                        / Raw(b"b" * (1400 - 48)))
            assert link.send_batch([big]) == 1
            ptb = read_ipv6(link, lambda p: p.haslayer(scapy.ICMPv6PacketTooBig))
            assert (ptb.src, ptb.dst) == (R_IN6, US6)
            assert ptb[scapy.ICMPv6PacketTooBig].mtu == 1280
            assert len(bytes(ptb)) <= 1280                       # RFC 4443 2.4 (c)
            quoted = ptb[scapy.ICMPv6PacketTooBig].payload      # the invoking packet
            assert quoted.src == US6 and quoted.dst == SERVER6
            assert (quoted[scapy.UDPerror].sport, quoted[scapy.UDPerror].dport) == (4000, 9000)
            # the checksum scapy recomputes over the ICMPv6 message matches the router's
            fresh = ptb.copy()
            del fresh[scapy.ICMPv6PacketTooBig].cksum
            assert IPv6(bytes(fresh))[scapy.ICMPv6PacketTooBig].cksum == \
                ptb[scapy.ICMPv6PacketTooBig].cksum
            with pytest.raises(socket.timeout):
                u.settimeout(0.2)
                u.recvfrom(2048)                                 # the big one never came
        finally:
            u.close()


def test_router_topology_is_removed_afterwards():
    from fasttcp.link import netns as ns

    with router_netns() as net:
        names = (net.tun_ns, net.router_ns, net.server_ns)
        assert all(ns.netns_exists(n) for n in names)
    assert not any(ns.netns_exists(n) for n in names)


if __name__ == "__main__":                                       # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
