"""TCP interception (Host.intercept, docs/ARCHITECTURE.md "Interception"): a host takes
TCP to addresses that are not its own inside given prefixes, any port, with the original
destination as the connection's local address; with decide=True the application accepts,
refuses or drops each flow before the handshake completes."""
from __future__ import annotations

import random
import tracemalloc

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6

from fasttcp import Host, Interceptor, PendingFlow, State
from fasttcp.link import exchange
from fasttcp.wire import TcpOptions, build_icmp_echo, build_tcp, parse

SERVER, CLIENT = "10.0.0.2", "10.0.0.1"
SERVER6, CLIENT6 = "fd00::2", "fd00::1"
SYN, ACK, RST, PSH = 0x02, 0x10, 0x04, 0x08
MASK = 0xFFFFFFFF


def _server(**kw) -> Host:
    kw.setdefault("isn_secret", bytes(16))
    h = Host([SERVER, SERVER6], **kw)
    h._raise_internal = True
    return h


def _client(**kw) -> Host:
    kw.setdefault("isn_secret", bytes(range(16)))
    h = Host([CLIENT, CLIENT6], **kw)
    h._raise_internal = True
    return h


def _syn(dst: str, dport: int, sport: int = 40000, src: str = CLIENT, isn: int = 1000) -> bytes:
    return build_tcp(src, dst, sport, dport, isn, 0, SYN, 64240, options=TcpOptions(mss=1460))


def _pump(a: Host, b: Host, now: float, rounds: int = 200, step: float = 0.001) -> float:
    """Exchange packets (and run timers) for ``rounds`` steps of ``step`` seconds."""
    for _ in range(rounds):
        exchange(a, b, now)
        now += step
    return now


def _connect(client: Host, server: Host, icpt: Interceptor, dst):
    c = client.connect(dst, now=0.0)
    exchange(client, server, 0.0)
    s = icpt.accept()
    assert s is not None and c.state == State.ESTABLISHED
    return c, s


def test_intercept_arguments() -> None:
    h = _server()
    with pytest.raises(ValueError, match="at least one prefix"):
        h.intercept([])
    with pytest.raises(ValueError, match="host bits set"):
        h.intercept(["10.99.0.1/16"])
    with pytest.raises(ValueError, match="backlog must be an int >= 1"):
        h.intercept("10.99.0.0/16", decide=True, backlog=0)
    i = h.intercept("10.99.0.0/16")
    assert isinstance(i, Interceptor) and i.prefixes == ("10.99.0.0/16",)
    assert i.backlog == h.settings.backlog
    assert h.intercept("10.98.0.0/16", decide=True).backlog == h.settings.syn_backlog


# --- decide=False: a listener for every destination in the prefixes ------------------------

def test_any_address_and_port_in_the_prefix_is_accepted_with_its_destination() -> None:
    server, client = _server(), _client()
    icpt = server.intercept(["10.99.0.0/16", "fd00:99::/64"])
    for dst in (("10.99.0.5", 8080), ("10.99.7.7", 443), ("fd00:99::7", 22)):
        c, s = _connect(client, server, icpt, dst)
        assert s.local_address[:2] == dst and c.remote_address[:2] == dst
        assert s.remote_address == c.local_address
        c.send(b"to " + dst[0].encode())
        s.send(b"from " + dst[0].encode())
        exchange(client, server, 0.1)
        assert s.recv() == b"to " + dst[0].encode()
        assert c.recv() == b"from " + dst[0].encode()
    assert s.local_address == ("fd00:99::7", 22, 0, 0)
    assert server.stats()["intercepted_packets"] > 0


def test_outside_the_prefix_is_not_for_us_and_own_addresses_keep_their_listeners() -> None:
    server = _server()
    icpt = server.intercept("10.99.0.0/16")
    server.receive([_syn("10.98.0.5", 80)], 0.0)
    assert server.transmit(0.0) == [] and server.stats()["drop_not_for_us"] == 1
    # Our own address with no listener: a closed port (RST), not intercepted.
    server.receive([_syn(SERVER, 80)], 0.0)
    (rst,) = [parse(p) for p in server.transmit(0.0)]
    assert rst.flag_bits == RST | ACK and rst.src == SERVER
    assert icpt.accept() is None and "intercepted_packets" not in server.stats()


def test_pop_ready_reports_the_interceptor() -> None:
    server, client = _server(), _client()
    icpt = server.intercept("10.99.0.0/16")
    server.pop_ready()
    client.connect(("10.99.0.5", 80), now=0.0)
    exchange(client, server, 0.0)
    assert icpt in server.pop_ready() and icpt.accept() is not None


def test_same_client_port_to_two_destinations_is_two_connections() -> None:
    server = _server()
    icpt = server.intercept("10.99.0.0/16")
    sas = {}
    for dst in ("10.99.0.5", "10.99.0.6"):
        server.receive([_syn(dst, 80, sport=5555)], 0.0)
        (sa,) = [parse(p) for p in server.transmit(0.0)]
        assert sa.flag_bits == SYN | ACK and sa.src == dst and sa.dport == 5555
        sas[dst] = sa
    for dst, sa in sas.items():
        server.receive([build_tcp(CLIENT, dst, 5555, 80, 1001, (sa.seq + 1) & MASK,
                                  ACK | PSH, 64240, dst.encode())], 0.1)
    got = {}
    while (conn := icpt.accept()) is not None:
        got[conn.local_address] = conn.recv()
    assert got == {("10.99.0.5", 80): b"10.99.0.5", ("10.99.0.6", 80): b"10.99.0.6"}
    # Each has its own ISN: the RFC 6528 hash covers the real destination.
    assert sas["10.99.0.5"].seq != sas["10.99.0.6"].seq


def test_segment_without_connection_to_an_intercepted_address_gets_a_rst() -> None:
    server = _server()
    server.intercept("10.99.0.0/16")
    server.receive([build_tcp(CLIENT, "10.99.0.5", 4000, 80, 7, 1234, ACK, 100)], 0.0)
    (rst,) = [parse(p) for p in server.transmit(0.0)]
    # RFC 9293 3.10.7.1: <SEQ=SEG.ACK><CTL=RST>, from the intercepted address.
    assert (rst.flag_bits, rst.seq, rst.src, rst.dst) == (RST, 1234, "10.99.0.5", CLIENT)
    server.receive([build_tcp(CLIENT, "10.99.0.5", 4000, 80, 7, 0, RST, 100)], 0.0)
    assert server.transmit(0.0) == []


def test_close_stops_intercepting_and_established_connections_live_on() -> None:
    server, client = _server(), _client()
    icpt = server.intercept("10.99.0.0/16")
    c, s = _connect(client, server, icpt, ("10.99.0.5", 80))
    icpt.close()
    assert server.intercept("10.98.0.0/16") is not None     # another one stays
    c.send(b"still here")
    exchange(client, server, 0.1)
    assert s.recv() == b"still here"
    s.send(b"yes")
    exchange(client, server, 0.2)
    assert c.recv() == b"yes"
    # A new SYN to the old prefix: the address is no longer taken (not ours).
    server.receive([_syn("10.99.0.9", 80)], 0.3)
    assert server.transmit(0.3) == [] and server.stats()["drop_not_for_us"] == 1


def test_intercepted_bulk_transfer_takes_the_fast_path() -> None:
    server, client = _server(), _client()
    icpt = server.intercept("10.99.0.0/16")
    c, s = _connect(client, server, icpt, ("10.99.0.5", 8080))
    data = random.Random(3).randbytes(2_000_000)
    got = bytearray()
    sent = 0
    now = 0.0
    for _ in range(20000):
        if sent < len(data):
            sent += c.send(data[sent:sent + 65536])
        exchange(client, server, now)
        got += s.recv()
        now += 0.001
        if len(got) == len(data):
            break
    assert bytes(got) == data
    st = server.stats()
    assert st["fast_path_segments"] > 0.9 * (len(data) // 1460)


def test_ipv6_intercept_with_exact_segments() -> None:
    server = _server(timestamps=False, sack=False, window_scaling=False)
    icpt = server.intercept("fd00:99::/64")
    syn = IPv6(src=CLIENT6, dst="fd00:99::abcd") / TCP(sport=41000, dport=443, flags="S",
                                                      seq=500, options=[("MSS", 1440)])
    server.receive([bytes(syn)], 0.0)
    (sa,) = server.transmit(0.0)
    p = IPv6(sa)
    assert p.src == "fd00:99::abcd" and p.dst == CLIENT6
    assert p[TCP].flags == "SA" and p[TCP].ack == 501 and p[TCP].sport == 443
    ack = IPv6(src=CLIENT6, dst="fd00:99::abcd") / TCP(sport=41000, dport=443, flags="A",
                                                      seq=501, ack=p[TCP].seq + 1) / b"hi6"
    server.receive([bytes(ack)], 0.1)
    conn = icpt.accept()
    assert conn is not None and conn.local_address == ("fd00:99::abcd", 443, 0, 0)
    assert conn.recv() == b"hi6"


# --- SYN cookies under a flood to intercepted addresses -------------------------------------

def test_syn_cookies_under_an_intercept_syn_flood() -> None:
    rng = random.Random(5)
    server = _server(syn_backlog=64, backlog=1024)
    icpt = server.intercept("10.99.0.0/16")
    client = _client()
    now = 0.0
    batch = []
    for _ in range(5000):
        src = f"{rng.randrange(11, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.1"
        dst = f"10.99.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        batch.append(build_tcp(src, dst, rng.randrange(1024, 65536), rng.randrange(1, 65536),
                               rng.getrandbits(32), 0, SYN, 64240,
                               options=TcpOptions(mss=1460)))
    tracemalloc.start()
    server.receive(batch, now)
    replies = server.transmit(now)
    st = server.stats()
    assert st["syn_cookies_sent"] == 5000 - 64 and len(icpt.syn_queue) == 64
    assert len(replies) == 5000
    # Each SYN-ACK (cookie or not) comes from its SYN's own destination and port.
    answered = {(p.src, p.sport, p.dst, p.dport) for p in map(parse, replies)}
    assert answered == {(p.dst, p.dport, p.src, p.sport) for p in map(parse, batch)}
    # A real client completes its handshake on a cookie to an intercepted address.
    c = client.connect(("10.99.3.4", 8443), now=now)
    exchange(client, server, now)
    s = icpt.accept()
    assert s is not None and s.local_address == ("10.99.3.4", 8443)
    assert c.state == State.ESTABLISHED and server.stats()["syn_cookies_validated"] == 1
    # A cookie for one destination does not validate for another (the MAC covers it).
    sa = parse(replies[100])
    syn = parse(batch[100])
    forged = build_tcp(syn.src, "10.99.255.254", syn.sport, syn.dport, (syn.seq + 1) & MASK,
                       (sa.seq + 1) & MASK, ACK, 64240)
    server.receive([forged], now)
    assert server.stats()["syn_cookies_failed"] == 1
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert current < 4_000_000


# --- decide=True: PendingFlow ----------------------------------------------------------------

def test_decide_accept_completes_the_handshake() -> None:
    server, client = _server(), _client()
    icpt = server.intercept("10.99.0.0/16", decide=True)
    c = client.connect(("10.99.0.5", 8080), now=0.0)
    exchange(client, server, 0.0)
    assert c.state == State.SYN_SENT and not server.connections()   # no SYN-ACK yet
    assert icpt in server.pop_ready()
    (pf,) = icpt.pop_pending()
    assert isinstance(pf, PendingFlow) and icpt.pop_pending() == []
    assert pf.local_address == ("10.99.0.5", 8080) and pf.remote_address == c.local_address
    s = pf.accept()
    assert s.state == State.SYN_RECEIVED and s.local_address == ("10.99.0.5", 8080)
    exchange(client, server, 0.01)
    assert c.state == State.ESTABLISHED and icpt.accept() is s
    with pytest.raises(ConnectionError, match="accepted"):
        pf.accept()
    st = server.stats()
    assert st["intercept_pending"] == 1 and st["intercept_accepted"] == 1


def test_decide_refuse_sends_rst_ack_as_a_closed_port() -> None:
    server = _server()
    icpt = server.intercept("10.99.0.0/16", decide=True)
    server.receive([_syn("10.99.1.1", 443, isn=777)], 0.0)
    assert server.transmit(0.0) == []
    (pf,) = icpt.pop_pending()
    pf.refuse()
    (rst,) = server.transmit(0.0)
    p = IP(rst)
    # RFC 9293 3.10.7.1: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
    assert p.src == "10.99.1.1" and p.dst == CLIENT and p[TCP].flags == "RA"
    assert p[TCP].seq == 0 and p[TCP].ack == 778 and p[TCP].sport == 443
    assert server.stats()["intercept_refused"] == 1 and not pf.pending
    with pytest.raises(ConnectionError):
        pf.refuse()


def test_decide_refuse_reaches_a_client_as_refused() -> None:
    server, client = _server(), _client()
    icpt = server.intercept("10.99.0.0/16", decide=True)
    c = client.connect(("10.99.0.5", 8080), now=0.0)
    exchange(client, server, 0.0)
    icpt.pop_pending()[0].refuse()
    exchange(client, server, 0.0)
    assert c.state == State.CLOSED and isinstance(c.error, ConnectionRefusedError)


def test_decide_drop_then_retransmitted_syn_is_a_new_flow() -> None:
    server, client = _server(), _client()
    icpt = server.intercept("10.99.0.0/16", decide=True)
    c = client.connect(("10.99.0.5", 80), now=0.0)
    exchange(client, server, 0.0)
    (pf,) = icpt.pop_pending()
    pf.drop()
    assert server.transmit(0.0) == [] and server.stats()["intercept_dropped"] == 1
    now = _pump(client, server, 0.0, rounds=1200, step=0.001)   # the client's SYN RTO (1 s)
    (pf2,) = icpt.pop_pending()
    assert pf2 is not pf and pf2.remote_address == pf.remote_address
    pf2.accept()
    exchange(client, server, now)
    assert c.state == State.ESTABLISHED


def test_decide_retransmitted_syn_is_absorbed() -> None:
    server = _server()
    icpt = server.intercept("10.99.0.0/16", decide=True)
    for t in (0.0, 1.0, 3.0):
        server.receive([_syn("10.99.0.5", 80, isn=42)], t)
        assert server.transmit(t) == []
    assert len(icpt.pop_pending()) == 1
    assert server.stats()["intercept_syn_absorbed"] == 2


def test_decide_pending_flow_expires() -> None:
    server = _server(intercept_pending_timeout=5.0)
    icpt = server.intercept("10.99.0.0/16", decide=True)
    server.receive([_syn("10.99.0.5", 80)], 1.0)
    (pf,) = icpt.pop_pending()
    assert server.poll_at() == 6.0
    server.pop_ready()
    assert server.transmit(5.9) == [] and pf.pending
    assert server.transmit(6.0) == [] and pf.state == "expired"
    assert icpt in server.pop_ready() and server.poll_at() is None
    assert server.stats()["intercept_pending_expired"] == 1
    with pytest.raises(ConnectionError, match="expired"):
        pf.accept()
    # The next SYN retransmission is a new flow.
    server.receive([_syn("10.99.0.5", 80)], 7.0)
    assert len(icpt.pop_pending()) == 1


def test_decide_backlog_overflow_is_dropped_and_counted() -> None:
    server = _server()
    icpt = server.intercept("10.99.0.0/16", decide=True, backlog=3)
    server.receive([_syn("10.99.0.5", 80, sport=1000 + i) for i in range(5)], 0.0)
    assert len(icpt.pop_pending()) == 3 and server.transmit(0.0) == []
    assert server.stats()["intercept_pending_overflow"] == 2


def test_decide_client_reset_forgets_the_flow() -> None:
    server = _server()
    icpt = server.intercept("10.99.0.0/16", decide=True)
    server.receive([_syn("10.99.0.5", 80, isn=10)], 0.0)
    (pf,) = icpt.pop_pending()
    server.receive([build_tcp(CLIENT, "10.99.0.5", 40000, 80, 11, 0, RST, 0)], 0.1)
    assert pf.state == "reset" and server.stats()["intercept_pending_reset"] == 1
    with pytest.raises(ConnectionError, match="reset"):
        pf.accept()
    assert server.transmit(0.1) == []


# --- ICMP ----------------------------------------------------------------------------------

def test_echo_reply_from_the_intercepted_address() -> None:
    server = _server()
    server.intercept(["10.99.0.0/16", "fd00:99::/64"])
    server.receive([build_icmp_echo(CLIENT, "10.99.4.4", 7, 1, b"ping")], 0.0)
    (r,) = server.transmit(0.0)
    p = IP(r)
    assert p.src == "10.99.4.4" and p.dst == CLIENT and p[ICMP].type == 0
    assert bytes(p[ICMP].payload) == b"ping"
    req6 = IPv6(src=CLIENT6, dst="fd00:99::9") / ICMPv6EchoRequest(id=3, seq=4, data=b"p6")
    server.receive([bytes(req6)], 0.0)
    (r6,) = server.transmit(0.0)
    p6 = IPv6(r6)
    assert p6.src == "fd00:99::9" and ICMPv6EchoReply in p6 and p6[ICMPv6EchoReply].seq == 4
    assert server.stats()["intercept_echo_replies"] == 2
    # Outside the prefixes: not ours.
    server.receive([build_icmp_echo(CLIENT, "10.98.4.4", 7, 1, b"ping")], 0.0)
    assert server.transmit(0.0) == []


def test_echo_to_intercepted_addresses_can_be_turned_off() -> None:
    server = _server(intercept_echo=False)
    server.intercept("10.99.0.0/16")
    server.receive([build_icmp_echo(CLIENT, "10.99.4.4", 7, 1, b"ping")], 0.0)
    assert server.transmit(0.0) == [] and server.stats()["drop_not_for_us"] == 1
    server.receive([build_icmp_echo(CLIENT, SERVER, 7, 1, b"ping")], 0.0)
    (r,) = server.transmit(0.0)
    assert IP(r).src == SERVER


def test_icmp_error_quoting_an_intercepted_connection_reaches_it() -> None:
    server, client = _server(), _client()
    icpt = server.intercept("10.99.0.0/16")
    c, s = _connect(client, server, icpt, ("10.99.0.5", 80))
    s.send(b"x" * 1400)
    (seg,) = server.transmit(0.1)
    assert parse(seg).src == "10.99.0.5"
    # Fragmentation needed (RFC 1191) from a router on the way to the client.
    err = IP(src="10.0.0.254", dst="10.99.0.5") / ICMP(type=3, code=4, nexthopmtu=1000) / \
        IP(seg)
    server.receive([bytes(err)], 0.2)
    assert s.mss <= 1000 - 40
    assert "icmp_ignored" not in server.stats()


# --- hostile input -------------------------------------------------------------------------

def test_random_packets_into_an_intercepting_host() -> None:
    rng = random.Random(11)
    server = _server(syn_backlog=32)
    server._raise_internal = True
    server.intercept(["10.99.0.0/16", "fd00:99::/64"], decide=False)
    decide = server.intercept(["10.98.0.0/16"], decide=True, backlog=16)
    dsts = ["10.99.1.1", "10.99.200.3", "10.98.0.1", SERVER, "10.97.0.1"]
    tracemalloc.start()
    now = 0.0
    for _round in range(40):
        batch = []
        for _ in range(100):
            dst = rng.choice(dsts)
            flags = rng.getrandbits(8)
            raw = bytearray(build_tcp(f"10.5.{rng.randrange(4)}.{rng.randrange(1, 9)}", dst,
                                      rng.randrange(1, 65536) if rng.random() < 0.5 else 4000,
                                      rng.choice([80, 443, rng.randrange(1, 65536)]),
                                      rng.getrandbits(32), rng.getrandbits(32), flags,
                                      rng.getrandbits(16), rng.randbytes(rng.randrange(0, 40))))
            if rng.random() < 0.3:                # corrupt a byte (checksums catch most)
                raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            batch.append(bytes(raw))
        server.receive(batch, now)
        server.transmit(now)
        for pf in decide.pop_pending():
            rng.choice([pf.accept, pf.refuse, pf.drop, lambda: None])()
        now += 0.5
    server.transmit(now + 100)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    st = server.stats()
    assert "drop_internal_error" not in st
    assert st["intercepted_packets"] > 0 and current < 8_000_000
    assert len(decide._pending) <= 16


def test_decide_accept_and_refuse_of_a_syn_with_an_offloaded_checksum() -> None:
    """A TUN with offloads hands over SYNs whose TCP checksum is partial (parse_flags 1:
    verified by the link); the pending flow keeps that SYN and must still answer it."""
    server = _server()
    icpt = server.intercept("10.99.0.0/16", decide=True)
    bad = bytearray(_syn("10.99.0.5", 80, sport=1111, isn=5))
    bad[36] ^= 0xFF                                  # the TCP checksum (IPv4, 20-byte IP)
    bad2 = bytearray(_syn("10.99.0.5", 80, sport=2222, isn=9))
    bad2[36] ^= 0xFF
    server.receive([bytes(bad), bytes(bad2)], 0.0, parse_flags=1)
    first, second = icpt.pop_pending()
    first.accept()
    second.refuse()
    sa, rst = sorted((parse(p) for p in server.transmit(0.0)), key=lambda p: p.dport)
    assert sa.flag_bits == SYN | ACK and sa.ack == 6 and sa.dport == 1111
    assert rst.flag_bits == RST | ACK and rst.ack == 10 and rst.dport == 2222


def test_a_time_wait_syn_to_a_closed_interceptor_address_is_not_taken_by_a_listener() -> None:
    """After close(), a connection's 4-tuple is still the host's, but a wildcard listener
    on our own addresses never takes a SYN to an intercepted destination."""
    server, client = _server(msl=30.0), _client()
    server.listen(80)
    icpt = server.intercept("10.99.0.0/16")
    c, s = _connect(client, server, icpt, ("10.99.0.5", 80))
    s.close()
    exchange(client, server, 0.1)
    c.close()
    exchange(client, server, 0.2)
    assert any(r.state == State.TIME_WAIT for r in server.connections())
    icpt.close()
    syn = build_tcp(CLIENT, "10.99.0.5", c.local_address[1], 80, 123456789, 0, SYN, 64240,
                    options=TcpOptions(mss=1460))
    server.receive([syn], 1.0)
    for raw in server.transmit(1.0):
        assert not (parse(raw).flag_bits & SYN)           # no SYN-ACK from the listener
    assert server.stats()["passive_opens"] == 1


def test_passive_connections_share_the_hosts_own_address_object_in_their_key() -> None:
    """The 4-tuple key adds the local address; for the host's own addresses it is the
    host's one object (no new int or bytes per idle connection), for intercepted ones
    the destination's own."""
    server, client = _server(), _client()
    server.listen(80)
    server.intercept("10.99.0.0/16")
    for dst in (SERVER, SERVER6, "10.99.0.5"):
        client.connect((dst, 80), now=0.0)
        client.connect((dst, 80), now=0.0)
    exchange(client, server, 0.0)
    by_local: dict = {}
    for conn in server.connections():
        by_local.setdefault(conn.local_address[0], []).append(conn.key[3])
    for addr in (SERVER, SERVER6):
        a, b = by_local[addr]
        assert a is b
    a, b = by_local["10.99.0.5"]
    assert a == b == 0x0A630005


def test_max_connections_applies_to_intercepted_flows() -> None:
    server = _server(max_connections=2)
    icpt = server.intercept("10.99.0.0/16")
    server.receive([_syn("10.99.0.5", 80, sport=1000 + i) for i in range(3)], 0.0)
    answers = [parse(p) for p in server.transmit(0.0)]
    assert len(answers) == 2 and all(p.flag_bits == SYN | ACK for p in answers)
    assert server.stats()["drop_max_connections"] == 1 and len(icpt.syn_queue) == 2
    deciding = _server(max_connections=1)
    dicpt = deciding.intercept("10.99.0.0/16", decide=True)
    deciding.receive([_syn("10.99.0.5", 80, sport=1000 + i) for i in range(2)], 0.0)
    first, second = dicpt.pop_pending()
    first.accept()
    with pytest.raises(OSError, match="max_connections"):
        second.accept()
    assert second.pending                     # still pending: the application may refuse
    second.refuse()
    flags = sorted(parse(p).flag_bits for p in deciding.transmit(0.0))
    assert flags == sorted([SYN | ACK, RST | ACK])
