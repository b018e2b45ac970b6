"""TunLink with IPv6: addresses of both families, and the vnet-header offloads (checksum,
TSO6 both ways) for IPv6 packets.

The Host does not speak IPv6 on this branch, so the peer here is scapy (packets built
and checked by it) and the kernel's own sockets inside the test's namespace. Each
namespace test makes its own namespace (``netns_util.temp_netns``) and removes it.
"""
from __future__ import annotations

import os
import socket
import struct
import time

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st
from netns_util import Background, sock_in, temp_netns, tun_unavailable, unique_ifname

from fasttcp.link import netns as ns
from fasttcp.link._tunio import TunIO
from fasttcp.link.tun import (RX_FLAG_CSUM_PARTIAL, RX_FLAG_CSUM_VALID, RX_FLAG_GSO,
                              TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TunLink, link_addresses)

scapy = pytest.importorskip("scapy.all")
IPv6, TCP, UDP, Raw = scapy.IPv6, scapy.TCP, scapy.UDP, scapy.Raw

KERNEL, US = "10.77.0.1", "10.77.0.2"
KERNEL6, US6 = "fd77::1", "fd77::2"
DUAL = [f"{US}/24", f"{US6}/64"]
PARSE_NO_TCP_CSUM = 1
IFA_F_NODAD, IFA_F_TENTATIVE = 0x02, 0x40
VNET = struct.Struct("<BBHHHH")       # flags, gso_type, hdr_len, gso_size, csum_start, offset
GSO_TCPV6, GSO_ECN = 4, 0x80


@pytest.fixture
def netns():
    reason = tun_unavailable()
    if reason:
        pytest.skip(reason)
    with temp_netns() as name:
        yield name


@pytest.fixture
def link_factory(netns):
    made = []

    def make(**kw) -> TunLink:
        kw.setdefault("name", unique_ifname())
        if "address" not in kw:
            kw.setdefault("addresses", DUAL)
        link = TunLink(netns=netns, **kw)
        made.append(link)
        return link

    yield make
    for link in made:
        link.close()


def ones_fold(data: bytes, acc: int = 0) -> int:
    if len(data) % 2:
        data += b"\0"
    acc += sum(struct.unpack(f"!{len(data) // 2}H", data))
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return acc


def pseudo6(raw: bytes, l4_off: int = 40, nh: int = 6) -> int:
    """Folded sum of the IPv6 pseudo-header (RFC 8200 8.1), written out independently."""
    length = 40 + struct.unpack("!H", raw[4:6])[0] - l4_off
    return ones_fold(bytes(raw[8:40]) + struct.pack("!IxxxB", length, nh))


def partial6(raw: bytes, l4_off: int = 40) -> bytes:
    """The packet as the kernel hands it over with CHECKSUM_PARTIAL."""
    return raw[:l4_off + 16] + struct.pack("!H", pseudo6(raw, l4_off)) + raw[l4_off + 18:]


def tcp6(payload: bytes = b"hello", src: str = KERNEL6, dst: str = US6, flags: str = "PA",
         ext=None, **kw) -> bytes:
    ip = IPv6(src=src, dst=dst)
    if ext is not None:
        ip = ip / ext
    return bytes(ip / TCP(sport=40000, dport=80, seq=1000, ack=2000, flags=flags,
                          window=65535, **kw) / Raw(payload))


def scapy_ok(raw: bytes) -> bool:
    """scapy's own checksum of the TCP segment equals the one in the packet."""
    pkt = IPv6(bytes(raw))
    fresh = pkt.copy()
    del fresh[TCP].chksum
    return IPv6(bytes(fresh))[TCP].chksum == pkt[TCP].chksum


def recv_until(link: TunLink, pred, timeout: float = 5.0) -> list:
    got: list = []
    end = time.monotonic() + timeout
    for _ in range(10_000):
        batch = link.recv_batch()
        got.extend(zip(batch, link.last_rx_flags))
        if any(pred(p) for p in batch):
            return got
        if time.monotonic() > end:
            break
        link.wait_readable(0.05)
    raise AssertionError(f"expected packet not seen; got {len(got)} packets")


def tcp6_to(port: int):
    def pred(p) -> bool:
        return p[0] >> 4 == 6 and p[6] == 6 and struct.unpack("!H", p[42:44])[0] == port
    return pred


# ============================================================================================
# Addresses
# ============================================================================================

def test_dual_stack_device_addresses_routes_and_no_dad(link_factory, netns):
    link = link_factory()
    # Offloads stay on with both families: TSO6 beside TSO4 and checksums.
    assert link.offload_flags == TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 and link.vnet_hdr
    caps = link.capabilities
    assert caps.tso_max_size == caps.gro_max_size == 65535
    assert caps.rx_checksum_offload and caps.tx_checksum_offload
    assert link.addresses == (US, US6)
    assert link.kernel_addresses == (KERNEL, KERNEL6)
    assert link.networks == ("10.77.0.0/24", "fd77::/64")
    assert (link.address, link.kernel_address, link.prefix) == (US, KERNEL, 24)
    assert f"{US},{US6} kernel={KERNEL}/24,{KERNEL6}/64" in repr(link)
    with ns.iproute(netns) as ipr:
        v6 = [(a.get_attr("IFA_ADDRESS"), a["prefixlen"],
               a.get_attr("IFA_FLAGS") or a["flags"])
              for a in ipr.get_addr(index=link.ifindex, family=socket.AF_INET6)]
        v4 = [(a.get_attr("IFA_ADDRESS"), a["prefixlen"])
              for a in ipr.get_addr(index=link.ifindex, family=socket.AF_INET)]
        routes = {(r.get_attr("RTA_DST"), r["dst_len"])
                  for r in ipr.get_routes(family=socket.AF_INET6, oif=link.ifindex)}
    # Only the kernel's addresses, no link-local one; usable at once (no DAD, never
    # tentative); fasttcp's reached through the connected route of each prefix.
    assert v4 == [(KERNEL, 24)]
    assert [(a, p) for a, p, _ in v6] == [(KERNEL6, 64)]
    assert v6[0][2] & IFA_F_NODAD and not v6[0][2] & IFA_F_TENTATIVE
    assert ("fd77::", 64) in routes
    assert ns.read_net_sysctl(netns, f"ipv6/conf/{link.name}/disable_ipv6") == "0"
    assert ns.read_net_sysctl(netns, f"ipv6/conf/{link.name}/accept_dad") == "0"
    # The kernel can use its address right away: a UDP socket binds and sends to us.
    u = sock_in(netns, socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        u.bind((KERNEL6, 0))
        u.sendto(b"at once", (US6, 9))
        got = recv_until(link, lambda p: p[0] >> 4 == 6 and p[6] == 17)
        pkt = IPv6([p for p, _ in got if p[0] >> 4 == 6 and p[6] == 17][0])
        assert (pkt.src, pkt.dst, bytes(pkt[UDP].payload)) == (KERNEL6, US6, b"at once")
    finally:
        u.close()


def test_ipv6_only_link_and_shared_prefix(link_factory, netns):
    one = link_factory(address=US6)                       # the /64 by default
    assert (one.addresses, one.kernel_addresses, one.prefix) == ((US6,), (KERNEL6,), 64)
    two = link_factory(addresses=["fd78::2", "fd78::3/64", "10.78.0.2"])
    # one network, one kernel address for both of fasttcp's addresses in it
    assert two.kernel_addresses == ("fd78::1", "10.78.0.1")
    assert two.networks == ("fd78::/64", "10.78.0.0/24")
    with ns.iproute(netns) as ipr:
        got = sorted(a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=two.ifindex))
    assert got == ["10.78.0.1", "fd78::1"]


def test_open_on_an_event_loop_takes_addresses(netns):
    """``await TunLink.open(..., addresses=[...])`` sets up both families without
    blocking the loop (its executor), and ``aclose`` removes the device."""
    import asyncio

    async def main():
        link = await TunLink.open(unique_ifname(), addresses=DUAL, netns=netns)
        try:
            return link.addresses, link.kernel_addresses
        finally:
            await link.aclose()

    assert asyncio.run(asyncio.wait_for(main(), 30)) == ((US, US6), (KERNEL, KERNEL6))


def test_attach_reads_both_families(netns):
    name = unique_ifname("ftp")
    with ns.iproute(netns) as ipr:
        ipr.link("add", ifname=name, kind="tuntap", mode="tun")
        idx = ipr.link_lookup(ifname=name)[0]
        ipr.addr("add", index=idx, address=KERNEL, prefixlen=24)
        ipr.addr("add", index=idx, address=KERNEL6, prefixlen=64, flags=IFA_F_NODAD)
        ipr.link("set", index=idx, state="up", mtu=1500)
    with TunLink.attach(name, netns=netns, addresses=[US, US6]) as link:
        assert link.addresses == (US, US6)
        assert link.kernel_addresses == (KERNEL, KERNEL6)
        assert link.networks == ("10.77.0.0/24", "fd77::/64")
    with pytest.raises(ValueError, match="link-local"):
        TunLink.attach(name, netns=netns, address="fe80::2")


@pytest.mark.parametrize("kw,message", [
    (dict(address="fe80::2"), "link-local"),
    (dict(address="fe80::2%lo"), "scoped"),
    (dict(address="ff02::1"), "multicast"),
    (dict(address="::"), "unspecified"),
    (dict(address="::1"), "loopback"),
    (dict(address="fd77::"), "Subnet-Router anycast"),
    (dict(address="::ffff:10.77.0.2"), "IPv4-mapped"),
    (dict(address="fd77::2", prefix=127), "must be 1..126"),
    (dict(address="fd77::2", prefix=0), "must be 1..126"),
    (dict(address="10.77.0.2", prefix=64), "must be 1..30"),
    (dict(address="fd77::1"), "kernel's address"),
    (dict(address="fd77::2", kernel_address="fd78::1"), "not a host address of fd77::/64"),
    (dict(address="fd77::2", kernel_address="10.77.0.1"), "not a host address"),
    (dict(address="fd77::2", mtu=1200), "below 1280"),
    (dict(addresses=["fd77::2", "10.77.0.2"], mtu=1000), "below 1280"),
    (dict(addresses=["fd77::2", "fd77::2/64"]), "given twice"),
    (dict(addresses=["fd77::2/64", "fd77::1:2/112"]), "overlap"),
    (dict(addresses=["fd77::2", "fd77::1"]), "kernel's address"),
    (dict(addresses=[]), "empty"),
    (dict(addresses="fd77::2"), "a list"),
    (dict(addresses=["fd77::2/x"]), "invalid prefix"),
    (dict(addresses=["fd77::2"], address="10.77.0.2"), "not both"),
    (dict(address="fd77::zz"), "invalid IPv6 address 'fd77::zz'"),
    (dict(address="10.77.0.300"), "invalid IPv4 address '10.77.0.300'"),
])
def test_bad_ipv6_input_is_refused_before_anything_is_made(kw, message):
    # No namespace named like this exists, and none is created: the check comes first.
    with pytest.raises(ValueError, match=message):
        TunLink(unique_ifname(), netns="fasttcp-never-made", **kw)


def test_link_addresses_plan():
    plan = link_addresses(addresses=["10.1.2.3/16", "2001:db8:1::5/48"])
    assert [(str(a), str(k), str(n)) for a, k, n in plan] == [
        ("10.1.2.3", "10.1.0.1", "10.1.0.0/16"),
        ("2001:db8:1::5", "2001:db8:1::1", "2001:db8:1::/48")]
    assert [str(a) for a, _, _ in link_addresses()] == ["10.77.0.2"]


# ============================================================================================
# Offloads with the kernel: IPv6 SYN, TSO6 bursts in, a TSO6 super-segment out
# ============================================================================================

@pytest.mark.parametrize("offload,complete", [(True, False), (True, True), (False, False)])
def test_kernel_ipv6_syn_arrives_with_the_right_checksum_state(link_factory, netns, offload,
                                                                complete):
    link = link_factory(offload=offload, complete_checksums=complete)
    c = sock_in(netns, socket.AF_INET6)
    c.setblocking(False)
    try:
        with pytest.raises(BlockingIOError):
            c.connect((US6, 80))
        got = recv_until(link, tcp6_to(80))
        raw, fl = [(p, f) for p, f in got if tcp6_to(80)(p)][0]
        pkt = IPv6(bytes(raw))
        assert (pkt.src, pkt.dst, pkt[TCP].flags) == (KERNEL6, US6, "S")
        assert dict((k, v) for k, v in pkt[TCP].options if k == "MSS")["MSS"] == 1440
        if offload and not complete:
            # CHECKSUM_PARTIAL over IPv6: the field holds the IPv6 pseudo-header sum;
            # completing it gives scapy's checksum.
            assert fl == RX_FLAG_CSUM_PARTIAL and pkt[TCP].chksum == pseudo6(raw)
            done = partial6(raw)
            done = done[:56] + struct.pack("!H", (~ones_fold(bytes(raw[40:]))) & 0xFFFF) \
                + done[58:]
            assert scapy_ok(done)
        else:
            assert scapy_ok(raw)
            assert fl == (RX_FLAG_CSUM_VALID if offload else 0)
        assert link.parse_flags == (PARSE_NO_TCP_CSUM if offload else 0)
    finally:
        c.close()


class Peer6:
    """The least IPv6 TCP (scapy-built) that gets the kernel sending: SYN-ACK, then
    cumulative ACKs with a large window (scaled by 2**7), for in-order data only."""

    def __init__(self, link: TunLink, port: int) -> None:
        self.link, self.port = link, port
        self.iss, self.rcv_nxt, self.peer = 5000, 0, None
        self.data = bytearray()
        self.fin = False
        self.seen: list = []                      # (length, rx flags) of each data packet
        self.raw: list = []                       # the first data packets, as they came

    def seg(self, flags: str, payload: bytes = b"", seq=None, **kw) -> bytes:
        return bytes(IPv6(src=US6, dst=KERNEL6) /
                     TCP(sport=self.port, dport=self.peer, flags=flags,
                         seq=self.iss + 1 if seq is None else seq, ack=self.rcv_nxt,
                         window=65535, **kw) / Raw(payload))

    def handle(self, batch: list) -> None:
        out = []
        for raw, fl in zip(batch, self.link.last_rx_flags):
            if not tcp6_to(self.port)(raw):
                continue
            tcp = TCP(bytes(raw[40:40 + struct.unpack("!H", raw[4:6])[0]]))
            if tcp.flags.S:
                self.peer = tcp.sport
                self.rcv_nxt = (tcp.seq + 1) & 0xFFFFFFFF
                out.append(self.seg("SA", seq=self.iss,
                                    options=[("MSS", 1440), ("WScale", 7)]))
                continue
            payload = bytes(tcp.payload)
            if payload:
                self.seen.append((len(raw), fl))
                if len(self.raw) < 64:
                    self.raw.append(bytes(raw))
            if tcp.seq == self.rcv_nxt and payload:
                self.data += payload
                self.rcv_nxt = (self.rcv_nxt + len(payload)) & 0xFFFFFFFF
            if tcp.flags.F and tcp.seq + len(payload) == self.rcv_nxt:
                self.rcv_nxt = (self.rcv_nxt + 1) & 0xFFFFFFFF
                self.fin = True
            out.append(self.seg("FA" if self.fin else "A"))
        if out:
            self.link.send_batch(out)


@pytest.mark.parametrize("complete", [False, True])
def test_kernel_tso6_bursts_arrive_whole_and_byte_exact(link_factory, netns, complete):
    """A kernel IPv6 client sends 1 MiB to a scapy peer on the TUN: its TSO6 bursts come
    up whole (RX_FLAG_GSO, larger than the MTU) with partial checksums - or, with
    complete_checksums, completed in C: scapy finds every one right - and the bytes
    arrive exactly."""
    link = link_factory(offload=True, complete_checksums=complete)
    peer = Peer6(link, 7)
    data = os.urandom(1 << 20)

    def client() -> None:
        c = sock_in(netns, socket.AF_INET6, timeout=20)
        try:
            c.connect((US6, 7))
            c.sendall(data)
        finally:
            c.close()

    bg = Background(client)
    end = time.monotonic() + 20
    for _ in range(200_000):
        if peer.fin or time.monotonic() > end:
            break
        batch = link.recv_batch()
        if batch:
            peer.handle(batch)
        else:
            link.wait_readable(0.01)
    bg.join()
    assert peer.fin and bytes(peer.data) == data
    supers = [(n, fl) for n, fl in peer.seen if fl & RX_FLAG_GSO]
    assert supers and max(n for n, _ in supers) > 1500
    want = RX_FLAG_CSUM_VALID if complete else RX_FLAG_CSUM_PARTIAL
    assert all(fl & want for _, fl in peer.seen)
    assert all(scapy_ok(raw) for raw in peer.raw) == complete
    st = link.stats()
    assert st["rx_gso_packets"] >= len(supers) and st["rx_csum_errors"] == 0


@pytest.mark.parametrize("tx_thread", [False, True])
def test_tso6_super_segment_to_a_kernel_socket(link_factory, netns, tx_thread):
    """A scapy handshake with a kernel IPv6 listener, then 30000 bytes in one write as a
    TSO6 super-segment with a spoiled checksum: the kernel socket reads them exactly and
    acknowledges them all."""
    link = link_factory(offload=True, tx_thread=tx_thread)
    srv = sock_in(netns, socket.AF_INET6)
    try:
        srv.bind((KERNEL6, 5001))
        srv.listen(1)
        peer = Peer6(link, 40001)
        peer.peer = 5001
        syn = bytes(IPv6(src=US6, dst=KERNEL6) /
                    TCP(sport=40001, dport=5001, flags="S", seq=peer.iss, window=65535,
                        options=[("MSS", 1440)]))
        assert link.send_batch([syn]) == 1

        def from_server(p) -> bool:
            return p[0] >> 4 == 6 and p[6] == 6 and struct.unpack("!H", p[40:42])[0] == 5001
        got = recv_until(link, from_server)
        synack = IPv6(bytes([p for p, _ in got if from_server(p)][0]))
        assert synack[TCP].flags == "SA" and synack[TCP].ack == peer.iss + 1
        peer.rcv_nxt = synack[TCP].seq + 1
        link.send_batch([peer.seg("A")])
        conn, _ = srv.accept()
        conn.settimeout(10)
        payload = os.urandom(30000)
        big = bytearray(peer.seg("PA", payload))
        big[56:58] = b"\0\0"                # the link must put the pseudo-header sum there
        assert link.send_batch([bytes(big)], gso=1428) == 1
        link.flush()
        assert link.stats()["tx_gso_packets"] == 1
        buf = bytearray()
        for _ in range(1000):
            if len(buf) >= len(payload):
                break
            buf += conn.recv(65536)
        assert bytes(buf) == payload
        want = peer.iss + 1 + len(payload)
        recv_until(link, lambda p: from_server(p) and IPv6(bytes(p))[TCP].ack == want)
        conn.close()
    finally:
        srv.close()


# ============================================================================================
# The C loops on a datagram socket pair: exact IPv6 frames, no privileges needed
# ============================================================================================

@pytest.fixture
def dgram_pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_rx_classification_of_ipv6_vnet_frames(dgram_pair):
    a, b = dgram_pair
    io = TunIO(b.fileno(), True, 32)
    good = tcp6(b"x" * 101)
    bad = good[:-1] + bytes([good[-1] ^ 1])
    hbh = scapy.IPv6ExtHdrHopByHop
    with_hbh = tcp6(b"y" * 50, ext=hbh())
    with_hbh_bad = with_hbh[:-1] + bytes([with_hbh[-1] ^ 1])
    chain8 = tcp6(b"z", ext=hbh() / scapy.IPv6ExtHdrDestOpt() / scapy.IPv6ExtHdrRouting()
                  / scapy.IPv6ExtHdrDestOpt() / scapy.IPv6ExtHdrDestOpt()
                  / scapy.IPv6ExtHdrDestOpt() / scapy.IPv6ExtHdrDestOpt()
                  / scapy.IPv6ExtHdrDestOpt())
    chain9 = tcp6(b"z", ext=hbh() / scapy.IPv6ExtHdrDestOpt() / scapy.IPv6ExtHdrDestOpt()
                  / scapy.IPv6ExtHdrDestOpt() / scapy.IPv6ExtHdrDestOpt()
                  / scapy.IPv6ExtHdrDestOpt() / scapy.IPv6ExtHdrDestOpt()
                  / scapy.IPv6ExtHdrDestOpt() / scapy.IPv6ExtHdrDestOpt())
    in_transit = tcp6(b"r", ext=scapy.IPv6ExtHdrSegmentRouting(
        addresses=["fd77::9"], segleft=1))
    frag = bytes(IPv6(src=KERNEL6, dst=US6) / scapy.IPv6ExtHdrFragment(m=1, id=7)
                 / TCP(sport=1, dport=2) / Raw(b"f" * 64))
    lie = bytearray(good)
    lie[4:6] = struct.pack("!H", len(good))                   # payload length > the frame
    icmp6 = bytes(IPv6(src=KERNEL6, dst=US6) / scapy.ICMPv6EchoRequest(data=b"ping"))
    frames = [
        VNET.pack(1, 0, 0, 0, 40, 16) + partial6(good),          # 0: partial
        VNET.pack(2, 0, 0, 0, 0, 0) + bad,                       # 1: DATA_VALID: trusted
        bytes(10) + good,                                        # 2: plain: verified
        bytes(10) + bad,                                         # -: plain, bad: dropped
        bytes(10) + with_hbh,                                    # 3: past hop-by-hop: ok
        bytes(10) + with_hbh_bad,                                # -: ... bad: dropped
        bytes(10) + chain8,                                      # 4: 8 headers: walked
        bytes(10) + chain9,                                      # -: 9: over-long chain
        bytes(10) + in_transit,                                  # -: segments left
        bytes(10) + frag,                                        # 5: fragment: reassembly
        bytes(10) + bytes(lie),                                  # -: payload-length lie
        VNET.pack(1, GSO_TCPV6, 72, 1428, 40, 16) + partial6(good),  # 6: TSO6 + partial
        bytes(10) + icmp6,                                       # 7: not TCP: untouched
        bytes(10) + good[:39],                                   # -: shorter than 40
    ]
    for f in frames:
        a.send(f)
    got = io.recv_batch()
    assert got == [partial6(good), bad, good, with_hbh, chain8, frag, partial6(good), icmp6]
    assert list(io.last_rx_flags) == [RX_FLAG_CSUM_PARTIAL, RX_FLAG_CSUM_VALID,
                                      RX_FLAG_CSUM_VALID, RX_FLAG_CSUM_VALID,
                                      RX_FLAG_CSUM_VALID, 0,
                                      RX_FLAG_CSUM_PARTIAL | RX_FLAG_GSO, 0]
    s = io.stats()
    assert (s["rx_packets"], s["rx_csum_errors"], s["rx_errors"], s["rx_non_ip"],
            s["rx_gso_packets"]) == (8, 2, 3, 1, 1)


def test_tx_frames_ipv6_gso(dgram_pair):
    a, b = dgram_pair
    io = TunIO(b.fileno(), True, 8)
    small = tcp6(b"s" * 100, src=US6, dst=KERNEL6)
    big = tcp6(os.urandom(5000), src=US6, dst=KERNEL6, options=[("Timestamp", (1, 2))])
    cwr = tcp6(os.urandom(4000), src=US6, dst=KERNEL6, flags="PAC")
    with_ext = tcp6(os.urandom(4000), src=US6, dst=KERNEL6, ext=scapy.IPv6ExtHdrDestOpt())
    udp = bytes(IPv6(src=US6, dst=KERNEL6) / UDP(sport=1, dport=2) / Raw(bytes(3000)))
    assert io.send_batch([small, big, cwr, with_ext, udp], gso=1428) == 5
    f_small, f_big, f_cwr, f_ext, f_udp = (a.recv(70000) for _ in range(5))
    assert f_small == bytes(10) + small                       # too small for GSO: plain
    assert f_udp == bytes(10) + udp                           # GSO is for TCP only
    assert f_ext == bytes(10) + with_ext                      # never with extension headers
    hl = 40 + (big[52] >> 4) * 4
    assert VNET.unpack(f_big[:10]) == (1, GSO_TCPV6, hl, 1428, 40, 16)
    body = f_big[10:]
    assert body[:56] == big[:56] and body[58:] == big[58:]
    assert struct.unpack("!H", body[56:58])[0] == pseudo6(big)
    # CWR (RFC 3168 6.1.2) marks the super-segment ECN, as Linux does
    assert VNET.unpack(f_cwr[:10])[:2] == (1, GSO_TCPV6 | GSO_ECN)
    # gso < 0: segments fill an MTU of -gso bytes: 1500 - 40 - 20
    assert io.send_batch([big], gso=-1500) == 1
    f = a.recv(70000)
    assert VNET.unpack(f[:10])[3] == 1500 - hl
    assert io.stats()["tx_gso_packets"] == 3


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=3000), st.booleans())
def test_completing_ipv6_partial_checksums_restores_the_packet(payload, with_options):
    """Property: an IPv6 packet with its checksum made partial comes out of the link,
    with complete_checksums, identical to scapy's fully checksummed original."""
    opts = [("Timestamp", (7, 9)), ("SAck", (1, 5))] if with_options else []
    raw = tcp6(payload, options=opts)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        b.setblocking(False)
        io = TunIO(b.fileno(), True, 4, complete_checksums=True)
        a.send(VNET.pack(1, 0, 0, 0, 40, 16) + partial6(raw))
        assert io.recv_batch() == [raw]
        assert io.last_rx_flags == bytes([RX_FLAG_CSUM_VALID])
    finally:
        a.close()
        b.close()


# ============================================================================================
# The other links on IPv6 packets: pcap checksum completion, FaultyLink's CE marking
# ============================================================================================

def test_pcap_completes_ipv6_partial_checksums():
    """PcapLink records a TUN link's partial-checksum packets with the checksum completed:
    for IPv6 over the RFC 8200 8.1 pseudo-header, as scapy computes it."""
    from fasttcp.link.pcap import complete_checksum

    good = tcp6(os.urandom(777))
    assert complete_checksum(partial6(good)) == good
    udp = bytes(IPv6(src=KERNEL6, dst=US6) / UDP(sport=5, dport=6) / Raw(b"u" * 33))
    spoiled = udp[:46] + b"\0\0" + udp[48:]
    assert complete_checksum(spoiled) == udp
    with_ext = tcp6(b"e", ext=scapy.IPv6ExtHdrDestOpt())
    assert complete_checksum(with_ext) is None                # not where partials are
    assert complete_checksum(good[:50]) is None              # payload length > the bytes


def test_faulty_link_marks_ipv6_ce_in_the_traffic_class():
    """A step-marking FaultyLink sets CE in an ECN-capable IPv6 packet's Traffic Class
    (RFC 3168 5, RFC 8200 7) and leaves everything else as it was."""
    from fasttcp.link import FaultConfig, FaultyLink

    link = FaultyLink(FaultConfig(rate=8e3, ce_threshold=1))    # 1 kB/s: all queue
    ect = bytes(IPv6(src=US6, dst=KERNEL6, tc=0xA1, fl=0x12345) / TCP() / Raw(b"x" * 50))
    plain = bytes(IPv6(src=US6, dst=KERNEL6, tc=0xA0, fl=0x12345) / TCP() / Raw(b"x" * 50))
    link.push([ect, plain, ect], 0.0)
    out = link.pop(10.0)
    assert [IPv6(p).tc for p in out] == [0xA1, 0xA0, 0xA3]
    assert [IPv6(p).fl for p in out] == [0x12345] * 3
    assert out[2][:1] == ect[:1] and out[2][2:] == ect[2:]
    assert link.stats.ce_marked == 1
