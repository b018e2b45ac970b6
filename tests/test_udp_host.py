"""Sans-IO UDP in the Host (issue 15): endpoints and intercepted flows, fasttcp to fasttcp
in virtual time (the hosts' packets are moved by hand: interception needs a wire that
delivers to any address)."""
from __future__ import annotations

import errno
from typing import List, Optional, Tuple

import pytest
from scapy.layers.inet import ICMP, IP, IPerror, UDPerror
from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6

from fasttcp import Host
from fasttcp.wire import build_icmp, build_icmpv6_error, build_udp, parse

A4, B4 = "10.0.0.1", "10.0.0.2"
A6, B6 = "fd00::1", "fd00::2"
SECRET = bytes(16)


def pair(v6: bool = False, **settings) -> Tuple[Host, Host, str, str]:
    a, b = (A6, B6) if v6 else (A4, B4)
    return (Host(a, isn_secret=SECRET, **settings), Host(b, isn_secret=SECRET, **settings),
            a, b)


def pump(x: Host, y: Host, now: float) -> List[bytes]:
    """Move what x sends to y; returns those packets."""
    out = [bytes(p) for p in x.transmit(now)]
    if out:
        y.receive(out, now)
    return out


@pytest.mark.parametrize("v6", [False, True])
def test_request_response(v6: bool) -> None:
    a, b, ia, ib = pair(v6)
    server = b.udp_bind(53)
    client = a.udp_bind()
    lo, hi = a.settings.ephemeral_ports
    assert lo <= client.port <= hi
    assert client.sendto(b"query", (ib, 53)) == 5
    pump(a, b, 1.0)
    assert server in b.pop_ready()
    data, addr = server.recvfrom()
    assert data == b"query"
    assert addr == ((ia, client.port, 0, 0) if v6 else (ia, client.port))
    server.sendto(b"answer", addr)
    pump(b, a, 1.0)
    assert client in a.pop_ready()
    assert client.recvfrom() == (b"answer", (ib, 53, 0, 0) if v6 else (ib, 53))
    assert client.recvfrom() is None
    assert b.stats()["udp_datagrams_in"] == 1 and a.stats()["udp_datagrams_out"] == 1


def test_bind_errors_and_close() -> None:
    h = Host(A4, isn_secret=SECRET)
    ep = h.udp_bind(5000)
    with pytest.raises(OSError) as e:
        h.udp_bind(5000)
    assert e.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError) as e:
        h.udp_bind(5001, address="10.9.9.9")
    assert e.value.errno == errno.EADDRNOTAVAIL
    assert ep.local_address == ("0.0.0.0", 5000)
    assert h.udp_bind(5002, address=A4).local_address == (A4, 5002)
    ep.close()
    with pytest.raises(OSError):
        ep.sendto(b"x", (B4, 1))
    assert h.udp_bind(5000).port == 5000         # free again
    # ephemeral ports differ and stay in range
    ports = {h.udp_bind().port for _ in range(200)}
    assert len(ports) == 200


def test_ephemeral_range_exhausted() -> None:
    h = Host(A4, isn_secret=SECRET, ephemeral_ports=(40000, 40003))
    got = sorted(h.udp_bind().port for _ in range(4))
    assert got == [40000, 40001, 40002, 40003]
    with pytest.raises(OSError) as e:
        h.udp_bind()
    assert e.value.errno == errno.EADDRINUSE


@pytest.mark.parametrize("v6", [False, True])
def test_closed_port_gets_port_unreachable(v6: bool) -> None:
    a, b, ia, ib = pair(v6)
    client = a.udp_bind()
    client.connect((ib, 9999))
    client.sendto(b"hello?")
    back = pump(a, b, 1.0)
    assert len(back) == 1
    replies = pump(b, a, 1.0)
    assert len(replies) == 1
    if v6:
        ic = IPv6(replies[0])
        assert ic.haslayer(ICMPv6DestUnreach) and ic[ICMPv6DestUnreach].code == 4
    else:
        ic = IP(replies[0])
        assert (ic[ICMP].type, ic[ICMP].code) == (3, 3)
        assert ic[IPerror].src == ia and ic[UDPerror].dport == 9999
        assert bytes(ic[UDPerror].payload) == b"hello?"
    assert b.stats()["udp_no_port"] == 1
    assert b.stats()["icmp_port_unreachables_out"] == 1
    # the connected endpoint gets ECONNREFUSED (Linux), once
    assert client in a.pop_ready()
    with pytest.raises(ConnectionRefusedError):
        client.recvfrom()
    assert client.recvfrom() is None


def test_unconnected_endpoint_ignores_icmp_error() -> None:
    a, b, ia, ib = pair()
    client = a.udp_bind()
    client.sendto(b"x", (ib, 9999))
    pump(a, b, 1.0)
    pump(b, a, 1.0)
    assert client.error is None and client.recvfrom() is None
    assert a.stats()["icmp_ignored"] == 1


def test_port_unreachable_rate_limited() -> None:
    h = Host(A4, isn_secret=SECRET, icmp_error_rate=100)
    pkts = [build_udp(B4, A4, 1000 + i, 7, b"x") for i in range(80)]
    h.receive(pkts, 1.0)
    assert len(h.transmit(1.0)) == 50                  # Linux's burst
    assert h.stats()["icmp_errors_rate_limited"] == 30
    h.receive(pkts[:20], 1.1)                          # 0.1 s at 100/s: 10 tokens
    assert len(h.transmit(1.1)) == 10
    off = Host(A4, isn_secret=SECRET, icmp_error_rate=0)
    off.receive(pkts, 1.0)
    assert off.transmit(1.0) == [] and off.stats()["udp_no_port"] == 80


def test_connect_filters_sources() -> None:
    h = Host(A4, isn_secret=SECRET)
    ep = h.udp_bind(5000)
    ep.connect((B4, 53))
    assert ep.remote_address == (B4, 53)
    h.receive([build_udp(B4, A4, 53, 5000, b"ok"), build_udp(B4, A4, 54, 5000, b"other"),
               build_udp("10.0.0.3", A4, 53, 5000, b"other")], 1.0)
    assert ep.recvfrom() == (b"ok", (B4, 53))
    assert ep.recvfrom() is None
    assert h.stats()["udp_no_port"] == 2


def test_receive_buffer_bounded() -> None:
    h = Host(A4, isn_secret=SECRET, udp_rcvbuf=1000)
    ep = h.udp_bind(5000)
    h.receive([build_udp(B4, A4, 1, 5000, bytes(300)) for _ in range(5)], 1.0)
    assert ep.pending() == 3
    assert h.stats()["udp_rcvbuf_errors"] == 2
    ep.recvfrom()
    h.receive([build_udp(B4, A4, 1, 5000, bytes(300))], 1.0)
    assert ep.pending() == 3


@pytest.mark.parametrize("v6", [False, True])
def test_large_datagram_fragmented_both_ways(v6: bool) -> None:
    a, b, ia, ib = pair(v6, mtu=1500)
    server = b.udp_bind(7)
    client = a.udp_bind()
    big = bytes(range(256)) * 16 + b"tail"
    client.sendto(big, (ib, 7))
    sent = pump(a, b, 1.0)
    assert len(sent) == 3 and all(len(p) <= 1500 for p in sent)
    data, addr = server.recvfrom()
    assert data == big
    server.sendto(data[::-1], addr)
    pump(b, a, 1.0)
    assert client.recvfrom()[0] == big[::-1]


# --- interception ---------------------------------------------------------------------------

DST4, DST6 = "10.99.0.5", "fd00:99::5"


@pytest.mark.parametrize("v6", [False, True])
def test_intercepted_flow(v6: bool) -> None:
    client_h, relay, ic, _ = pair(v6)
    dst = DST6 if v6 else DST4
    ui = relay.intercept_udp(["10.99.0.0/16", "fd00:99::/64"])
    assert ui.prefixes == ("10.99.0.0/16", "fd00:99::/64")
    c = client_h.udp_bind(4444)
    c.sendto(b"dns?", (dst, 53))
    c.sendto(b"again", (dst, 53))
    pump(client_h, relay, 1.0)
    assert ui in relay.pop_ready()
    flow = ui.accept()
    assert ui.accept() is None
    assert flow.local_address == ((dst, 53, 0, 0) if v6 else (dst, 53))
    assert flow.remote_address == ((ic, 4444, 0, 0) if v6 else (ic, 4444))
    assert (flow.recv(), flow.recv(), flow.recv()) == (b"dns?", b"again", None)
    flow.send(b"dns!")
    out = pump(relay, client_h, 1.0)
    assert parse(out[0]).src == dst                     # from the original destination
    assert c.recvfrom() == (b"dns!", (dst, 53, 0, 0) if v6 else (dst, 53))
    # a second destination is a second flow; the same 4-tuple is the same flow
    c.sendto(b"x", (dst, 54))
    pump(client_h, relay, 1.1)
    f2 = ui.accept()
    assert f2 is not None and f2 is not flow and f2.local_address[1] == 54
    assert relay.stats()["udp_flows_opened"] == 2


def test_not_intercepted_is_not_for_us() -> None:
    h = Host(A4, isn_secret=SECRET)
    h.intercept_udp(["10.99.0.0/16"])
    h.receive([build_udp(B4, "10.98.0.1", 1, 53, b"x")], 1.0)
    assert h.stats()["drop_not_for_us"] == 1 and h.transmit(1.0) == []


def test_udp_prefixes_are_tcps() -> None:
    """intercept_udp takes its prefixes as Host.intercept does (one C PrefixSet): a prefix
    with host bits set is refused (as ``ip route``), an address alone is one host."""
    h = Host(A4, isn_secret=SECRET)
    with pytest.raises(ValueError, match="host bits"):
        h.intercept_udp(["10.99.0.5/16"])
    with pytest.raises(ValueError, match="host bits"):
        h.intercept("10.99.0.5/16")
    ui = h.intercept_udp(["10.99.0.5", "fd00:99::/64"])
    assert ui.prefixes == ("10.99.0.5/32", "fd00:99::/64")
    h.receive([build_udp(B4, "10.99.0.6", 1, 53, b"x"),
               build_udp(B4, "10.99.0.5", 1, 53, b"y")], 1.0)
    flow = ui.accept()
    assert flow.local_address == ("10.99.0.5", 53) and ui.accept() is None
    assert h.stats()["drop_not_for_us"] == 1


def test_flow_cap_and_idle_expiry() -> None:
    h = Host(A4, isn_secret=SECRET)
    ui = h.intercept_udp(["0.0.0.0/0"], idle_timeout=30, max_flows=2)
    h.receive([build_udp(B4, DST4, p, 53, b"q") for p in (1, 2, 3)], 1.0)
    f1, f2 = ui.accept(), ui.accept()
    assert ui.accept() is None and h.stats()["drop_udp_flow_limit"] == 1
    assert h.poll_at() == 31.0
    h.receive([build_udp(B4, DST4, 1, 53, b"keep")], 20.0)    # f1 active again
    h.transmit(31.0)
    assert f2.closed and not f1.closed
    assert f2 in h.pop_ready()
    assert h.poll_at() == 50.0
    h.receive([build_udp(B4, DST4, 3, 53, b"now room")], 32.0)
    f3 = ui.accept()
    assert f3 is not None and f3.recv() == b"now room"
    h.transmit(50.0)
    assert f1.closed and h.stats()["udp_flows_expired"] == 2
    f3.close()
    assert ui.flows == 0
    ui.close()
    h.receive([build_udp(B4, DST4, 9, 53, b"q")], 60.0)
    assert ui.accept() is None and h.stats()["drop_not_for_us"] == 1


def test_default_flow_settings() -> None:
    h = Host(A4, isn_secret=SECRET, max_udp_flows=1, udp_idle_timeout=5.0)
    ui = h.intercept_udp("10.99.0.0/16")
    assert (ui.max_flows, ui.idle_timeout) == (1, 5.0)


@pytest.mark.parametrize("v6", [False, True])
def test_flow_unreachable_quotes_last_datagram(v6: bool) -> None:
    h = Host(B6 if v6 else B4, isn_secret=SECRET)
    ui = h.intercept_udp(["10.99.0.0/16", "fd00:99::/64"])
    src, dst = (A6, DST6) if v6 else (A4, DST4)
    dgram = build_udp(src, dst, 4444, 53, bytes(3000) if v6 else bytes(1000), df=True)
    h.receive([dgram], 1.0)
    flow = ui.accept()
    flow.unreachable(4 if v6 else 3)
    (icmp,) = h.transmit(1.0)
    if v6:
        p = IPv6(icmp)
        assert len(icmp) == 1280 and p.src == dst and p.dst == src
        assert (p[ICMPv6DestUnreach].type, p[ICMPv6DestUnreach].code) == (1, 4)
        assert bytes(icmp)[48:] == dgram[:1280 - 48]
    else:
        p = IP(icmp)
        assert len(icmp) == 576 and p.src == dst and p.dst == src
        assert (p[ICMP].type, p[ICMP].code) == (3, 3)
        assert bytes(icmp)[28:] == dgram[:548]
        assert p[UDPerror].sport == 4444
    with pytest.raises(ValueError):
        flow.unreachable(99)


def test_fasttcp_client_sees_flow_unreachable_as_refused() -> None:
    """The whole loop: a connected fasttcp endpoint, an intercepted flow that answers
    port unreachable, ECONNREFUSED at the client."""
    client_h, relay, _, _ = pair()
    ui = relay.intercept_udp(["10.99.0.0/16"])
    c = client_h.udp_bind()
    c.connect((DST4, 53))
    c.sendto(b"q")
    pump(client_h, relay, 1.0)
    ui.accept().unreachable(3)
    pump(relay, client_h, 1.0)
    with pytest.raises(ConnectionRefusedError):
        c.recvfrom()


def _icmp_err(v6: bool, src: str, dst: str, quoted: bytes, code: Optional[int] = None,
              t: Optional[int] = None) -> bytes:
    """An ICMP (type 3) / ICMPv6 (type 1) error from ``src`` to ``dst`` quoting ``quoted``."""
    if v6:
        return build_icmpv6_error(src, dst, 1 if t is None else t, 4 if code is None else code,
                                  quoted)
    return build_icmp(src, dst, 3 if t is None else t, 3 if code is None else code, 0, quoted)


def _one_flow(v6: bool):
    """A relay intercepting 10.99.0.0/16 and fd00:99::/64, and one flow in it: the client
    endpoint on port 4444 sent b"q" to DST:53. Returns (client host, relay, client
    address, DST, the UdpInterceptor, the client endpoint, the flow)."""
    client_h, relay, ic, _ = pair(v6)
    dst = DST6 if v6 else DST4
    ui = relay.intercept_udp(["10.99.0.0/16", "fd00:99::/64"])
    c = client_h.udp_bind(4444)
    c.sendto(b"q", (dst, 53))
    pump(client_h, relay, 1.0)
    flow = ui.accept()
    relay.pop_ready()
    return client_h, relay, ic, dst, ui, c, flow


@pytest.mark.parametrize("v6", [False, True])
def test_client_icmp_error_reaches_intercepted_flow(v6: bool) -> None:
    """The client's port unreachable about a flow's reply (from the original destination)
    becomes the flow's pending error, once (as Linux's __udp4_lib_err for the socket that
    sent the quoted datagram); the flow stays open. Only UDP is intercepted: ICMP errors
    to a non-own address still get through Host._intercepted."""
    client_h, relay, ic, dst, ui, c, flow = _one_flow(v6)
    assert flow.recv() == b"q"
    c.close()                                  # the client's port is closed now
    flow.send(b"late answer")
    pump(relay, client_h, 1.1)
    (err,) = pump(client_h, relay, 1.1)        # the client's kernel: port unreachable
    assert parse(err).dst == dst
    st = relay.stats()
    assert st["udp_icmp_errors"] == 1 and st.get("icmp_ignored", 0) == 0
    assert flow in relay.pop_ready()
    assert isinstance(flow.error, ConnectionRefusedError)
    assert not flow.closed and relay._udp.flows
    with pytest.raises(ConnectionRefusedError):
        flow.recv()
    assert flow.error is None and flow.recv() is None
    # raised by send() too, once, and the datagram is not sent (as a connected socket)
    flow.send(b"again")
    pump(relay, client_h, 1.2)
    pump(client_h, relay, 1.2)
    with pytest.raises(ConnectionRefusedError):
        flow.send(b"not sent")
    assert relay.transmit(1.3) == []
    # the flow lives on: the client comes back on the same port
    c2 = client_h.udp_bind(4444)
    c2.sendto(b"back", (dst, 53))
    pump(client_h, relay, 1.4)
    assert flow.recv() == b"back" and ui.accept() is None
    flow.send(b"hi")
    pump(relay, client_h, 1.5)
    assert c2.recvfrom() == (b"hi", (dst, 53, 0, 0) if v6 else (dst, 53))


@pytest.mark.parametrize("v6", [False, True])
def test_icmp_error_unknown_or_spoofed_flow_ignored(v6: bool) -> None:
    """ICMP errors quoting no flow's datagram, sent to an address other than the quoted
    source, or bringing path-MTU news leave the flow alone and count icmp_ignored."""
    client_h, relay, ic, dst, ui, c, flow = _one_flow(v6)
    other = "fd00:99::6" if v6 else "10.99.0.6"
    bad = [
        _icmp_err(v6, ic, dst, build_udp(dst, ic, 53, 4445, b"x")),     # another port
        _icmp_err(v6, ic, dst, build_udp(dst, ic, 54, 4444, b"x")),     # no such flow
        _icmp_err(v6, ic, other, build_udp(dst, ic, 53, 4444, b"x")),   # to another address
        _icmp_err(v6, ic, other, build_udp(other, ic, 53, 4444, b"x")),  # no flow of it
        # path MTU news (frag needed / Packet Too Big) is ignored as for endpoints
        _icmp_err(v6, ic, dst, build_udp(dst, ic, 53, 4444, b"x"), code=0 if v6 else 4,
                  t=2 if v6 else 3),
    ]
    relay.receive(bad, 1.1)
    st = relay.stats()
    assert st["icmp_ignored"] == len(bad) and st.get("udp_icmp_errors", 0) == 0
    assert flow.error is None and flow not in relay.pop_ready() and not flow.closed
    assert relay.transmit(1.1) == []
    # the genuine one is taken
    relay.receive([_icmp_err(v6, ic, dst, build_udp(dst, ic, 53, 4444, b"x"))], 1.2)
    assert relay.stats()["udp_icmp_errors"] == 1
    assert isinstance(flow.error, ConnectionRefusedError)


def test_icmp_error_to_non_own_address_without_interception() -> None:
    """A host that intercepts nothing still drops ICMP to addresses not its own."""
    h = Host(A4, isn_secret=SECRET)
    h.receive([_icmp_err(False, B4, DST4, build_udp(DST4, B4, 53, 4444, b"x"))], 1.0)
    assert h.stats()["drop_not_for_us"] == 1 and h.stats().get("icmp_ignored", 0) == 0
