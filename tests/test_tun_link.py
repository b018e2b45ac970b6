"""TunLink against the real kernel, each test in its own network namespace.

Every test makes a uniquely named namespace (``netns_util.temp_netns``), puts a TUN device
in it with the kernel's side at 10.77.0.1/24 and fasttcp at 10.77.0.2, talks only to
addresses inside that namespace, and removes it afterwards, also on failure. Oracles: the
kernel itself (its sockets must see what we wrote, byte for byte), ``fasttcp.wire.parse``
and scapy (checksums recomputed independently).
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import subprocess
import sys
import time
import warnings

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st
from netns_util import (Background, requires_tun, sock_in, temp_netns, tun_unavailable,
                        unique_ifname, unique_netns_name, wait_until)

from fasttcp import Host
from fasttcp.link import netns as ns
from fasttcp.link import tun as tunmod
from fasttcp.link._tunio import TunIO
from fasttcp.link.tun import (RX_FLAG_CSUM_PARTIAL, RX_FLAG_CSUM_VALID, RX_FLAG_GSO,
                              TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TunLink)
from fasttcp.wire import (MalformedPacket, SegmentBatch, TcpFlags, TcpOptions, build_icmp_echo,
                          build_ipv4, build_tcp, parse)

KERNEL, US = "10.77.0.1", "10.77.0.2"
PARSE_NO_TCP_CSUM = 1
SYN, ACK, FIN, PSH, RST = (int(TcpFlags.SYN), int(TcpFlags.ACK), int(TcpFlags.FIN),
                           int(TcpFlags.PSH), int(TcpFlags.RST))


@pytest.fixture
def netns():
    reason = tun_unavailable()
    if reason:
        pytest.skip(reason)
    with temp_netns() as name:
        yield name


@pytest.fixture
def link_factory(netns):
    """Make TunLinks in the test's namespace; all are closed at the end."""
    made = []

    def make(**kw) -> TunLink:
        kw.setdefault("name", unique_ifname())
        kw.setdefault("address", US)
        link = TunLink(netns=netns, **kw)
        made.append(link)
        return link

    yield make
    for link in made:
        link.close()


def recv_until(link: TunLink, pred, timeout: float = 5.0, rounds: int = 10_000) -> list:
    """Read batches until some packet satisfies ``pred``; returns everything read."""
    got: list = []
    end = time.monotonic() + timeout
    for _ in range(rounds):
        batch = link.recv_batch()
        got.extend(batch)
        if any(pred(p) for p in batch):
            return got
        if time.monotonic() > end:
            break
        link.wait_readable(0.05)
    raise AssertionError(f"expected packet not seen; got {len(got)} packets")


def is_tcp_to(port: int):
    def pred(p) -> bool:
        try:
            pk = parse(p, verify_checksums=False)
        except MalformedPacket:
            return False
        return pk.is_tcp and pk.dport == port
    return pred


def ones_fold(data: bytes, acc: int = 0) -> int:
    """RFC 1071 one's-complement sum of big-endian 16-bit words, folded (no complement)."""
    if len(data) % 2:
        data += b"\0"
    acc += sum(struct.unpack(f"!{len(data) // 2}H", data))
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return acc


def pseudo_sum(raw: bytes) -> int:
    """Folded sum of the IPv4 pseudo-header of a TCP packet (RFC 9293 3.1)."""
    ihl = (raw[0] & 15) * 4
    total = struct.unpack("!H", raw[2:4])[0]
    return ones_fold(bytes(raw[12:20]) + struct.pack("!HH", 6, total - ihl))


def ip_link(netns: str, name: str):
    """(link message, IPv4 (address, prefix) list) of a device, or None, via pyroute2."""
    with ns.iproute(netns) as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return None
        link = ipr.get_links(idx[0])[0]
        addrs = [(a.get_attr("IFA_ADDRESS"), a["prefixlen"])
                 for a in ipr.get_addr(index=idx[0], family=socket.AF_INET)]
        routes = [(r.get_attr("RTA_DST"), r["dst_len"])
                  for r in ipr.get_routes(family=socket.AF_INET, oif=idx[0])
                  if r.get_attr("RTA_TABLE") == 254]
        return link, addrs, routes


# ============================================================================================
# Device setup and teardown
# ============================================================================================

def test_device_created_in_netns_configured_and_removed(netns):
    name = unique_ifname()
    link = TunLink(name, US, 24, mtu=1400, netns=netns, txqueuelen=5000)
    try:
        msg, addrs, routes = ip_link(netns, name)
        assert msg.get_attr("IFLA_MTU") == 1400
        assert msg.get_attr("IFLA_TXQLEN") == 5000
        assert msg["flags"] & 1, "interface is not up (IFF_UP)"
        # Only the kernel's address is on the device; fasttcp's own is reached through the
        # connected route of the /24.
        assert addrs == [(KERNEL, 24)]
        assert ("10.77.0.0", 24) in routes
        assert (link.address, link.kernel_address, link.prefix) == (US, KERNEL, 24)
        assert fcntl.fcntl(link.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
        assert link.offload and link.vnet_hdr and link.parse_flags == PARSE_NO_TCP_CSUM
        assert link.offload_flags == TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
        # Created inside the namespace, not where the test runs.
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            assert ipr.link_lookup(ifname=name) == []
    finally:
        link.close()
    assert ip_link(netns, name) is None
    assert link.closed and ns.netns_exists(netns)      # the namespace was not the link's
    link.close()                                        # idempotent
    with pytest.raises(ValueError):
        link.recv_batch()


@requires_tun
def test_link_creates_missing_netns_and_removes_it():
    name = unique_netns_name()
    assert not ns.netns_exists(name)
    try:
        with TunLink("ftun0", US, netns=name) as link:
            assert ns.netns_exists(name)
            assert ip_link(name, "ftun0") is not None
            assert repr(link).startswith("<TunLink ftun0 netns=")
        assert not ns.netns_exists(name)
    finally:
        ns.remove_netns(name)                            # only if the test failed


def test_offload_off_sets_flags_to_zero(link_factory):
    link = link_factory(offload=False)
    assert not link.offload and not link.vnet_hdr
    assert link.offload_flags == 0 and link.parse_flags == 0


def test_rps_cpus_steers_the_device_queue_and_host_mounts_are_untouched(link_factory, netns):
    with open("/proc/self/mountinfo") as f:
        mounts = f.read()
    link = link_factory(rps_cpus={0})
    path = f"class/net/{link.name}/queues/rx-0/rps_cpus"
    assert int(ns.read_net_sysfs(netns, path).replace(",", ""), 16) == 1
    plain = link_factory()
    assert int(ns.read_net_sysfs(netns, f"class/net/{plain.name}/queues/rx-0/rps_cpus")
               .replace(",", ""), 16) == 0
    with open("/proc/self/mountinfo") as f:
        assert f.read() == mounts          # the sysfs mount lived in the child's namespace
    # ... and our /sys does not show the namespace's device
    assert not os.path.exists(f"/sys/class/net/{link.name}")


def test_rps_cpus_and_sysfs_paths_are_checked(netns):
    with pytest.raises(ValueError):
        TunLink(unique_ifname(), address=US, netns=netns, rps_cpus={os.cpu_count() or 1})
    with pytest.raises(ValueError):
        TunLink(unique_ifname(), address=US, netns=netns, rps_cpus=set())
    with pytest.raises(ValueError):
        ns.read_net_sysfs(netns, "../etc/passwd")
    with pytest.raises(FileNotFoundError):
        ns.read_net_sysfs(netns, "class/net/no-such-device/mtu")


def test_attach_existing_device_and_offload_flags_reset(netns):
    """A persistent device (made with pyroute2) is attached to and left in place; the
    offload flags are set on every open, since they outlive the fd."""
    name = unique_ifname("ftp")
    with ns.iproute(netns) as ipr:
        ipr.link("add", ifname=name, kind="tuntap", mode="tun")
        idx = ipr.link_lookup(ifname=name)[0]
        ipr.addr("add", index=idx, address=KERNEL, prefixlen=24)
        ipr.link("set", index=idx, state="up", mtu=1500)
    with TunLink.attach(name, netns=netns, address=US) as link:
        assert link.offload and not link.owned
        assert (link.kernel_address, link.prefix, link.mtu) == (KERNEL, 24, 1500)
    assert ip_link(netns, name) is not None           # attach does not delete
    # Offload now off on the same device: a kernel SYN must come complete and checksummed.
    with TunLink.attach(name, netns=netns, address=US, offload=False) as link:
        assert link.offload_flags == 0
        c = sock_in(netns)
        c.setblocking(False)
        try:
            with pytest.raises(BlockingIOError):
                c.connect((US, 80))
            got = recv_until(link, is_tcp_to(80))
            syn = parse([p for p in got if is_tcp_to(80)(p)][0])   # verifies checksums
            assert syn.flag_bits & SYN
        finally:
            c.close()
    with pytest.raises(FileNotFoundError):
        TunLink.attach("nosuchdev0", netns=netns)


# ============================================================================================
# Errors
# ============================================================================================

@pytest.mark.parametrize("address", ["10.77.0.300", "fe80::1", "", "10.77.0.0",
                                     "10.77.0.255", "10.77.0.1", "224.0.0.1"])
def test_bad_address_is_refused_before_anything_is_made(address):
    with pytest.raises(ValueError):
        TunLink(unique_ifname(), address, netns=unique_netns_name())


def test_bad_prefix_mtu_and_kernel_address():
    with pytest.raises(ValueError):
        TunLink("ftun0", US, prefix=31)
    with pytest.raises(ValueError):
        TunLink("ftun0", US, mtu=60)
    with pytest.raises(ValueError):
        TunLink("ftun0", US, kernel_address="10.78.0.1")
    with pytest.raises(ValueError):
        TunLink("ftun0", US, batch=0)


@pytest.mark.parametrize("name", ["x" * 16, "", "a/b", "a b", "..", "tün0"])
def test_bad_interface_name(name):
    with pytest.raises(ValueError):
        TunLink(name, US, netns=unique_netns_name())


def test_name_taken(link_factory, netns):
    link = link_factory()
    with pytest.raises(FileExistsError):
        TunLink(link.name, "10.77.1.2", netns=netns)
    with pytest.raises(FileExistsError):
        TunLink("lo", "10.77.2.2", netns=netns)
    assert ip_link(netns, link.name) is not None      # the first is untouched


def test_no_dev_net_tun(monkeypatch):
    monkeypatch.setattr(tunmod, "TUN_PATH", "/nonexistent/net/tun")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TunLink(unique_ifname(), US, netns=unique_netns_name())


def test_without_privileges_permission_error(netns):
    """A child that entered the test namespace and then dropped root gets PermissionError."""
    code = (
        "import os, sys\n"
        "from pyroute2 import netns\n"
        "from fasttcp.link.tun import TunLink\n"
        f"netns.setns({netns!r}, flags=0)     # this child stays in the test namespace\n"
        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        "try:\n"
        f"    TunLink({unique_ifname()!r}, '10.77.0.2')\n"
        "except PermissionError as e:\n"
        "    print('PermissionError', e)\n"
        "    sys.exit(0)\n"
        "sys.exit(3)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    # cwd "/": a child started in the repository would import the source tree (python -c
    # puts the working directory first on sys.path), not the installed, compiled package.
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, env=env, cwd="/")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CAP_NET_ADMIN" in r.stdout


# ============================================================================================
# Packets in and out
# ============================================================================================

@pytest.mark.parametrize("offload", [True, False])
def test_kernel_ping_arrives_and_reply_reaches_kernel(link_factory, netns, offload):
    link = link_factory(offload=offload)
    icmp = sock_in(netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        payload = b"fasttcp-ping-" + bytes(range(40))
        req = build_icmp_echo(KERNEL, US, 0x1234, 7, payload)[20:]   # the ICMP part
        icmp.sendto(req, (US, 0))
        got = recv_until(link, lambda p: parse(p).is_icmp)
        pk = parse([p for p in got if parse(p).is_icmp][0])          # checksums verified
        assert (pk.src, pk.dst, pk.icmp_type, pk.icmp_id, pk.icmp_seq) == (KERNEL, US, 8,
                                                                        0x1234, 7)
        assert pk.payload == payload
        reply = build_icmp_echo(US, KERNEL, pk.icmp_id, pk.icmp_seq, pk.payload, reply=True)
        assert link.send_batch([reply]) == 1
        for _ in range(20):                       # the raw socket also sees its own request
            data, (src, _) = icmp.recvfrom(2048)
            ihl = (data[0] & 15) * 4
            if data[ihl] == 0:
                break
        assert src == US and data[ihl + 4:ihl + 8] == struct.pack("!HH", 0x1234, 7)
        assert data[ihl + 8:] == payload
        link.flush()                     # a writer thread counts just after the write
        assert link.stats()["tx_packets"] == 1
    finally:
        icmp.close()


@pytest.mark.parametrize("offload,complete", [(True, False), (True, True), (False, False)])
def test_kernel_syn_arrives_and_parses(link_factory, netns, offload, complete):
    scapy = pytest.importorskip("scapy.all")
    link = link_factory(offload=offload, complete_checksums=complete)
    c = sock_in(netns)
    c.setblocking(False)
    try:
        with pytest.raises(BlockingIOError):
            c.connect((US, 80))
        got = recv_until(link, is_tcp_to(80))
        flags = link.last_rx_flags
        i = next(i for i, p in enumerate(got[-len(flags):]) if is_tcp_to(80)(p))
        raw, fl = got[-len(flags):][i], flags[i]
        syn = SegmentBatch(4)
        assert syn.parse([raw], link.parse_flags) == 1
        pk = syn.packet(0)
        assert (pk.src, pk.dst, pk.dport) == (KERNEL, US, 80)
        assert pk.flag_bits == SYN and pk.options.mss == 1460
        # Independent check of the checksum state with scapy.
        ip = scapy.IP(bytes(raw))
        good = scapy.IP(bytes(raw))
        del good[scapy.TCP].chksum
        good = scapy.IP(bytes(good))
        if offload and not complete:
            assert fl & RX_FLAG_CSUM_PARTIAL
            # CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum, and
            # completing it (summing the segment over it) gives scapy's checksum.
            ihl = (raw[0] & 15) * 4
            assert ip[scapy.TCP].chksum == pseudo_sum(raw)
            completed = (~ones_fold(bytes(raw[ihl:]))) & 0xFFFF
            assert completed == good[scapy.TCP].chksum
            with pytest.raises(MalformedPacket):
                parse(raw)
        else:
            assert ip[scapy.TCP].chksum == good[scapy.TCP].chksum
            parse(raw)                                   # full verification passes
            if offload:
                assert fl & RX_FLAG_CSUM_VALID
    finally:
        c.close()


def test_batch_read_returns_several_packets_in_one_call(link_factory, netns):
    link = link_factory()
    u = sock_in(netns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(12):
            u.sendto(bytes([i]) * 64, (US, 9))
        assert wait_until(lambda: link.wait_readable(0.01), timeout=5)
        time.sleep(0.05)                               # let all 12 reach the queue
        first = link.recv_batch(5)
        assert len(first) == 5                         # max is honoured
        rest = link.recv_batch()
        assert len(rest) == 7                          # the rest, in one call
        got = first + rest
        assert [p[28] for p in got] == list(range(12))  # in order, UDP payload intact
        assert all(p[9] == 17 and p[16:20] == socket.inet_aton(US) for p in got)
        assert link.recv_batch() == []                 # empty queue: no block, no error
        st = link.stats()
        assert st["rx_packets"] == 12 and st["rx_calls"] >= 3
    finally:
        u.close()


def test_recv_batch_without_copy_gives_views_into_the_arena(link_factory, netns):
    link = link_factory(batch=8)
    u = sock_in(netns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(3):
            u.sendto(bytes([0xA0 + i]) * 32, (US, 9))
        assert wait_until(lambda: link.wait_readable(0.01), timeout=5)
        time.sleep(0.02)
        views = link.recv_batch(copy=False)
        assert len(views) == 3 and all(isinstance(v, memoryview) for v in views)
        assert [bytes(v[28:30]) for v in views] == [bytes([0xA0 + i]) * 2 for i in range(3)]
    finally:
        u.close()


@pytest.mark.parametrize("tx_thread", [False, True], ids=["inline", "writer-thread"])
def test_send_batch_writes_every_packet(link_factory, netns, tx_thread):
    link = link_factory(tx_thread=tx_thread)
    assert link.tx_thread is tx_thread
    u = sock_in(netns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind((KERNEL, 5555))
        pkts = []
        for i in range(20):
            data = b"pkt%03d" % i
            udp = struct.pack("!HHHH", 4000, 5555, 8 + len(data), 0) + data  # csum 0: none
            p = build_ipv4(US, KERNEL, 17, udp)
            pkts.append(p if i % 3 == 0 else bytearray(p) if i % 3 == 1 else memoryview(p))
        assert link.send_batch(pkts) == 20
        assert link.send_batch([]) == 0
        got = [u.recvfrom(100) for _ in range(20)]
        assert [d for d, _ in got] == [b"pkt%03d" % i for i in range(20)]
        assert all(a == (US, 4000) for _, a in got)
        link.flush()
        st = link.stats()
        assert st["tx_thread"] is tx_thread and st["tx_queue_drops"] == 0
        assert st["tx_packets"] == 20 and st["tx_dropped"] == 0 and st["tx_calls"] == 1
        with pytest.raises(TypeError):
            link.send_batch([object()])
    finally:
        u.close()


# ============================================================================================
# TCP with the kernel
# ============================================================================================

def pump(link: TunLink, host: Host, step, timeout: float = 20.0, rounds: int = 500_000):
    """Drive a fasttcp Host over the link until ``step()`` returns True (bounded)."""
    end = time.monotonic() + timeout
    for _ in range(rounds):
        now = time.monotonic()
        if step() or now > end:
            return now <= end
        packets = link.recv_batch()
        if packets:
            host.receive(packets, now)
        out = host.transmit(now)
        if out:
            link.send_batch(out)
        if not packets and not out:
            due = host.poll_at()
            link.wait_readable(0.005 if due is None else min(0.005, max(0.0, due - now)))
    return False


@pytest.mark.parametrize("offload", [True, False])
def test_kernel_tcp_transfer_through_fasttcp_host(link_factory, netns, offload):
    """The kernel sends 2 MB to a fasttcp Host over the TUN and gets 256 KB back. With
    offloads the kernel's TSO super-packets arrive whole (their checksums completed by
    the link, since Host verifies every checksum)."""
    link = link_factory(offload=offload, complete_checksums=True)
    host = Host(US, mtu=1500)
    lst = host.listen(80)
    up = os.urandom(2 << 20)
    down = os.urandom(256 << 10)
    sizes: list = []

    def client() -> bytes:
        c = sock_in(netns, timeout=20)
        try:
            c.connect((US, 80))
            c.sendall(up)
            c.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                d = c.recv(65536)
                if not d:
                    return b"".join(chunks)
                chunks.append(d)
        finally:
            c.close()

    bg = Background(client)
    got = bytearray()
    state = {"conn": None, "sent": 0, "closed": False}
    orig_recv = link.recv_batch

    def recv_batch(max=None, copy=True):                 # noqa: A002 - record sizes
        b = orig_recv(max, copy)
        sizes.extend(len(p) for p in b)
        return b

    link.recv_batch = recv_batch

    def step() -> bool:
        conn = state["conn"]
        if conn is None:
            state["conn"] = conn = lst.accept()
            if conn is None:
                return False
        while conn.readable:
            got.extend(conn.recv(1 << 20))
        if conn.eof and len(got) == len(up):
            while state["sent"] < len(down) and conn.send_space:
                state["sent"] += conn.send(down[state["sent"]:state["sent"] + 65536])
            if state["sent"] == len(down) and not state["closed"]:
                conn.close()
                state["closed"] = True
        return state["closed"] and not bg.thread.is_alive()

    assert pump(link, host, step), (len(got), state, host.stats())
    assert bg.join() == down
    assert bytes(got) == up
    st = link.stats()
    if offload:
        assert st["rx_gso_packets"] > 0 and max(sizes) > 1500, (st, max(sizes))
        assert max(sizes) <= 65535
    else:
        assert st["rx_gso_packets"] == 0 and max(sizes) <= 1500
    assert host.stats().get("drop_bad_tcp_checksum", 0) == 0


class MiniResponder:
    """The least TCP that gets the kernel sending: SYN-ACK, then cumulative ACKs with a
    large window (scaled by 2**7), for in-order data only."""

    def __init__(self, link: TunLink, port: int) -> None:
        self.link, self.port = link, port
        self.iss, self.rcv_nxt, self.peer = 5000, 0, None
        self.data = bytearray()
        self.fin = False
        self.batch = SegmentBatch(64)
        self.packets: list = []          # (length, rx flags, accepted with full checksums?)

    def handle(self, batch: list) -> None:
        flags = self.link.last_rx_flags
        b = self.batch
        b.parse(batch, self.link.parse_flags)
        out = []
        for i, raw in enumerate(batch):
            try:
                pk = b.packet(i)
            except MalformedPacket:
                continue
            if not pk.is_tcp or pk.dport != self.port:
                continue
            try:
                parse(raw)
                full_ok = True
            except MalformedPacket:
                full_ok = False
            self.packets.append((len(raw), flags[i], full_ok))
            if pk.flag_bits & SYN:
                self.peer = pk.sport
                self.rcv_nxt = (pk.seq + 1) & 0xFFFFFFFF
                out.append(build_tcp(US, KERNEL, self.port, pk.sport, self.iss, self.rcv_nxt,
                                     SYN | ACK, 65535,
                                     options=TcpOptions(mss=1460, wscale=7)))
                continue
            if pk.seq == self.rcv_nxt and pk.payload_len:
                self.data += pk.payload
                self.rcv_nxt = (self.rcv_nxt + pk.payload_len) & 0xFFFFFFFF
            if pk.flag_bits & FIN and pk.seq + pk.payload_len == self.rcv_nxt:
                self.rcv_nxt = (self.rcv_nxt + 1) & 0xFFFFFFFF
                self.fin = True
            out.append(build_tcp(US, KERNEL, self.port, self.peer, self.iss + 1, self.rcv_nxt,
                                 ACK | (FIN if self.fin else 0), 65535))
        if out:
            self.link.send_batch(out)


def test_offload_super_packets_with_partial_checksums(link_factory, netns):
    """Without completion, the kernel's packets carry partial checksums: they parse with
    the link's parse_flags, and super-packets fail full verification (their checksum
    field holds only the pseudo-header sum)."""
    link = link_factory(offload=True, complete_checksums=False)
    resp = MiniResponder(link, 7)
    data = os.urandom(1 << 20)

    def client() -> None:
        c = sock_in(netns, timeout=20)
        try:
            c.connect((US, 7))
            c.sendall(data)
        finally:
            c.close()

    bg = Background(client)
    end = time.monotonic() + 20
    for _ in range(200_000):
        if resp.fin or time.monotonic() > end:
            break
        batch = link.recv_batch()
        if batch:
            resp.handle(batch)
        else:
            link.wait_readable(0.01)
    bg.join()
    assert resp.fin and bytes(resp.data) == data
    supers = [p for p in resp.packets if p[1] & RX_FLAG_GSO]
    assert supers and max(n for n, _, _ in supers) > 1500
    assert all(fl & RX_FLAG_CSUM_PARTIAL for _, fl, _ in resp.packets)
    assert sum(ok for _, _, ok in supers) < len(supers)
    assert link.stats()["rx_csum_errors"] == 0


def test_send_gso_super_segment_to_kernel(link_factory, netns):
    """A hand-made handshake with a kernel listener, then 20000 bytes in one write as a
    TSO super-segment: the kernel's socket reads them all."""
    link = link_factory(offload=True)
    srv = sock_in(netns)
    try:
        srv.bind((KERNEL, 5001))
        srv.listen(1)
        sport, iss = 40001, 1000
        syn = build_tcp(US, KERNEL, sport, 5001, iss, 0, SYN, 65535,
                        options=TcpOptions(mss=1460))
        assert link.send_batch([syn]) == 1

        def from_server(p) -> bool:
            pk = parse(p, verify_checksums=False)
            return pk.is_tcp and pk.sport == 5001
        got = recv_until(link, lambda p: from_server(p))
        synack = parse([p for p in got if from_server(p)][0], verify_checksums=False)
        assert synack.flag_bits == SYN | ACK and synack.ack == iss + 1
        rcv = synack.seq + 1
        link.send_batch([build_tcp(US, KERNEL, sport, 5001, iss + 1, rcv, ACK, 65535)])
        conn, _ = srv.accept()
        conn.settimeout(10)
        payload = os.urandom(20000)
        big = build_tcp(US, KERNEL, sport, 5001, iss + 1, rcv, ACK | PSH, 65535, payload)
        # Spoil the checksum: the link must replace it with the pseudo-header sum.
        big = big[:36] + b"\x00\x00" + big[38:]
        assert link.send_batch([big], gso=1448) == 1
        assert link.stats()["tx_gso_packets"] == 1
        buf = bytearray()
        for _ in range(1000):
            if len(buf) >= len(payload):
                break
            buf += conn.recv(65536)
        assert bytes(buf) == payload
        recv_until(link, lambda p: from_server(p) and parse(p, verify_checksums=False).ack
                   == iss + 1 + len(payload))
        conn.close()
        with pytest.raises(ValueError):
            link_factory(offload=False).send_batch([big], gso=1448)
    finally:
        srv.close()


# ============================================================================================
# The C read/write loops on a datagram socket pair: exact frames, no privileges needed
# ============================================================================================
# An AF_UNIX datagram socket keeps frame boundaries like a TUN fd, so TunIO can be fed
# hand-made virtio_net_hdr frames and what it writes can be read back byte for byte.

VNET = struct.Struct("<BBHHHH")       # flags, gso_type, hdr_len, gso_size, csum_start, offset


@pytest.fixture
def dgram_pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def partial(raw: bytes) -> bytes:
    """The packet as the kernel hands it over with CHECKSUM_PARTIAL."""
    ihl = (raw[0] & 15) * 4
    return raw[:ihl + 16] + struct.pack("!H", pseudo_sum(raw)) + raw[ihl + 18:]


def tcp_pkt(payload: bytes = b"hello", **kw) -> bytes:
    return build_tcp(KERNEL, US, 40000, 80, 1000, 2000, ACK | PSH, 65535, payload, **kw)


NEEDS_CSUM = VNET.pack(1, 0, 0, 0, 20, 16)


def test_rx_classification_of_vnet_frames(dgram_pair):
    a, b = dgram_pair
    io = TunIO(b.fileno(), True, 16)
    good = tcp_pkt(b"x" * 101)
    bad = good[:-1] + bytes([good[-1] ^ 1])
    frag = bytearray(tcp_pkt())
    frag[6] |= 0x20                                                # MF set
    icmp = build_icmp_echo(KERNEL, US, 1, 1, b"ping")
    not_ip = bytes([0x50]) + bytes(47)                            # version 5
    frames = [
        NEEDS_CSUM + partial(good),                        # 0: partial
        VNET.pack(2, 0, 0, 0, 0, 0) + bad,                 # 1: DATA_VALID: trusted as is
        bytes(10) + good,                                  # 2: plain: verified by the link
        bytes(10) + bad,                                   # -: plain, bad: dropped
        bytes(10) + not_ip,                                # -: neither IPv4 nor IPv6
        b"\x01\x02\x03",                                   # -: shorter than the header
        VNET.pack(1, 1, 40, 1448, 20, 16) + partial(good),  # 3: GSO + partial
        VNET.pack(1, 0, 0, 0, 20, 2000) + partial(good),   # -: checksum offset out of range
        bytes(10) + icmp,                                  # 4: not TCP: untouched
        bytes(10) + bytes(frag),                           # 5: fragment: left to the parser
    ]
    for f in frames:
        a.send(f)
    got = io.recv_batch()
    assert got == [partial(good), bad, good, partial(good), icmp, bytes(frag)]
    assert list(io.last_rx_flags) == [RX_FLAG_CSUM_PARTIAL, RX_FLAG_CSUM_VALID,
                                      RX_FLAG_CSUM_VALID,
                                      RX_FLAG_CSUM_PARTIAL | RX_FLAG_GSO, 0, 0]
    st = io.stats()
    assert (st["rx_packets"], st["rx_csum_errors"], st["rx_non_ip"], st["rx_errors"],
            st["rx_gso_packets"]) == (6, 1, 1, 2, 1)
    assert io.parse_flags == PARSE_NO_TCP_CSUM
    # What the host would do: with the link's flag every TCP packet parses.
    batch = SegmentBatch(8)
    assert batch.parse(got, io.parse_flags) == 5                  # all but the fragment
    assert io.recv_batch() == [] and io.last_rx_flags == b""


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=3000), st.booleans())
def test_completing_partial_checksums_restores_the_packet(payload, with_options):
    """Property: a packet with its checksum made partial comes out of the link, with
    complete_checksums, identical to the fully checksummed original."""
    opts = TcpOptions(timestamps=(7, 9), sack=[(1, 5)]) if with_options else None
    raw = tcp_pkt(payload, options=opts)
    ihl = (raw[0] & 15) * 4
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        b.setblocking(False)
        io = TunIO(b.fileno(), True, 4, complete_checksums=True)
        a.send(VNET.pack(1, 0, 0, 0, ihl, 16) + partial(raw))
        assert io.recv_batch() == [raw]
        assert io.last_rx_flags == bytes([RX_FLAG_CSUM_VALID])
    finally:
        a.close()
        b.close()


def test_rx_without_vnet_header_passes_packets_through(dgram_pair):
    a, b = dgram_pair
    io = TunIO(b.fileno(), False, 4)
    bad = bytearray(tcp_pkt())
    bad[-1] ^= 0xFF
    for p in (tcp_pkt(), bytes(bad), tcp_pkt(b"3"), tcp_pkt(b"4"), tcp_pkt(b"5")):
        a.send(p)
    got = io.recv_batch(99)                    # clipped to the batch size
    assert got == [tcp_pkt(), bytes(bad), tcp_pkt(b"3"), tcp_pkt(b"4")]
    assert io.parse_flags == 0 and io.last_rx_flags == bytes(4)
    assert io.recv_batch(0) == []
    assert io.recv_batch() == [tcp_pkt(b"5")]


def test_rx_batch_stops_at_a_byte_budget(dgram_pair):
    """max_bytes ends a batch once its packets hold that much (the packet that crosses
    the line is kept), so a burst of 64 KB super-packets is acknowledged in parts."""
    a, b = dgram_pair
    io = TunIO(b.fileno(), False, 64)
    pkts = [numbered(i, 1000) for i in range(10)]           # 1,040 bytes each
    for p in pkts:
        a.send(p)
    assert io.recv_batch(max_bytes=2500) == pkts[0:3]
    assert io.recv_batch(max_bytes=1) == pkts[3:4]           # at least one packet
    assert io.recv_batch(2, max_bytes=1 << 20) == pkts[4:6]  # the count still applies
    assert io.recv_batch(max_bytes=-1) == pkts[6:]           # <= 0: no byte limit
    assert io.recv_batch(max_bytes=100) == []


def test_tx_frames_plain_and_gso(dgram_pair):
    a, b = dgram_pair
    io = TunIO(b.fileno(), True, 4)
    small = tcp_pkt(b"s" * 100)
    big = tcp_pkt(os.urandom(5000), options=TcpOptions(timestamps=(1, 2)))
    udp = build_ipv4(US, KERNEL, 17, struct.pack("!HHHH", 1, 2, 8 + 3000, 0) + bytes(3000))
    assert io.send_batch([small, big, udp], gso=1448) == 3
    f_small, f_big, f_udp = (a.recv(70000) for _ in range(3))
    assert f_small == bytes(10) + small                       # too small for GSO: plain
    assert f_udp == bytes(10) + udp                           # GSO is for TCP only
    hdr = VNET.unpack(f_big[:10])
    assert hdr == (1, 1, 20 + 32, 1448, 20, 16)
    body = f_big[10:]
    # Everything as given, except the checksum: the pseudo-header sum for the kernel.
    assert body[:36] == big[:36] and body[38:] == big[38:]
    assert struct.unpack("!H", body[36:38])[0] == pseudo_sum(big)
    st = io.stats()
    assert st["tx_packets"] == 3 and st["tx_gso_packets"] == 1
    assert st["tx_bytes"] == len(small) + len(big) + len(udp)
    # Without a vnet header the packet goes out exactly as given.
    io2 = TunIO(b.fileno(), False, 4)
    assert io2.send_batch(iter([small])) == 1 and a.recv(70000) == small
    with pytest.raises(ValueError):
        io2.send_batch([big], gso=1448)
    with pytest.raises(ValueError):
        io.send_batch([big], gso=-70000)


def test_tx_stops_at_eagain_and_counts_drops(dgram_pair):
    a, b = dgram_pair
    b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    io = TunIO(b.fileno(), False, 4)
    pkts = [tcp_pkt(b"z" * 1000)] * 2000
    n = io.send_batch(pkts)                   # the peer never reads: the buffer fills
    assert 0 < n < len(pkts)
    st = io.stats()
    assert st["tx_packets"] == n and st["tx_dropped"] == len(pkts) - n
    assert st["tx_blocked"] == 1


# The writer thread (TunIO.start_tx_thread): a C thread writes what send_batch queued.

RING_MIN = 2 * (65536 + 64)              # the smallest ring start_tx_thread takes


def numbered(i: int, size: int) -> bytes:
    """A TCP packet of ``size`` payload bytes that says which one it is."""
    return tcp_pkt(struct.pack("!I", i) * (size // 4) + b"x" * (size % 4))


def recv_frames(sock: socket.socket, n: int, timeout: float = 10.0) -> list:
    """``n`` datagrams from a non-blocking socket, waiting at most ``timeout``."""
    out: list = []
    end = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        try:
            out.append(sock.recv(70000))
        except BlockingIOError:
            time.sleep(0.001)
    return out


def test_tx_thread_writes_everything_in_order_through_a_wrapping_ring(dgram_pair):
    """Batches of mixed sizes, far more bytes than the ring holds: every frame comes out
    in order, byte for byte what the inline writer makes (GSO headers included)."""
    a, b = dgram_pair
    ref_a, ref_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    io = TunIO(b.fileno(), True, 4)
    ref = TunIO(ref_b.fileno(), True, 4)            # inline: the expected frames
    rng = __import__("random").Random(5)
    try:
        io.start_tx_thread(RING_MIN)
        assert io.tx_thread and ref.tx_thread is False
        io.start_tx_thread(RING_MIN)                # a second start is a no-op
        total = sent_bytes = 0
        for _rnd in range(150):
            pkts = [numbered(total + k, rng.choice([0, 5, 1000, 1460, 3000, 9000]))
                    for k in range(rng.randint(1, 12))]
            gso = rng.choice([0, 1448, -1500])
            assert io.send_batch(pkts, gso) == len(pkts)
            assert ref.send_batch(pkts, gso) == len(pkts)
            io.flush()
            assert io.tx_queued == 0
            want = [ref_a.recv(70000) for _ in pkts]
            assert recv_frames(a, len(pkts)) == want
            total += len(pkts)
            sent_bytes += sum(map(len, pkts))
        assert sent_bytes > 5 * RING_MIN                # the ring wrapped many times
        st = io.stats()
        assert (st["tx_packets"], st["tx_bytes"], st["tx_dropped"], st["tx_queue_drops"],
                st["tx_calls"]) == (total, sent_bytes, 0, 0, 150)
        assert st["tx_gso_packets"] == ref.stats()["tx_gso_packets"] > 0
        io.stop_tx_thread()
        assert not io.tx_thread and io.stats()["tx_packets"] == total   # counts kept
        assert io.send_batch([numbered(0, 10)]) == 1 and a.recv(100)    # inline again
        with pytest.raises(ValueError):
            TunIO(b.fileno(), False, 4).start_tx_thread(1000)           # too small a ring
    finally:
        io.stop_tx_thread()
        ref_a.close()
        ref_b.close()


def test_tx_thread_full_ring_drops_and_detach_writes_the_rest():
    """A writer stuck on a peer that does not read: the ring fills and later packets are
    dropped and counted (never blocking the caller); what was queued still goes out, in
    order, once the peer reads - and detach() writes what is left before it returns."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    io = TunIO(b.fileno(), False, 4)
    try:
        b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        a.setblocking(False)                         # b blocks: the thread waits in write
        io.start_tx_thread(RING_MIN)
        pkts = [numbered(i, 1000) for i in range(400)]          # ~420 KB, ring ~131 KB
        t0 = time.monotonic()
        assert io.send_batch(pkts) == len(pkts)                  # all taken: nothing to retry
        assert time.monotonic() - t0 < 1.0                        # returned, did not wait
        dropped = io.stats()["tx_queue_drops"]
        n = len(pkts) - dropped
        assert 50 < n < len(pkts)
        assert recv_frames(a, n) == pkts[:n]          # the ones before the ring filled, in order
        io.flush()
        more = [numbered(1000 + i, 100) for i in range(5)]
        assert io.send_batch(more) == 5
        assert io.detach() == b.fileno()                         # drains, then stops
        assert recv_frames(a, 5) == more
        st = io.stats()
        assert st["tx_packets"] == n + 5 and st["tx_thread"] is False
        assert st["tx_queue_drops"] == dropped
    finally:
        if io.tx_thread:                              # a failed assertion: let it finish
            a.setblocking(True)
            a.settimeout(0.2)
            try:
                while True:
                    a.recv(70000)
            except OSError:
                pass
            io.detach()
        a.close()
        b.close()


def test_tx_thread_counts_eagain_drops(dgram_pair):
    a, b = dgram_pair
    b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    io = TunIO(b.fileno(), False, 4)
    io.start_tx_thread(4 << 20)
    try:
        pkts = [tcp_pkt(b"z" * 1000)] * 2000
        assert io.send_batch(pkts) == len(pkts)      # all queued ...
        io.flush()
        st = io.stats()                               # ... and what found no room dropped
        assert 0 < st["tx_packets"] < len(pkts) and st["tx_queue_drops"] == 0
        assert st["tx_packets"] + st["tx_dropped"] == len(pkts) and st["tx_blocked"] > 0
    finally:
        io.detach()                                   # before the fixture closes the fd


def test_garbage_collected_link_stops_its_writer_before_closing(netns):
    """A TunLink dropped without close(): its writer thread ends before the fd is closed
    (it must never write to a closed or reused fd number), and the device goes."""
    import gc
    name = unique_ifname()
    link = TunLink(name, US, 24, netns=netns, offload=False, tx_thread=True)
    io = link._io
    udp = build_ipv4(US, KERNEL, 17, struct.pack("!HHHH", 4000, 5555, 8, 0))
    assert link.send_batch([udp] * 50) == 50
    del link
    gc.collect()
    assert io.tx_thread is False                  # stopped, queue written
    with pytest.raises(ValueError):               # and the fd forgotten
        io.fileno()
    assert io.stats()["tx_packets"] + io.stats()["tx_dropped"] == 50
    assert ip_link(netns, name) is None


def test_tx_thread_in_a_forked_child_writes_inline(dgram_pair):
    """A child forked from a process with a writer thread has the queue but not the
    thread: its link writes inline; the parent's thread goes on."""
    a, b = dgram_pair
    io = TunIO(b.fileno(), False, 4)
    io.start_tx_thread(RING_MIN)
    try:
        with warnings.catch_warnings():               # 3.12+ warns: we fork with a thread
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:                                  # the child: no pytest from here on
            ok = (io.tx_thread is False and io.send_batch([numbered(1, 50)]) == 1
                  and io.stats()["tx_packets"] == 1)
            io.flush()                                # must not wait for a missing thread
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert recv_frames(a, 1) == [numbered(1, 50)]
        assert io.tx_thread and io.send_batch([numbered(2, 50)]) == 1
        io.flush()
        assert recv_frames(a, 1) == [numbered(2, 50)]
    finally:
        io.stop_tx_thread()


def test_tun_link_writer_thread_default(link_factory):
    """On by default without offloads (given two CPUs), off with them; either way on
    request. close() ends the thread."""
    two_cpus = len(os.sched_getaffinity(0)) >= 2
    plain = link_factory(offload=False)
    assert plain.tx_thread is two_cpus and plain.stats()["tx_thread"] is two_cpus
    off = link_factory(offload=True)
    assert off.offload is off.vnet_hdr is True and off.tx_thread is False
    assert link_factory(offload=True, tx_thread=True).tx_thread is True
    forced_off = link_factory(offload=False, tx_thread=False)
    assert forced_off.tx_thread is False
    plain.close()
    assert plain.tx_thread is False and plain.closed
    plain.flush()                                     # closed: nothing to wait for


def test_read_error_is_raised_and_closed_link_refuses(dgram_pair):
    r, w = os.pipe()
    try:
        io = TunIO(w, False, 4)               # reading a pipe's write end: EBADF
        with pytest.raises(OSError) as e:
            io.recv_batch()
        assert e.value.errno == errno.EBADF
        assert io.detach() == w
        with pytest.raises(ValueError):
            io.recv_batch()
        with pytest.raises(ValueError):
            io.send_batch([b"x"])
        with pytest.raises(ValueError):
            io.fileno()
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(ValueError):
        TunIO(-1, False)
    with pytest.raises(ValueError):
        TunIO(0, False, 0)


@requires_tun
def test_unmarked_kernel_tcp_is_verified_by_the_link(link_factory, netns):
    """A vnet link on a device without checksum offload: the kernel sends complete
    checksums and no flags, and the link verifies them itself."""
    link = link_factory(offload=True)
    fcntl.ioctl(link.fileno(), tunmod.TUNSETOFFLOAD, 0)
    c = sock_in(netns)
    c.setblocking(False)
    try:
        with pytest.raises(BlockingIOError):
            c.connect((US, 80))
        recv_until(link, is_tcp_to(80))
        flags = link.last_rx_flags
        assert flags and all(f == RX_FLAG_CSUM_VALID for f in flags)
        assert link.stats()["rx_csum_errors"] == 0
    finally:
        c.close()
