"""The link contract: capabilities records (declared, derived by wrappers, defaults) and a
FaultyLink wrapper driven by the asyncio driver."""
from __future__ import annotations

import asyncio
import hashlib
import io
import random
import shutil
import socket
from typing import Any, List

import pytest

import fasttcp
from fasttcp.aio import FastTcpStack
from fasttcp.link import (DatagramSocketLink, FaultConfig, FaultyLink, LinkCapabilities,
                          MemoryLink, PacketIO, PcapLink, PcapWriter, QueuePacketIO,
                          capabilities_of)
from fasttcp.link.capabilities import PARSE_NO_TCP_CSUM
from netns_util import requires_tun

A, B = "10.0.0.1", "10.0.0.2"


def test_declared_records() -> None:
    ma, _ = MemoryLink.pair()
    assert capabilities_of(ma) == LinkCapabilities(keeps_packets=False)
    qa, _ = QueuePacketIO.pair()
    caps = capabilities_of(qa)
    assert caps.packet_io and caps.keeps_packets and not caps.split_packets
    s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        caps = capabilities_of(DatagramSocketLink(s1))
        assert not caps.packet_io and not caps.keeps_packets and not caps.takes_split_packets
        assert caps.parse_flags == 0
    finally:
        s1.close()
        s2.close()


def test_record_checks_and_derived_values() -> None:
    assert LinkCapabilities(rx_checksum_offload=True).parse_flags == PARSE_NO_TCP_CSUM
    assert LinkCapabilities(takes_split_packets=True, keeps_packets=False).split_packets
    assert not LinkCapabilities(takes_split_packets=True).split_packets   # kept by default
    with pytest.raises(ValueError):
        LinkCapabilities(mtu=40)
    with pytest.raises(ValueError):
        LinkCapabilities(packet_io=True, recv_views=True)


def test_undeclared_links_get_conservative_defaults() -> None:
    class PlainLink:
        def recv_batch(self, max: int = 64) -> List[bytes]:  # noqa: A002
            return []

        def send_batch(self, packets: List[Any]) -> int:
            return len(packets)

        def fileno(self) -> int:
            return 0

    class PlainIO:
        async def recv(self) -> List[bytes]:
            return []

        def send(self, packets: List[bytes]) -> None:
            return None

    assert capabilities_of(PlainLink()) == LinkCapabilities()
    assert capabilities_of(PlainIO()) == LinkCapabilities(packet_io=True)
    assert isinstance(PlainIO(), PacketIO)
    with pytest.raises(TypeError):
        capabilities_of(object())


def test_wrappers_derive_their_record_from_the_inner_link() -> None:
    class Fast(MemoryLink):
        capabilities = LinkCapabilities(mtu=9000, rx_checksum_offload=True,
                                        takes_split_packets=True, keeps_packets=False,
                                        recv_views=True, recv_max_bytes=True)

    inner = Fast()
    faulty = capabilities_of(FaultyLink(FaultConfig(mtu=1500), link=inner))
    assert faulty == LinkCapabilities(mtu=1500, rx_checksum_offload=True, keeps_packets=True,
                                      delays_packets=True)
    assert capabilities_of(FaultyLink(FaultConfig(mtu=20000), link=inner)).mtu == 9000
    assert capabilities_of(FaultyLink(FaultConfig())).delays_packets     # a bare pipe
    pcap = capabilities_of(PcapLink(inner, PcapWriter(io.BytesIO())))
    assert pcap == LinkCapabilities(mtu=9000, rx_checksum_offload=True, keeps_packets=False)


def _faulty_pair(cfg: FaultConfig) -> tuple:
    s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s in (s1, s2):              # room for a window's burst: drops are the injector's
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    la = FaultyLink(cfg, seed=1, link=DatagramSocketLink(s1))
    lb = FaultyLink(cfg, seed=2, link=DatagramSocketLink(s2))
    return la, lb


async def _handshake_seconds(la, lb) -> float:
    """How long B's open_connection to a server on A takes over the links (A on `la`)."""
    async with FastTcpStack(fasttcp.Host(A), la) as sa, \
            FastTcpStack(fasttcp.Host(B), lb) as sb:
        server = await sa.start_server(lambda r, w: w.close(), 80)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        _, writer = await sb.open_connection(A, 80)
        took = loop.time() - t0
        writer.close()
        server.close()
    return took


def test_driver_flushes_a_delaying_link_by_its_next_arrival() -> None:
    """Delayed packets leave the wrapper when they are due, not at the next send: the
    handshake over a 20 ms delay takes about two delays, not a SYN retransmission."""
    async def main() -> float:
        la, lb = _faulty_pair(FaultConfig(delay=0.02))
        took = await _handshake_seconds(la, lb)
        la.close()
        lb.close()
        return took

    took = asyncio.run(asyncio.wait_for(main(), 10))
    assert 0.04 <= took < 0.5


def test_driver_reads_packets_a_link_delayed_on_receipt() -> None:
    """A FaultyLink with ``rx`` delays what it reads (one end impairs both directions, as
    around a TUN device): the driver reads the delayed packets by next_arrival(), so the
    handshake takes about the two delays on A's side, not a retransmission timeout."""
    async def main() -> float:
        s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        la = FaultyLink(FaultConfig(delay=0.02), link=DatagramSocketLink(s1),
                        rx=FaultConfig(delay=0.02))
        lb = DatagramSocketLink(s2)
        took = await _handshake_seconds(la, lb)
        assert la.rx is not None and la.rx.stats.delivered >= 1
        la.close()
        lb.close()
        return took

    took = asyncio.run(asyncio.wait_for(main(), 10))
    assert 0.04 <= took < 0.5


def test_faulty_link_with_loss_and_delay_under_the_driver_is_byte_exact() -> None:
    """3 MiB over FaultyLink(loss=2%, delay=5 ms) wrappers on both ends of a datagram
    socketpair, through FastTcpStack: complete, byte-exact, in bounded time."""
    size = 3 << 20
    data = random.Random(7).randbytes(size)

    async def main() -> None:
        la, lb = _faulty_pair(FaultConfig(loss=0.02, delay=0.005))
        got = hashlib.sha256()
        received = 0

        async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal received
            while chunk := await reader.read(1 << 20):
                got.update(chunk)
                received += len(chunk)
            writer.close()

        async with FastTcpStack(fasttcp.Host(A), la) as sa, \
                FastTcpStack(fasttcp.Host(B), lb) as sb:
            server = await sa.start_server(sink, 80)
            reader, writer = await sb.open_connection(A, 80)
            writer.write(data)
            writer.write_eof()
            await writer.drain()
            assert await reader.read() == b""          # the server closes after EOF
            writer.close()
            server.close()
        assert received == size and got.digest() == hashlib.sha256(data).digest()
        assert lb.stats.lost > 10 and la.stats.lost > 0 and lb.stats.delivered > 2000
        la.close()
        lb.close()

    asyncio.run(asyncio.wait_for(main(), 60))


@requires_tun
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_downloads_through_a_faulty_tun_link(tmp_path: Any) -> None:
    """The case that stalled: FaultyLink(loss=2%, delay=5 ms) around a TUN link inside
    FastTcpStack, the kernel's curl downloading 8 MiB from fasttcp's HTTP server in a
    namespace of its own. Complete and byte-exact well within curl's 60 s."""
    import subprocess

    from interop_util import US, make_host, run_async, script_cmd, sha256_file, tun_netns

    from fasttcp.cli.servers import HttpServer, generated_body

    size = 8 << 20
    out = tmp_path / "body"
    with tun_netns(offload=False) as (ns, tun):
        link = FaultyLink(FaultConfig(loss=0.02, delay=0.005), seed=1, link=tun)
        host = make_host(tun)

        async def main() -> subprocess.CompletedProcess:
            async with FastTcpStack(host, link) as stack:
                server = await stack.start_server(HttpServer(size=size), 80)
                proc = await asyncio.create_subprocess_exec(
                    *script_cmd(ns, "exec", "--", shutil.which("curl"), "-sS", "--max-time",
                                "60", "-o", str(out), "-w", "%{http_code} %{size_download}",
                                f"http://{US}/file"),
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                stdout, stderr = await proc.communicate()
                server.close()
                return subprocess.CompletedProcess([], proc.returncode, stdout, stderr)

        r = run_async(main(), 90)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split() == ["200", str(size)]
    assert sha256_file(str(out)) == (size, hashlib.sha256(generated_body(size)).hexdigest())
    assert link.stats.lost > 10 and link.stats.delivered > size // 1500
