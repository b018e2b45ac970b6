"""Zero-copy transmit: TSO super-segments as SplitPackets (headers + views of the send
ring, or of the application's bytes it references), written by TunIO with one writev;
anything else sees ordinary bytes."""
from __future__ import annotations

import gc
import hashlib
import random
import socket
import sys

import pytest

from fasttcp import Host
from fasttcp.link import exchange
from fasttcp.link._tunio import TunIO
from fasttcp.wire import SplitPacket, build_icmp_unreachable, parse

GSO = 65000
#: Host.receive's parse flag for packets from a TSO link (TCP checksums left to it).
NO_TCP_CSUM = 1


def _pair(split: bool, snd_buf: int = 1 << 20, server_settings=None, **settings):
    """A connected client/server pair; ``settings`` for the client, ``server_settings``
    for the server (both over the defaults here)."""
    client = Host("10.0.0.1", **{"isn_secret": bytes(16), "gso_max": GSO,
                                 "snd_buf": snd_buf, **settings})
    server = Host("10.0.0.2", **{"isn_secret": bytes(16), "gso_max": GSO,
                                 **(server_settings or {})})
    client.split_tx = split
    lst = server.listen(80)
    c = client.connect(("10.0.0.2", 80))
    exchange(client, server, 0.0)
    return client, server, c, lst.accept()


@pytest.mark.parametrize("ref_min", [0, 16384], ids=["ring", "referenced"])
def test_split_packets_are_byte_identical_to_copied_ones_and_carry_the_stream(ref_min):
    """Two identical pairs, one with split_tx: every packet flattens to exactly the bytes
    the other pair sends (headers, options, payload across ring wraps, or across the
    application's bytes objects with zero-copy send), and the stream arrives whole."""
    runs = []
    for split in (True, False):
        client, server, c, s = _pair(split, snd_buf=150_000,   # a small ring: it wraps
                                     send_ref_min=ref_min)
        data = random.Random(7).randbytes(2_000_000)
        sent, got, now, packets, kinds, wrapped = 0, bytearray(), 0.0, [], set(), 0
        while len(got) < len(data):
            sent += c.send(data[sent:sent + 70_000])
            now += 0.001
            out = client.transmit(now)
            kinds.update(type(p) for p in out)
            # "<SplitPacket H + N1 + N2 bytes>": a second piece = the ring wrapped inside
            wrapped += sum(type(p) is SplitPacket and not repr(p).endswith(" + 0 bytes>")
                           for p in out)
            packets += [bytes(p) for p in out]
            server.receive(out, now, NO_TCP_CSUM)   # as from a TSO link: sums left to it
            client.receive(server.transmit(now), now)
            got += s.recv()
        assert bytes(got) == data
        assert client.stats().get("retransmitted_segments", 0) == 0
        runs.append((packets, kinds))
        assert wrapped > 0 or not split
    (split_pkts, split_kinds), (copy_pkts, copy_kinds) = runs
    assert SplitPacket in split_kinds and SplitPacket not in copy_kinds
    assert split_pkts == copy_pkts


def test_split_packet_buffer_protocol_and_parse():
    client, server, c, s = _pair(True)
    c.send(random.Random(1).randbytes(100_000))
    out = client.transmit(0.01)
    sp = next(p for p in out if type(p) is SplitPacket)
    flat = bytes(sp)
    assert len(sp) == len(flat) > 10_000 and len(sp.head) < 100  # the first flight (IW10)
    assert memoryview(sp).readonly and bytes(memoryview(sp)) == flat
    pk = parse(sp, verify_checksums=False)         # a TSO link fills in the TCP sum
    assert pk.is_tcp and len(pk.payload) == len(flat) - len(sp.head)
    assert "SplitPacket" in repr(sp)


def test_tunio_writes_split_packets_as_the_same_frames():
    """TunIO (vnet, GSO) writes a SplitPacket with scatter I/O: the frames are the ones
    its flattened copy gives, inline and through the writer thread."""
    for threaded in (False, True):
        client, server, c, s = _pair(True, snd_buf=150_000)
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ra, rb = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for sock in (a, b, ra, rb):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        io, ref = TunIO(b.fileno(), True, 8), TunIO(rb.fileno(), True, 8)
        if threaded:
            io.start_tx_thread(1 << 20)
        try:
            data = random.Random(3).randbytes(600_000)
            sent, now, frames, want, splits = 0, 0.0, [], [], 0
            while sent < len(data) or c.send_space < 150_000:
                sent += c.send(data[sent:sent + 70_000])
                now += 0.001
                out = client.transmit(now)
                splits += sum(type(p) is SplitPacket for p in out)
                assert io.send_batch(out, 1448) == len(out)
                assert ref.send_batch([bytes(p) for p in out], 1448) == len(out)
                io.flush()
                frames += [a.recv(70_000) for _ in out]
                want += [ra.recv(70_000) for _ in out]
                server.receive(out, now, NO_TCP_CSUM)
                client.receive(server.transmit(now), now)
                s.recv()
                if sent >= len(data) and not c.send_space < 150_000:
                    break
            assert splits > 5
            assert frames == want
            assert hashlib.sha256(b"".join(frames)).digest() == \
                hashlib.sha256(b"".join(want)).digest()
            st = io.stats()
            assert st["tx_packets"] == len(frames) and st["tx_gso_packets"] >= splits
        finally:
            io.detach()
            for sock in (a, b, ra, rb):
                sock.close()


def test_zero_copy_send_keeps_the_application_bytes_alive_in_a_split_packet():
    """A large bytes object sent is referenced by the send ring, not copied; each
    SplitPacket of it holds its own reference (so the memory outlives the ring's, which
    goes with the ACK), and nothing is left holding it afterwards."""
    client, server, c, s = _pair(True)
    data = random.Random(3).randbytes(200_000)
    refs = sys.getrefcount(data)
    assert c.send(data) == len(data)
    assert sys.getrefcount(data) == refs + 1          # the ring's reference, no copy
    out = client.transmit(0.01)
    splits = [p for p in out if type(p) is SplitPacket]
    assert splits
    assert sys.getrefcount(data) == refs + 1 + len(splits)
    server.receive(out, 0.01, NO_TCP_CSUM)            # reading a packet flattens it once
    assert sys.getrefcount(data) == refs + 1
    got, now = bytearray(s.recv(1 << 20)), 0.01
    while len(got) < len(data):                       # the rest; each packet read at once
        client.receive(server.transmit(now), now)
        now += 0.001
        server.receive(client.transmit(now), now, NO_TCP_CSUM)
        got += s.recv(1 << 20)
    client.receive(server.transmit(now), now)         # all ACKed: the ring lets go
    assert got == data and len(c._send_ring) == 0
    assert sys.getrefcount(data) == refs


def test_send_ref_min_zero_always_copies_and_is_validated():
    client, server, c, s = _pair(True, send_ref_min=0)
    data = random.Random(4).randbytes(100_000)
    refs = sys.getrefcount(data)
    assert c.send(data) == len(data) and sys.getrefcount(data) == refs
    for bad in (-1, 1, 1023, 1 << 31, 2048.0):
        with pytest.raises(ValueError):
            Host("10.0.0.1", send_ref_min=bad)
    Host("10.0.0.1", send_ref_min=1024)


def test_split_packet_across_ring_and_referenced_bytes_keeps_the_bytes_alive():
    """A super-segment whose payload starts in the ring (a short write, copied) and goes on
    in a referenced bytes object: the packet owns both, so the bytes' memory stays valid
    after the ring let go of it and the application dropped it."""
    client, server, c, s = _pair(True)
    head = random.Random(5).randbytes(5000)          # under send_ref_min: copied
    data = random.Random(6).randbytes(300_000)       # referenced
    assert c.send(head) == 5000 and c.send(data) == len(data)
    ring = c._send_ring
    assert ring.referenced == len(data)
    out = client.transmit(0.01)
    sp = next(p for p in out if type(p) is SplitPacket)
    n = len(sp) - len(sp.head)
    assert n > 5000 and "+ 0 bytes>" not in repr(sp)  # two pieces: ring, then the bytes
    expected = (head + data)[:n]
    ring.release(ring.tail)                          # as if all were acknowledged
    assert ring.referenced == 0
    del data, out
    gc.collect()
    assert bytes(memoryview(sp))[len(sp.head):] == expected


def test_only_a_host_sending_split_tso_segments_references():
    """Where every segment is copied into a packet anyway (no split_tx, or no TSO),
    copying MSS-sized pieces out of the application's memory is slower than out of the
    ring: those hosts copy."""
    for split, gso in ((False, GSO), (True, 0), (True, GSO)):
        client, server, c, s = _pair(split, gso_max=gso)
        assert c.send(bytes(100_000)) == 100_000
        assert c._send_ring.referenced == (100_000 if split and gso else 0)


def test_a_connection_without_super_segments_copies():
    """Zero-copy send follows the connection's own super-segments: none towards a peer
    with a smaller MSS, and none after an ICMP fragmentation-needed cut the MSS."""
    client, server, c, s = _pair(True, server_settings={"mtu": 1400, "gso_max": 0})
    assert c.gso_max == 0
    assert c.send(bytes(100_000)) == 100_000 and c._send_ring.referenced == 0

    client, server, c, s = _pair(True)
    assert c.gso_max > 0 and c.send(bytes(50_000)) == 50_000
    assert c._send_ring.referenced == 50_000
    first = bytes(client.transmit(0.01)[0])
    client.receive([build_icmp_unreachable("10.9.9.9", "10.0.0.1", 4, first, mtu=1000)],
                   0.02)
    # RFC 1191 with timestamps (on by default): 1000 - 40 - 12 bytes of data.
    assert c.gso_max == 0 and c.info().mss == 1000 - 40 - 12
    assert c.send(bytes(50_000)) == 50_000 and c._send_ring.referenced == 50_000  # as before
