"""scapy as the oracle for the wire layer, in both directions.

* Packets scapy builds from random fields (TCP with an options soup of NOPs, unknown kinds,
  EOL and garbage after it, in random order; IPv4 options; Ethernet padding; ICMP echo and
  errors quoting a packet) parse in fasttcp to exactly what scapy dissects.
* Packets fasttcp builds (`build_tcp`, `build_icmp_echo`, `build_icmp_unreachable`,
  `build_ipv4`) dissect in scapy to what was asked, and scapy, re-serialising them with the
  checksum fields deleted, produces the very same bytes (so both checksums are right).
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import (ICMP, IP, TCP, UDP, IPerror, IPOption, TCPerror, UDPerror,
                               in4_chksum)
from scapy.packet import Raw
from scapy.utils import checksum as scapy_checksum

import pytest

from fasttcp.wire import (
    DropReason,
    MalformedPacket,
    TcpFlags,
    TcpOptions,
    build_icmp,
    build_icmp_echo,
    build_icmp_unreachable,
    build_ipv4,
    build_tcp,
    int_to_ip,
    ip_to_int,
    parse,
    parse_batch,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
port = st.integers(1, 0xFFFF)
# Sources fasttcp accepts: not 0.0.0.0, multicast, class E or broadcast (RFC 1122 3.2.1.3).
unicast = st.integers(1, 0xDFFFFFFF).map(int_to_ip)
any_addr = u32.map(int_to_ip)

MANY = settings(max_examples=1000, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SOME = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- strategies -----------------------------------------------------------------------------

# Kinds fasttcp does not interpret: everything but EOL, NOP, MSS, WS, SACK-perm, SACK, TS.
# Not 29 (TCP-AO) either: scapy's dissector gives up on the whole TCP layer when that
# option is shorter than its key ids.
unknown_kind = st.integers(6, 255).filter(lambda k: k not in (8, 29))


@st.composite
def option_soup(draw) -> list:
    """A scapy TCP option list of at most 40 bytes, in random order, with duplicates."""
    items: list = []
    used = 0
    for _ in range(draw(st.integers(0, 14))):
        kind = draw(st.sampled_from(["MSS", "WScale", "SAckOK", "Timestamp", "SAck", "NOP",
                                     "unknown"]))
        if kind == "MSS":
            item, size = ("MSS", draw(u16)), 4
        elif kind == "WScale":
            item, size = ("WScale", draw(u8)), 3
        elif kind == "SAckOK":
            item, size = ("SAckOK", b""), 2
        elif kind == "Timestamp":
            item, size = ("Timestamp", (draw(u32), draw(u32))), 10
        elif kind == "SAck":
            blocks = draw(st.lists(st.tuples(u32, u32), min_size=1, max_size=4))
            edges = tuple(edge for block in blocks for edge in block)
            item, size = ("SAck", edges), 2 + 4 * len(edges)
        elif kind == "NOP":
            item, size = ("NOP", None), 1
        else:
            value = draw(st.binary(max_size=12))
            item, size = (draw(unknown_kind), value), 2 + len(value)
        if used + size <= 40:
            items.append(item)
            used += size
    if used < 40 and draw(st.booleans()):
        # End of Option List: whatever follows is padding, even if it looks malformed
        # (an MSS of the wrong length here must not get the packet dropped).
        items.append(("EOL", None))
        used += 1
        for _ in range(draw(st.integers(0, 3))):
            value = draw(st.binary(max_size=5))
            if used + 2 + len(value) <= 40:
                items.append((draw(st.sampled_from([2, 3, 4, 5, 8, 30])), value))
                used += 2 + len(value)
    return items


ip_option_chunks = st.lists(
    st.sampled_from([b"\x01", b"\x94\x04\x00\x00", b"\x88\x04\x12\x34",
                     b"\x07\x07\x04" + bytes(4)]),   # NOP, router alert, stream id, RR
    max_size=5,
).filter(lambda cs: sum(map(len, cs)) <= 40)


def scapy_options(opts: list) -> TcpOptions:
    """What fasttcp should read from scapy's dissection of an option list: up to EOL, the
    last occurrence of each known kind wins (as in Linux's tcp_parse_options)."""
    got = dict(mss=None, wscale=None, sack_permitted=False, timestamps=None, sack=())
    for name, value in opts:
        if name == "EOL":
            break
        if name == "MSS":
            got["mss"] = value
        elif name == "WScale":
            got["wscale"] = value
        elif name == "SAckOK":
            got["sack_permitted"] = True
        elif name == "Timestamp":
            got["timestamps"] = tuple(value)
        elif name == "SAck":
            got["sack"] = tuple(zip(value[0::2], value[1::2]))
    return TcpOptions(**got)


# --- scapy builds, fasttcp parses -----------------------------------------------------------

def assert_ip_matches(pk, sc: IP, raw: bytes) -> None:
    assert pk.src == sc.src and pk.dst == sc.dst
    assert pk.src_int == ip_to_int(sc.src) and pk.dst_int == ip_to_int(sc.dst)
    assert pk.ttl == sc.ttl
    assert pk.tos == sc.tos
    assert pk.ip_id == sc.id
    assert pk.ip_flags == int(sc.flags)
    assert pk.frag_offset == sc.frag
    assert pk.proto == sc.proto
    assert pk.ip_header_len == sc.ihl * 4
    assert pk.total_length == sc.len
    assert pk.raw == raw[:sc.len]


def assert_tcp_matches(pk, sc: IP, raw: bytes) -> None:
    assert_ip_matches(pk, sc, raw)
    t = sc[TCP]
    assert pk.is_tcp and not pk.is_icmp
    assert (pk.sport, pk.dport, pk.seq, pk.ack) == (t.sport, t.dport, t.seq, t.ack)
    # scapy's 9-bit flags include NS (RFC 3540) which fasttcp counts as a reserved bit.
    assert pk.flags == TcpFlags(int(t.flags) & 0xFF)
    assert pk.flag_bits == int(t.flags) & 0xFF
    assert pk.flags.letters() == str(TCP(flags=int(t.flags) & 0xFF).flags)
    assert pk.reserved == (t.reserved << 1) | (int(t.flags) >> 8)
    assert pk.window == t.window
    assert pk.urgent == t.urgptr
    assert pk.data_offset == t.dataofs * 4
    want = scapy_options(t.options)
    assert pk.options == want
    # The cheap accessors agree with `options` (OPT_* bits: MSS 1, WS 2, SACK-perm 4, TS 8,
    # SACK 16).
    assert pk.opt_bits == ((want.mss is not None) | (want.wscale is not None) << 1 |
                           want.sack_permitted << 2 | (want.timestamps is not None) << 3 |
                           bool(want.sack) << 4)
    assert (pk.tsval, pk.tsecr) == (want.timestamps or (0, 0))
    assert pk.sack_blocks == list(want.sack)
    start = sc.ihl * 4 + t.dataofs * 4
    assert pk.payload == raw[start:sc.len]
    assert pk.payload_len == sc.len - start


@MANY
@given(src=unicast, dst=any_addr, ttl=u8, tos=u8, ip_id=u16,
       ip_flags=st.sampled_from([0, 2, 4, 6]), ip_opts=ip_option_chunks,
       sport=port, dport=port, seq=u32, ack=u32, flags=st.integers(0, 0x1FF),
       reserved=st.integers(0, 7), window=u16, urg=u16, options=option_soup(),
       payload=st.binary(max_size=1500), trailer=st.binary(max_size=20))
def test_scapy_tcp_parses_identically(src, dst, ttl, tos, ip_id, ip_flags, ip_opts, sport,
                                      dport, seq, ack, flags, reserved, window, urg, options,
                                      payload, trailer) -> None:
    pkt = (IP(src=src, dst=dst, ttl=ttl, tos=tos, id=ip_id, flags=ip_flags,
              options=[IPOption(c) for c in ip_opts]) /
           TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, reserved=reserved,
               window=window, urgptr=urg, options=options) /
           Raw(payload))
    raw = bytes(pkt) + trailer          # trailer: link-layer padding past the total length
    sc = IP(raw)
    pk = parse(raw)
    assert_tcp_matches(pk, sc, raw)
    # The single and the batch parser agree on every form of buffer.
    batch = parse_batch([raw, bytearray(raw), memoryview(b"\x00" + raw)[1:]])
    assert batch.reasons() == [DropReason.NONE] * 3
    for i in range(3):
        assert_tcp_matches(batch.packet(i), sc, raw)


@SOME
@given(src=unicast, dst=any_addr, reply=st.booleans(), code=u8, ident=u16, seq=u16,
       data=st.binary(max_size=1400), ttl=u8, trailer=st.binary(max_size=8))
def test_scapy_icmp_echo_parses_identically(src, dst, reply, code, ident, seq, data, ttl,
                                            trailer) -> None:
    raw = bytes(IP(src=src, dst=dst, ttl=ttl) /
                ICMP(type=0 if reply else 8, code=code, id=ident, seq=seq) / Raw(data))
    raw += trailer
    sc = IP(raw)
    pk = parse(raw)
    assert_ip_matches(pk, sc, raw)
    assert pk.is_icmp and not pk.is_tcp
    ic = sc[ICMP]
    assert (pk.icmp_type, pk.icmp_code, pk.icmp_id, pk.icmp_seq) == (ic.type, ic.code,
                                                                      ic.id, ic.seq)
    assert pk.icmp_mtu == 0
    assert pk.quoted is None
    assert pk.payload == data and pk.payload_len == len(data)
    for tcp_only in ("sport", "dport", "seq", "ack", "flags", "flag_bits", "window",
                     "options", "data_offset"):
        with pytest.raises(AttributeError):
            getattr(pk, tcp_only)


@SOME
@given(src=unicast, dst=any_addr, icmp_type=st.sampled_from([3, 11, 12]), code=u8,
       mtu=u16, q_src=any_addr, q_dst=any_addr, q_opts=ip_option_chunks,
       q_proto=st.sampled_from(["tcp", "udp", "other"]), sport=port, dport=port, seq=u32,
       extra=st.integers(0, 60))
def test_scapy_icmp_error_parses_identically(src, dst, icmp_type, code, mtu, q_src, q_dst,
                                             q_opts, q_proto, sport, dport, seq,
                                             extra) -> None:
    ip = IP(src=q_src, dst=q_dst, options=[IPOption(c) for c in q_opts])
    if q_proto == "tcp":
        orig = bytes(ip / TCP(sport=sport, dport=dport, seq=seq) / Raw(bytes(100)))
    elif q_proto == "udp":
        orig = bytes(ip / UDP(sport=sport, dport=dport) / Raw(bytes(100)))
    else:
        ip.proto = 132
        orig = bytes(ip / Raw(bytes(100)))
    qhl = (orig[0] & 0x0F) * 4
    quote = orig[:qhl + 8 + extra]      # RFC 792 asks for 8 bytes; RFC 1812 allows more
    if icmp_type == 3:
        msg = ICMP(type=3, code=code, nexthopmtu=mtu)
    elif icmp_type == 12:
        msg = ICMP(type=12, code=code, ptr=mtu & 0xFF)
    else:
        msg = ICMP(type=11, code=code)
    raw = bytes(IP(src=src, dst=dst) / msg / Raw(quote))
    sc = IP(raw)
    pk = parse(raw)
    assert_ip_matches(pk, sc, raw)
    ic = sc[ICMP]
    assert (pk.icmp_type, pk.icmp_code) == (ic.type, ic.code)
    assert pk.icmp_mtu == (ic.nexthopmtu if icmp_type == 3 and code == 4 else 0)
    assert pk.payload == quote
    qe = sc[IPerror]
    if q_proto == "tcp":
        # scapy gives up on a TCP quote of 9..19 bytes (not 8, not a whole header): have it
        # dissect the 8 bytes RFC 792 guarantees.
        te = TCPerror(bytes(qe.payload)[:8])
        assert pk.quoted == (qe.src, qe.dst, 6, te.sport, te.dport, te.seq)
    elif q_proto == "udp":
        # issue 15: the quoted UDP datagram's ports (an ICMP error reaches its endpoint)
        ue = UDPerror(bytes(qe.payload)[:8])
        assert pk.quoted == (qe.src, qe.dst, 17, ue.sport, ue.dport, None)
    else:
        assert pk.quoted == (qe.src, qe.dst, 132, None, None, None)


@SOME
@given(src=unicast, dst=any_addr, icmp_type=st.sampled_from([13, 14, 9, 10, 40, 255]),
       code=u8, rest=st.binary(min_size=4, max_size=4),
       data=st.binary(min_size=12, max_size=200))    # 13/14 carry three timestamps
def test_scapy_other_icmp_parses_identically(src, dst, icmp_type, code, rest, data) -> None:
    # Types fasttcp does not interpret: type, code and data are still read right.
    body = bytearray(bytes([icmp_type, code, 0, 0]) + rest + data)
    body[2:4] = scapy_checksum(bytes(body)).to_bytes(2, "big")
    raw = bytes(IP(src=src, dst=dst, proto=1) / Raw(bytes(body)))
    sc = IP(raw)
    pk = parse(raw)
    assert_ip_matches(pk, sc, raw)
    assert (pk.icmp_type, pk.icmp_code) == (sc[ICMP].type, sc[ICMP].code)
    assert pk.payload == data
    assert pk.quoted is None


# --- fasttcp builds, scapy dissects ---------------------------------------------------------

@st.composite
def tcp_options(draw):
    if draw(st.integers(0, 9)) == 0:
        return None
    return TcpOptions(
        mss=draw(st.none() | u16),
        wscale=draw(st.none() | u8),
        sack_permitted=draw(st.booleans()),
        timestamps=draw(st.none() | st.tuples(u32, u32)),
        sack=draw(st.lists(st.tuples(u32, u32), max_size=4)),
    )


def expected_sack(o: TcpOptions) -> tuple:
    """RFC 2018 section 3: as many blocks as fit the 40 bytes left by the other options,
    each option padded to 4 bytes with NOPs (MSS 4, TS 12 with SACK-permitted folded into
    its padding, SACK-permitted 4 without TS, WS 4; SACK 4 + 8 per block)."""
    used = ((4 if o.mss is not None else 0) + (4 if o.wscale is not None else 0) +
            (12 if o.timestamps is not None else 4 if o.sack_permitted else 0))
    return o.sack[:(40 - used - 4) // 8]


def assert_scapy_rebuilds(raw: bytes, layer) -> IP:
    """Dissect with scapy, delete both checksums, re-serialise: the bytes must not change.
    The payload is pinned as Raw so scapy's port-based guessing cannot reshape it."""
    sc = IP(raw)
    assert sc.version == 4 and sc.ihl == 5 and sc.len == len(raw)
    assert scapy_checksum(raw[:20]) == 0
    q = sc.copy()
    inner = q[layer]
    body = bytes(inner.payload)
    inner.remove_payload()
    if body:
        inner.add_payload(Raw(body))
    del q.chksum
    del inner.chksum
    assert bytes(q) == raw
    return sc


@MANY
@given(src=any_addr, dst=any_addr, sport=port, dport=port, seq=u32, ack=u32,
       flags=u8, window=u16, urg=u16, ttl=st.integers(1, 255), ip_id=u16, tos=u8,
       df=st.booleans(), options=tcp_options(), payload=st.binary(max_size=1500))
def test_build_tcp_dissects_in_scapy(src, dst, sport, dport, seq, ack, flags, window, urg,
                                     ttl, ip_id, tos, df, options, payload) -> None:
    raw = build_tcp(src, dst, sport, dport, seq, ack, flags=flags, window=window,
                    payload=payload, options=options, urg=urg, ttl=ttl, ip_id=ip_id,
                    tos=tos, df=df)
    sc = assert_scapy_rebuilds(raw, TCP)
    assert (sc.src, sc.dst, sc.ttl, sc.id, sc.tos, sc.proto) == (src, dst, ttl, ip_id, tos, 6)
    assert int(sc.flags) == (2 if df else 0) and sc.frag == 0
    t = sc[TCP]
    assert (t.sport, t.dport, t.seq, t.ack) == (sport, dport, seq, ack)
    assert int(t.flags) == flags and t.reserved == 0
    assert (t.window, t.urgptr) == (window, urg)
    # TCP checksum by scapy's own pseudo-header routine, as a second opinion.
    seg = bytearray(raw[20:])
    seg[16:18] = b"\x00\x00"
    assert in4_chksum(6, sc, bytes(seg)) == t.chksum
    want = options or TcpOptions()
    want = TcpOptions(want.mss, want.wscale, want.sack_permitted, want.timestamps,
                      expected_sack(want))
    assert scapy_options(t.options) == want
    # Every option 4-byte aligned with NOPs (no EOL, no padding beyond).
    opt_len = (t.dataofs - 5) * 4
    assert opt_len == (((4 if want.mss is not None else 0) +
                        (4 if want.wscale is not None else 0) +
                        (12 if want.timestamps is not None else
                         4 if want.sack_permitted else 0)) +
                       (4 + 8 * len(want.sack) if want.sack else 0))
    assert all(name != "EOL" for name, _ in t.options)
    assert raw[40 + opt_len:] == payload
    # And fasttcp reads back what it wrote (it drops bad sources, RFC 1122 3.2.1.3).
    if not 0 < ip_to_int(src) < 0xE0000000:
        with pytest.raises(MalformedPacket):
            parse(raw)
        return
    pk = parse(raw)
    assert pk.options == want and pk.payload == payload and pk.flags == flags


@SOME
@given(src=any_addr, dst=any_addr, ident=u16, seq=u16, data=st.binary(max_size=1400),
       reply=st.booleans(), ttl=st.integers(1, 255))
def test_build_icmp_echo_dissects_in_scapy(src, dst, ident, seq, data, reply, ttl) -> None:
    raw = build_icmp_echo(src, dst, ident, seq, data, reply=reply, ttl=ttl)
    sc = assert_scapy_rebuilds(raw, ICMP)
    assert (sc.src, sc.dst, sc.ttl, sc.proto) == (src, dst, ttl, 1)
    ic = sc[ICMP]
    assert (ic.type, ic.code, ic.id, ic.seq) == (0 if reply else 8, 0, ident, seq)
    assert raw[28:] == data


@SOME
@given(src=unicast, dst=any_addr, code=st.integers(0, 15), mtu=u16, q_src=any_addr,
       q_dst=any_addr, sport=port, dport=port, seq=u32, q_opts=ip_option_chunks,
       payload=st.binary(max_size=64), ttl=st.integers(1, 255))
def test_build_icmp_unreachable_dissects_in_scapy(src, dst, code, mtu, q_src, q_dst, sport,
                                                  dport, seq, q_opts, payload, ttl) -> None:
    original = bytes(IP(src=q_src, dst=q_dst, options=[IPOption(c) for c in q_opts]) /
                     TCP(sport=sport, dport=dport, seq=seq) / Raw(payload))
    qhl = (original[0] & 0x0F) * 4
    raw = build_icmp_unreachable(src, dst, code, original, mtu=mtu, ttl=ttl)
    sc = assert_scapy_rebuilds(raw, ICMP)
    assert (sc.src, sc.dst, sc.ttl, sc.proto) == (src, dst, ttl, 1)
    ic = sc[ICMP]
    assert (ic.type, ic.code) == (3, code)
    # RFC 1191: next-hop MTU only for "fragmentation needed" (code 4).
    assert ic.nexthopmtu == (mtu if code == 4 else 0)
    # RFC 792: the original header and its first 64 data bits, nothing more.
    assert raw[28:] == original[:qhl + 8]
    qe, te = sc[IPerror], sc[TCPerror]
    assert (qe.src, qe.dst, qe.proto, qe.ihl * 4) == (q_src, q_dst, 6, qhl)
    assert (te.sport, te.dport, te.seq) == (sport, dport, seq)
    pk = parse(raw)
    assert pk.quoted == (q_src, q_dst, 6, sport, dport, seq)
    assert pk.icmp_mtu == (mtu if code == 4 else 0)


@SOME
@given(src=any_addr, dst=any_addr, icmp_type=u8, code=u8, rest=u32,
       data=st.binary(max_size=100))
def test_build_icmp_dissects_in_scapy(src, dst, icmp_type, code, rest, data) -> None:
    raw = build_icmp(src, dst, icmp_type, code, rest, data)
    sc = IP(raw)
    assert sc.proto == 1 and sc.len == len(raw)
    assert scapy_checksum(raw[:20]) == 0 and scapy_checksum(raw[20:]) == 0
    # RFC 792 layout (scapy cannot dissect every type with any data length).
    assert (raw[20], raw[21]) == (icmp_type, code)
    assert raw[24:28] == rest.to_bytes(4, "big") and raw[28:] == data


@SOME
@given(src=any_addr, dst=any_addr, proto=st.sampled_from([0, 4, 17, 41, 47, 50, 132, 253]),
       payload=st.binary(max_size=1500), ttl=st.integers(1, 255), ip_id=u16, tos=u8,
       df=st.booleans())
def test_build_ipv4_matches_scapy_bytes(src, dst, proto, payload, ttl, ip_id, tos,
                                        df) -> None:
    raw = build_ipv4(src, dst, proto, payload, ttl=ttl, ip_id=ip_id, tos=tos, df=df)
    # scapy builds the same header from the same fields, checksum included.
    want = IP(src=src, dst=dst, proto=proto, ttl=ttl, id=ip_id, tos=tos,
              flags="DF" if df else 0) / Raw(payload)
    assert raw == bytes(want)
    assert scapy_checksum(raw[:20]) == 0


def test_build_tcp_sack_limits() -> None:
    # RFC 2018 section 3: with timestamps at most 3 SACK blocks fit, without them 4.
    blocks = [(i * 100, i * 100 + 50) for i in range(1, 5)]
    ts = parse(build_tcp("10.0.0.1", "10.0.0.2", 1, 2, 0,
                         options=TcpOptions(timestamps=(1, 2), sack=blocks)))
    assert ts.options.sack == tuple(blocks[:3]) and ts.data_offset == 60
    plain = parse(build_tcp("10.0.0.1", "10.0.0.2", 1, 2, 0, options=TcpOptions(sack=blocks)))
    assert plain.options.sack == tuple(blocks) and plain.data_offset == 56
    full = parse(build_tcp("10.0.0.1", "10.0.0.2", 1, 2, 0,
                           options=TcpOptions(mss=1460, wscale=7, sack_permitted=True,
                                              timestamps=(1, 2), sack=blocks)))
    assert full.options.sack == tuple(blocks[:2]) and full.data_offset == 60


def test_build_tcp_syn_layout_is_linux_like() -> None:
    # A Linux SYN: MSS, SACK-permitted folded into the timestamp option's padding, NOP+WS.
    raw = build_tcp("10.0.0.1", "10.0.0.2", 40000, 80, 1, 0, flags=TcpFlags.SYN,
                    options=TcpOptions(mss=1460, wscale=7, sack_permitted=True,
                                       timestamps=(0x01020304, 0)))
    assert raw[40:60] == bytes.fromhex("020405b4" "0402080a0102030400000000" "01030307")
    assert IP(raw)[TCP].options == [("MSS", 1460), ("SAckOK", b""),
                                    ("Timestamp", (0x01020304, 0)), ("NOP", None),
                                    ("WScale", 7)]


@pytest.mark.parametrize("kwargs", [
    dict(sport=0), dict(dport=0), dict(sport=65536), dict(window=65536), dict(window=-1),
    dict(urg=65536), dict(flags=256), dict(ttl=0), dict(ttl=256),
    dict(payload=bytes(65535 - 40 + 1)),
    dict(options=TcpOptions(sack=[(1, 2)] * 5)),
])
def test_build_tcp_rejects_bad_fields(kwargs) -> None:
    args = dict(src="10.0.0.1", dst="10.0.0.2", sport=1, dport=2, seq=0)
    args.update(kwargs)
    with pytest.raises((ValueError, OverflowError)):
        build_tcp(**args)


def test_build_tcp_largest_packet() -> None:
    raw = build_tcp("10.0.0.1", "10.0.0.2", 1, 2, 0, payload=b"\xff" * (65535 - 40))
    assert len(raw) == 65535 and parse(raw).total_length == 65535
    assert_scapy_rebuilds(raw, TCP)


def test_build_rejects_bad_addresses() -> None:
    for bad in ("10.0.0", "10.0.0.256", "::1", -1, 2**32, b"\x01\x02"):
        with pytest.raises(ValueError):
            build_tcp(bad, "10.0.0.2", 1, 2, 0)
        with pytest.raises(ValueError):
            build_ipv4("10.0.0.1", bad, 17)


def test_build_icmp_unreachable_needs_an_ip_header() -> None:
    with pytest.raises(ValueError):
        build_icmp_unreachable("10.0.0.1", "10.0.0.2", 3, b"\x45" + bytes(10))


def test_tcp_options_normalise_sequences() -> None:
    # Lists in, tuples stored: equal to (and hashing like) the tuple spelling.
    a = TcpOptions(timestamps=[1, 2], sack=[[3, 4], [5, 6]])
    b = TcpOptions(timestamps=(1, 2), sack=((3, 4), (5, 6)))
    assert a == b and hash(a) == hash(b)
    assert parse(build_tcp("10.0.0.1", "10.0.0.2", 1, 2, 0, options=a)).options == b
    assert not TcpOptions() and TcpOptions(sack_permitted=True)


def test_malformed_is_a_value_error_with_reason() -> None:
    with pytest.raises(MalformedPacket) as info:
        parse(b"\x45")
    assert info.value.reason is DropReason.TRUNCATED_IP
