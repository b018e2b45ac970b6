"""PcapLink records checksums that offloads left partial as complete ones (by default),
and only those: the packets it hands on, and checksums that were simply wrong, stay as
they were."""
from __future__ import annotations

import errno
import socket
import struct

import pytest

from netns_util import requires_tun, sock_in, temp_netns, unique_ifname, wait_until

from fasttcp.link import PcapLink, PcapWriter, read_pcap
from fasttcp.link.pcap import complete_checksum
from fasttcp.wire import TcpFlags, build_ipv4, build_tcp

A, B = "10.0.0.1", "10.0.0.2"
KERNEL, US = "10.77.0.1", "10.77.0.2"


def ones_sum(data: bytes) -> int:
    """RFC 1071, written out independently of fasttcp.wire."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def transport_ok(packet: bytes) -> bool:
    ihl = (packet[0] & 15) * 4
    total = struct.unpack("!H", packet[2:4])[0]
    pseudo = packet[12:20] + struct.pack("!HH", packet[9], total - ihl)
    return ones_sum(pseudo + packet[ihl:total]) == 0xFFFF


def partial(packet: bytes) -> bytes:
    """The packet as a checksum offload leaves it: the field holds the folded
    pseudo-header sum only."""
    b = bytearray(packet)
    ihl = (b[0] & 15) * 4
    field = ihl + (16 if b[9] == 6 else 6)
    total = struct.unpack("!H", b[2:4])[0]
    b[field:field + 2] = struct.pack("!H", ones_sum(b[12:20] + struct.pack("!HH", b[9],
                                                                           total - ihl)))
    return bytes(b)


def tcp_packet(payload: bytes = b"hello") -> bytes:
    return bytes(build_tcp(A, B, 1234, 80, 1000, 0, int(TcpFlags.PSH | TcpFlags.ACK), 65535,
                           payload))


def udp_packet(payload: bytes = b"datagram") -> bytes:
    udp = struct.pack("!HHHH", 5000, 53, 8 + len(payload), 0) + payload
    pseudo = struct.pack("!4s4sHH", socket.inet_aton(A), socket.inet_aton(B), 17, len(udp))
    c = 0xFFFF - ones_sum(pseudo + udp)
    udp = udp[:6] + struct.pack("!H", c or 0xFFFF) + udp[8:]
    return bytes(build_ipv4(A, B, 17, udp))


class FlaggedLink:
    """Hands out fixed packets with RX flags, like a TunLink with offloads."""

    def __init__(self, packets, flags: bytes) -> None:
        self.packets, self.last_rx_flags = packets, flags
        self.sent = []

    def recv_batch(self, max=64):  # noqa: A002
        out, self.packets = self.packets, []
        return out

    def send_batch(self, packets):
        self.sent += packets
        return len(packets)


def test_complete_checksum_tcp_udp_and_what_it_leaves_alone():
    for good in (tcp_packet(), udp_packet(), tcp_packet(b"odd")):
        assert transport_ok(good)
        half = partial(good)
        assert not transport_ok(half)
        assert complete_checksum(half) == good
        assert complete_checksum(good) == good
    frag = bytearray(partial(tcp_packet()))
    frag[6] |= 0x20                                     # MF: a fragment
    assert complete_checksum(bytes(frag)) is None
    icmp = bytearray(tcp_packet())
    icmp[9] = 1
    assert complete_checksum(bytes(icmp)) is None
    assert complete_checksum(tcp_packet()[:30]) is None  # shorter than its total length
    assert complete_checksum(b"\x60" + bytes(39)) is None  # IPv6


@pytest.mark.parametrize("complete", [True, False])
def test_pcap_link_completes_only_partial_checksums(tmp_path, complete):
    half_tcp, half_udp = partial(tcp_packet()), partial(udp_packet())
    wrong = bytearray(tcp_packet(b"bad"))
    wrong[-1] ^= 0xFF                                   # a corrupt packet, not an offload's
    wrong = bytes(wrong)
    link = FlaggedLink([half_tcp, half_udp, wrong], bytes([1, 1 | 4, 0]))
    path = tmp_path / "rx.pcap"
    with PcapWriter(path) as w:
        pl = PcapLink(link, w, clock=lambda: 1.0, complete_checksums=complete)
        got = pl.recv_batch()
        pl.send_batch([tcp_packet(b"out")])
    assert got == [half_tcp, half_udp, wrong]           # handed on unchanged
    recorded = [p for _, p in read_pcap(path)[1]]
    if complete:
        assert recorded[:2] == [tcp_packet(), udp_packet()]
        assert pl.checksums_completed == 2
    else:
        assert recorded[:2] == [half_tcp, half_udp]
        assert pl.checksums_completed == 0
    assert recorded[2:] == [wrong, tcp_packet(b"out")]
    assert PcapLink(link, PcapWriter(tmp_path / "x.pcap")).complete_checksums is True


@requires_tun
def test_pcap_of_a_tun_link_with_offloads_has_valid_kernel_checksums(tmp_path):
    """The kernel's SYNs to fasttcp arrive through a TUN link with offloads with partial
    checksums; the capture has them complete (checked by an independent RFC 1071)."""
    from fasttcp.link.tun import RX_FLAG_CSUM_PARTIAL, TunLink

    path = tmp_path / "tun.pcap"
    with temp_netns() as space:
        link = TunLink(unique_ifname(), US, netns=space, offload=True)
        try:
            with PcapWriter(path) as w:
                pl = PcapLink(link, w)
                s = sock_in(space, socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                try:
                    assert s.connect_ex((US, 80)) == errno.EINPROGRESS
                    got, flags = [], []

                    def syn() -> bool:
                        batch = pl.recv_batch()
                        got.extend(batch)
                        flags.extend(link.last_rx_flags[:len(batch)])
                        return any(p[9] == 6 for p in got)

                    assert wait_until(syn, 5, 0.01)
                finally:
                    s.close()
        finally:
            link.close()
    tcp = [i for i, p in enumerate(got) if p[9] == 6]
    assert any(flags[i] & RX_FLAG_CSUM_PARTIAL for i in tcp), "no partial checksum arrived"
    assert not all(transport_ok(got[i]) for i in tcp)  # as the link delivered them
    recorded = [p for _, p in read_pcap(path)[1]]
    assert len(recorded) == len(got)
    assert all(transport_ok(recorded[i]) for i in tcp)
    assert pl.checksums_completed >= 1
