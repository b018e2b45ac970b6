"""IPv6 fragments (RFC 8200 4.5) and ICMPv6 (RFC 4443, RFC 8201) in the host, issue 14:
reassembly of scapy-built fragments with the IPv4 limits, overlaps dropped whole (RFC
5722), atomic fragments taken at once (RFC 6946); Packet Too Big lowering the path MTU
(never below 1280) over a NetSim with a 1280-byte hop; destination unreachable as a hard
or soft error."""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import TCP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    fragment6,
)
from scapy.packet import Raw

from fasttcp import ConnectionRefused, Host, State
from fasttcp.host._frag import FragmentReassembler
from fasttcp.link import FaultConfig, NetSim, exchange
from fasttcp.wire import build_icmpv6_error, build_tcp, parse

A6, B6, ROUTER6 = "fd00::1", "fd00::2", "fd00::fe"


def _frags(pkt, size: int, ident: int = 7) -> list[bytes]:
    """scapy's fragments of `pkt` (which carries an IPv6ExtHdrFragment) at `size`."""
    return [bytes(f) for f in fragment6(pkt, size)]


def _segment(payload: bytes, *pre, ident: int = 7) -> IPv6:
    p = IPv6(src=A6, dst=B6)
    for h in pre:
        p = p / h
    return p / IPv6ExtHdrFragment(id=ident) / TCP(sport=4000, dport=80, flags="PA",
                                                   seq=1, ack=2) / Raw(payload)


# --- the reassembler --------------------------------------------------------------------------

@pytest.mark.parametrize("pre", [(), (IPv6ExtHdrHopByHop(),),
                                 (IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt())],
                         ids=["plain", "hop-by-hop", "hbh+dstopts"])
def test_reassembles_scapy_fragments_in_any_order(pre) -> None:
    payload = random.Random(1).randbytes(5000)
    frags = _frags(_segment(payload, *pre), 1280)
    assert len(frags) >= 4
    for order in range(3):
        r = FragmentReassembler()
        shuffled = frags[:]
        random.Random(order).shuffle(shuffled)
        outs = [r.add(f, 0.0) for f in shuffled]
        assert all(o is None for o in outs[:-1]) and outs[-1] is not None
        pk = parse(outs[-1])
        assert pk.version == 6 and pk.is_tcp and pk.payload == payload
        assert pk.ip_header_len == 40 + 8 * len(pre)          # per-fragment headers kept
        sc = IPv6(outs[-1])
        assert IPv6ExtHdrFragment not in sc and sc.plen == len(outs[-1]) - 40
        assert r.stats()["reassembled"] == 1 and r.held_bytes == 0


def test_overlapping_fragments_drop_the_datagram_whole() -> None:
    """RFC 5722: any overlap discards the datagram and its later fragments."""
    payload = bytes(range(256)) * 12
    frags = _frags(_segment(payload), 1280)
    r = FragmentReassembler()
    assert r.add(frags[0], 0.0) is None
    # A forged fragment overlapping the first one's data (offset 8, M set).
    evil = IPv6(frags[1])
    evil[IPv6ExtHdrFragment].offset = 1
    assert r.add(bytes(evil), 0.0) is None
    assert r.stats()["overlaps"] == 1
    for f in frags[1:]:
        assert r.add(f, 0.0) is None                        # the rest cannot complete it
    assert r.stats()["discarded"] == len(frags) - 1 and r.held_bytes == 0


def test_exact_duplicate_is_ignored() -> None:
    """RFC 5722 Errata 3089 (Linux too): an exact duplicate is dropped on its own."""
    frags = _frags(_segment(bytes(3000)), 1280)
    r = FragmentReassembler()
    r.add(frags[0], 0.0)
    assert r.add(frags[0], 0.0) is None and r.stats()["duplicates"] == 1
    out = [r.add(f, 0.0) for f in frags[1:]]
    assert out[-1] is not None and parse(out[-1]).payload == bytes(3000)


def test_limits_timeout_and_size() -> None:
    r = FragmentReassembler(max_bytes=4000, max_datagrams=2, timeout=30.0)
    for ident in range(5):                                   # only 2 datagrams held
        r.add(_frags(_segment(bytes(3000), ident=ident), 1280)[0], 0.0)
    assert r.datagrams == 2 and r.held_bytes <= 4000 and r.stats()["evicted"] >= 3
    assert r.expire(31.0) == 2 and r.datagrams == 0 and r.held_bytes == 0
    # RFC 8200 4.5: a fragment whose reassembled payload would pass 65535 is discarded.
    big = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=9, offset=8190, m=1) / Raw(bytes(64))
    assert r.add(bytes(big), 40.0) is None and r.stats()["too_big"] == 1
    # M set and a length that is not a multiple of 8.
    odd = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=10, offset=0, m=1) / Raw(bytes(13))
    assert r.add(bytes(odd), 40.0) is None and r.stats()["bad"] == 1
    # Datagrams are told apart by (src, dst, identification).
    a = _frags(_segment(b"a" * 2000, ident=1), 1280)
    b = _frags(_segment(b"b" * 2000, ident=2), 1280)
    r2 = FragmentReassembler()
    got = [r2.add(f, 50.0) for pair in zip(a, b) for f in pair]
    done = [parse(g).payload for g in got if g is not None]
    assert sorted(done) == [b"a" * 2000, b"b" * 2000]


# --- in the host -----------------------------------------------------------------------------

def _pair6(**settings):
    client = Host(A6, isn_secret=bytes(16), **settings)
    server = Host(B6, isn_secret=bytes(range(16)), **settings)
    lst = server.listen(80)
    c = client.connect((B6, 80))
    exchange(client, server, 0.0)
    return client, server, c, lst.accept()


def test_host_reassembles_a_fragmented_segment() -> None:
    client, server, c, s = _pair6(timestamps=False)     # the forged segment carries none
    i = c.info()
    payload = random.Random(2).randbytes(4000)
    seg = IPv6(build_tcp(A6, B6, c.lport, 80, i.snd_nxt, i.rcv_nxt, 0x18, 65535, payload))
    pkt = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=99) / seg[TCP]
    frags = _frags(pkt, 1280)
    random.Random(3).shuffle(frags)
    server.receive(frags, 0.01)
    assert s.recv() == payload
    st = server.stats()
    assert st["fragments_in"] == len(frags) and st["datagrams_reassembled"] == 1


def test_host_drops_overlapping_fragments_and_takes_atomic_ones() -> None:
    client, server, c, s = _pair6(timestamps=False)
    i = c.info()
    seg = IPv6(build_tcp(A6, B6, c.lport, 80, i.snd_nxt, i.rcv_nxt, 0x18, 65535, bytes(3000)))
    frags = _frags(IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=5) / seg[TCP], 1280)
    evil = IPv6(frags[1])
    evil[IPv6ExtHdrFragment].offset -= 1                     # 8 bytes back: overlaps
    server.receive([frags[0], bytes(evil)] + frags[1:], 0.01)
    assert s.recv() == b"" and server.stats()["reasm_overlaps"] == 1
    # RFC 6946: an atomic fragment (offset 0, M clear) is a whole packet, at once.
    atomic = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=6, offset=0, m=0) / seg[TCP]
    server.receive([bytes(atomic)], 0.02)
    assert s.recv() == bytes(3000)
    # Every fragment given counted (the forged one too), the atomic fragment not.
    assert server.stats().get("fragments_in", 0) == len(frags) + 1


def test_echo_request_in_fragments_is_answered() -> None:
    h = Host(B6)
    req = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=3) / ICMPv6EchoRequest(
        id=1, seq=2, data=b"z" * 3000)
    h.receive(_frags(req, 1280), 0.0)
    (rep,) = h.transmit(0.0)
    sc = IPv6(rep)
    assert isinstance(sc.payload, ICMPv6EchoReply) and sc.payload.data == b"z" * 3000


# --- ICMPv6 errors ----------------------------------------------------------------------------

def _first_data(client: Host, c) -> bytes:
    c.send(bytes(20_000))
    return bytes(client.transmit(0.02)[0])


def _ptb_for(client: Host, c, mtu: int, seq_delta: int = 0, sent: bytes = b"") -> bytes:
    first = bytearray(sent or _first_data(client, c))
    if seq_delta:
        first[44:48] = ((int.from_bytes(first[44:48], "big") + seq_delta) % 2**32).to_bytes(
            4, "big")
    return build_icmpv6_error(ROUTER6, A6, 2, 0, bytes(first), rest=mtu)


@pytest.mark.parametrize("mtu, mss", [(1400, 1400 - 60 - 12), (1280, 1280 - 60 - 12),
                                      (600, 1280 - 60 - 12)])
def test_packet_too_big_sets_the_mss(mtu, mss) -> None:
    """RFC 8201 4: the path MTU from a PTB, never below 1280 (a smaller one counts as
    1280); MSS = PMTU - 60 - the timestamps option every segment carries."""
    client, server, c, s = _pair6()
    assert c.mss == 1500 - 60 - 12
    sent = _first_data(client, c)
    client.receive([_ptb_for(client, c, mtu, sent=sent)], 0.03)
    assert c.mss == mss and client.stats()["pmtu_updates"] == 1
    resent = client.transmit(0.03)
    assert resent and max(len(p) for p in resent) <= max(mtu, 1280)
    # A larger PTB never raises it (RFC 8201 4).
    client.receive([_ptb_for(client, c, 1500, sent=resent[0])], 0.04)
    assert c.mss == mss and client.stats()["pmtu_updates"] == 1


def test_packet_too_big_quoting_a_sequence_not_in_flight_is_ignored() -> None:
    client, server, c, s = _pair6()
    client.receive([_ptb_for(client, c, 1280, seq_delta=10_000_000)], 0.03)
    assert c.mss == 1500 - 60 - 12
    assert client.stats()["icmp_ignored_seq"] == 1


def test_port_unreachable_to_a_syn_refuses_and_others_are_soft() -> None:
    client = Host(A6)
    c = client.connect((B6, 80))
    (syn,) = client.transmit(0.0)
    client.receive([build_icmpv6_error(B6, A6, 1, 4, syn)], 0.01)
    assert c.state is State.CLOSED and isinstance(c.error, ConnectionRefused)
    c2 = client.connect((B6, 81))
    (syn2,) = client.transmit(0.02)
    client.receive([build_icmpv6_error(ROUTER6, A6, 1, 0, syn2)], 0.03)   # no route
    assert c2.state is State.SYN_SENT and c2.soft_error == (1, 0)
    assert client.stats()["icmp_soft_errors"] == 1
    # An error quoting another host's packet, or no connection, is ignored.
    client.receive([build_icmpv6_error(ROUTER6, A6, 1, 0, build_tcp("fd00::9", B6, 1, 2, 3))],
                   0.04)
    assert client.stats()["icmp_ignored"] == 1


def test_netsim_router_answers_with_packet_too_big_on_a_1280_hop() -> None:
    """The engine over a 1280-byte hop: the NetSim router sends ICMPv6 Packet Too Big
    (RFC 4443 3.2); the transfer completes byte-exact at MSS 1280 - 60 - 12."""
    client = Host(A6, isn_secret=bytes(16), msl=0.05)
    server = Host(B6, isn_secret=bytes(range(16)), msl=0.05)
    sim = NetSim(transmit_all=True, router_address6=ROUTER6)
    hop = FaultConfig(delay=0.002, mtu=1280, loss=0.01, seed=4)
    sim.connect(client, server, hop, hop)
    seen = []
    sim.taps.append(lambda t, h, p: seen.append(p) if h is None else None)
    lst = server.listen(80)
    data = random.Random(5).randbytes(600_000)
    c = client.connect((B6, 80))
    got = bytearray()
    st = {"sent": 0, "s": None}

    def stop() -> bool:
        if st["s"] is None:
            st["s"] = lst.accept()
        if st["sent"] < len(data) and c.state is State.ESTABLISHED:
            st["sent"] += c.send(data[st["sent"]:st["sent"] + 65536])
            if st["sent"] == len(data):
                c.close()
        if st["s"] is not None:
            got.extend(st["s"].recv())
            return st["s"].eof
        return False

    sim.run(until=60.0, stop=stop)
    assert bytes(got) == data
    assert sim.icmp_sent >= 1 and client.stats()["pmtu_updates"] >= 1
    assert c.mss == 1280 - 60 - 12
    assert all(p[0] >> 4 == 6 for p in seen)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_fuzz_mutated_fragments_into_a_host(seed: int) -> None:
    """Mutated IPv6 fragments (offsets, M, identification, lengths, extension headers,
    truncation), overlapping and not, into a host: nothing escapes receive, no internal
    error, and the reassembly memory stays within its limits."""
    rng = random.Random(seed)
    h = Host(B6, frag_max_bytes=20_000, frag_max_datagrams=4)
    h._raise_internal = True
    base = _frags(_segment(rng.randbytes(rng.randrange(1500, 9000)),
                           *([IPv6ExtHdrDestOpt()] if rng.random() < 0.3 else []),
                           ident=rng.randrange(4)), 1280)
    pkts = []
    for f in base * 2:
        b = bytearray(f)
        for _ in range(rng.randrange(3)):
            op = rng.randrange(5)
            at = 40 + 8 * (rng.random() < 0.3)             # the Fragment header
            if op == 0 and len(b) > at + 4:                 # offset and M
                b[at + 2:at + 4] = rng.randrange(65536).to_bytes(2, "big")
            elif op == 1 and len(b) > at + 8:               # identification
                b[at + 4:at + 8] = rng.randrange(4).to_bytes(4, "big")
            elif op == 2:                                   # truncate
                del b[rng.randrange(len(b) + 1):]
            elif op == 3 and len(b) > 6:                    # payload length lies
                b[4:6] = rng.randrange(65536).to_bytes(2, "big")
            elif op == 4 and len(b) > 41:                   # next header chain
                b[rng.choice([6, 40])] = rng.choice([0, 43, 44, 60, 6, 58])
        pkts.append(bytes(b))
    rng.shuffle(pkts)
    for i in range(0, len(pkts), 3):
        h.receive(pkts[i:i + 3], i * 0.5)
        h.transmit(i * 0.5)
        st = h.stats()
        assert st.get("reasm_held_bytes", 0) <= 20_000 and st.get("reasm_datagrams", 0) <= 4
    assert not h.stats().get("drop_internal_error")
