"""``fasttcp relay`` end to end: a client namespace whose routes go into the relay's TUN,
the relay (a ``python -m fasttcp relay`` subprocess) in a gateway namespace, and real
servers in a third namespace behind the gateway (``relay_util.relay_netns``).

Over it: curl downloads and uploads 64 MiB byte-exact to three destinations (IPv4) and
one IPv6 one; a DNS-shaped UDP request/response and 10,000 datagrams with the loss
counted; an ICMP port unreachable back through a UDP flow; a refused port ("Connection
refused" within a second); half-close; 1,000 concurrent flows; ``fasttcp stats`` showing
flows; the same through Debian's microsocks with ``--socks5``; SIGINT mid-transfer; bad
input as one line. Every namespace is made and removed by the test; every process is
started here and ended by its PID.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Iterator, List

import pytest

import relay_util as RU
from interop_util import script_cmd, sha256_file
from netns_util import TUN_MARKS, sock_in, unique_ifname, unique_netns_name, wait_until

from fasttcp.link import netns as ns

pytestmark = TUN_MARKS

CURL = shutil.which("curl") or "/usr/bin/curl"
MICROSOCKS = shutil.which("microsocks")
DANTED = shutil.which("danted") or (os.path.exists("/usr/sbin/danted") and "/usr/sbin/danted"
                                    or None)
SIZE = 64 << 20
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def curl(net: RU.RelayNet, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(script_cmd(net.client, "exec", "--", CURL, "-sS", "-g", *args),
                          capture_output=True, text=True, timeout=timeout)


def url(address: str, path: str = "/", port: int = RU.HTTP_PORT) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}{path}"


class Running:
    """A topology with servers and a relay running."""

    def __init__(self, net: RU.RelayNet, relay: subprocess.Popen, tun: str, control: str,
                 file: str, tmp: str) -> None:
        self.net, self.relay, self.tun, self.control = net, relay, tun, control
        self.file, self.tmp = file, tmp
        self.digest = sha256_file(file)


def _relay_setup(tmp: str, *extra: str) -> Iterator[Running]:
    file = RU.pattern_file(os.path.join(tmp, "source"), SIZE)
    with RU.relay_netns() as net:
        servers = RU.start_servers(net, file)
        try:
            tun = unique_ifname("ftr")
            control = os.path.join(tmp, "relay.sock")
            relay = RU.start_relay(RU.relay_argv(net, tun, control, *extra))
            try:
                yield Running(net, relay, tun, control, file, tmp)
            finally:
                RU.stop(relay)
        finally:
            RU.stop(servers)


@pytest.fixture(scope="module")
def direct(tmp_path_factory) -> Iterator[Running]:
    yield from _relay_setup(str(tmp_path_factory.mktemp("relay")))


def _proxy_setup(tmp: str, proxy_argv: List[str], port: int,
                 *extra: str) -> Iterator[Running]:
    """Servers, a SOCKS5 proxy (``proxy_argv``, run in the gateway namespace, listening on
    its loopback at ``port``) and a relay through it."""
    file = RU.pattern_file(os.path.join(tmp, "source"), SIZE)
    with RU.relay_netns() as net:
        servers = RU.start_servers(net, file)
        proxy = subprocess.Popen(script_cmd(net.gateway, "exec", "--", *proxy_argv),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def listening() -> bool:
                try:
                    with ns.socket_in(net.gateway) as s:
                        s.settimeout(1)
                        s.connect(("127.0.0.1", port))
                    return True
                except OSError:
                    return False
            assert wait_until(listening, 10, 0.05), f"{proxy_argv[0]} did not start"
            tun = unique_ifname("ftr")
            control = os.path.join(tmp, "relay.sock")
            relay = RU.start_relay(RU.relay_argv(net, tun, control, "--socks5",
                                                 f"127.0.0.1:{port}", *extra))
            try:
                yield Running(net, relay, tun, control, file, tmp)
            finally:
                RU.stop(relay)
        finally:
            RU.stop(proxy)
            RU.stop(servers)


@pytest.fixture(scope="module")
def socks(tmp_path_factory) -> Iterator[Running]:
    """Through microsocks (CONNECT only: UDP goes direct, --udp-direct)."""
    if MICROSOCKS is None:
        pytest.skip("microsocks is not installed (apt-get install microsocks)")
    yield from _proxy_setup(str(tmp_path_factory.mktemp("relay-socks")),
                            [MICROSOCKS, "-i", "127.0.0.1", "-p", "1080"], 1080,
                            "--udp-direct")


@pytest.fixture(scope="module")
def dante(tmp_path_factory) -> Iterator[Running]:
    """Through Dante, TCP and UDP (UDP ASSOCIATE)."""
    if DANTED is None:
        pytest.skip("danted is not installed (apt-get install dante-server)")
    tmp = str(tmp_path_factory.mktemp("relay-dante"))
    conf = RU.dante_config(os.path.join(tmp, "danted.conf"), 1081)
    yield from _proxy_setup(tmp, [DANTED, "-f", conf, "-N", "1"], 1081)


# ------------------------------------------------------------------------------------------
# Shared checks (direct and via SOCKS5)
# ------------------------------------------------------------------------------------------

def check_download_upload(r: Running, address: str) -> None:
    out = os.path.join(r.tmp, "download")
    got = curl(r.net, "-o", out, url(address, f"/{SIZE}"))
    assert got.returncode == 0, got.stderr
    assert sha256_file(out) == r.digest
    os.unlink(out)
    up = curl(r.net, "-T", r.file, url(address, "/upload"))
    assert up.returncode == 0, up.stderr
    assert up.stdout == r.digest[1]


def check_refused(r: Running, address: str) -> None:
    # -v: curl 7.88 says "Connection refused" (ECONNREFUSED) only in its verbose lines.
    # -w: curl's own time from start to failure (not this process's start-up of it). An
    # RST answers at once; without one, the SYN would be retransmitted after 1 s.
    got = curl(r.net, "-v", "-w", "%{time_total}", "--max-time", "10",
               url(address, "/", RU.CLOSED_PORT))
    assert got.returncode == 7, (got.returncode, got.stderr)
    assert "Connection refused" in got.stderr, got.stderr
    assert float(got.stdout) < 1.0, got.stdout


def check_half_close(r: Running, address: str) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with sock_in(r.net.client, family) as s:
        s.connect((address, RU.HALF_PORT))
        payload = os.urandom(100_000)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)         # the server sees EOF, then still sends
        got = b""
        for _ in range(10_000):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    assert got == RU.HALF_REPLY + str(len(payload)).encode()


def check_dns(r: Running, address: str) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with sock_in(r.net.client, family, socket.SOCK_DGRAM, timeout=5) as s:
        s.connect((address, RU.DNS_PORT))
        for qid in (0x1234, 0xBEEF):
            q = RU.dns_query(qid)
            s.send(q)
            answer = s.recv(2048)
            assert answer == RU.dns_answer(q)


# ------------------------------------------------------------------------------------------
# Direct
# ------------------------------------------------------------------------------------------

@needs_curl
@pytest.mark.parametrize("index", [0, 1, 9], ids=["first", "second", "tenth"])
def test_download_and_upload_64mib_byte_exact(direct, index):
    check_download_upload(direct, RU.SERVER_ADDRS[index])


@needs_curl
def test_download_and_upload_64mib_byte_exact_ipv6(direct):
    check_download_upload(direct, RU.SERVER_ADDRS6[0])


@needs_curl
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_refused_port_is_connection_refused_within_a_second(direct, family):
    check_refused(direct, RU.SERVER_ADDRS[0] if family == "ipv4" else RU.SERVER_ADDRS6[0])


@needs_curl
def test_unreachable_destination_is_connection_refused(direct):
    """The gateway has no way to the destination (EHOSTUNREACH on connect): the client gets
    RST, as for a refused port."""
    check_refused(direct, RU.UNREACHABLE)
    assert relay_stats(direct)["tcp_refused_upstream"] >= 1


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_half_close_server_sees_eof_then_still_sends(direct, family):
    check_half_close(direct, RU.SERVER_ADDRS[1] if family == "ipv4" else RU.SERVER_ADDRS6[1])


def test_client_reset_resets_upstream_and_upstream_reset_reaches_client(direct):
    """A client RST aborts the upstream socket; an upstream RST (the HTTP server aborts
    when its client goes away mid-sendfile) reaches the client as RST."""
    with sock_in(direct.net.client) as s:
        s.connect((RU.SERVER_ADDRS[0], RU.HTTP_PORT))
        s.sendall(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % SIZE)
        assert s.recv(4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    # The relay forgot the flow (both sides closed) soon after.
    assert wait_until(lambda: relay_stats(direct)["tcp_flows"] == 0, 10, 0.05), \
        relay_stats(direct)


def relay_stats(r: Running) -> dict:
    out = subprocess.run([sys.executable, "-m", "fasttcp", "stats", "--control", r.control,
                          "--json"], capture_output=True, text=True, timeout=30,
                         env=RU._env(), cwd=RU.CHILD_CWD)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["relay"]["stats"]


def test_dns_shaped_udp_request_and_response(direct):
    check_dns(direct, RU.SERVER_ADDRS[0])
    check_dns(direct, RU.SERVER_ADDRS6[0])


def test_udp_port_unreachable_reaches_the_client(direct):
    """The upstream's ICMP port unreachable (ECONNREFUSED on the relay's connected UDP
    socket) comes back as ICMP port unreachable: the client's connected socket gets
    ECONNREFUSED too (Linux reports ICMP errors on connected UDP sockets)."""
    with sock_in(direct.net.client, socket.AF_INET, socket.SOCK_DGRAM, timeout=5) as s:
        s.connect((RU.SERVER_ADDRS[0], RU.CLOSED_PORT))
        s.send(b"anyone?")
        with pytest.raises(ConnectionRefusedError):
            s.recv(100)


def test_10000_udp_datagrams_loss_counted(direct):
    """10,000 datagrams through one flow to the echo server, at most 64 in flight; the
    loss is counted and printed (UDP may lose), and bounded: a relay that drops more than
    1 % is broken. The relay's own drops are counted apart, and must be none."""
    sent = received = 0
    n, window = 10_000, 64
    with sock_in(direct.net.client, socket.AF_INET, socket.SOCK_DGRAM, timeout=0.5) as s:
        s.connect((RU.SERVER_ADDRS[2], RU.ECHO_PORT))
        deadline = time.monotonic() + 60
        seen = set()
        while sent < n and time.monotonic() < deadline:
            burst = min(window, n - sent)
            for i in range(sent, sent + burst):
                s.send(i.to_bytes(4, "big") * 64)
            sent += burst
            for _ in range(burst):
                try:
                    d = s.recv(2048)
                except socket.timeout:
                    break
                seen.add(int.from_bytes(d[:4], "big"))
        received = len(seen)
    loss = sent - received
    print(f"UDP: sent {sent}, echoed {received}, lost {loss} ({loss / max(sent, 1):.2%})")
    assert sent == n
    assert loss <= n // 100
    # The relay itself dropped none, the first window included (it arrives while the
    # flow's upstream socket is still being opened, and is held).
    assert relay_stats(direct)["udp_dropped"] == 0


def test_1000_concurrent_flows(direct):
    """1,000 TCP flows open at once (each connected before any is used), each then
    half-closed with its own payload and answered; the relay's stats show them all."""
    n = 1000
    socks: List[socket.socket] = []
    try:
        for _ in range(n):
            s = ns.socket_in(direct.net.client)
            socks.append(s)

        async def run() -> List[bytes]:
            loop = asyncio.get_running_loop()
            for s in socks:
                s.setblocking(False)
            await asyncio.gather(*(loop.sock_connect(s, (RU.SERVER_ADDRS[i % 10],
                                                          RU.HALF_PORT))
                                   for i, s in enumerate(socks)))
            assert wait_until(lambda: relay_stats(direct)["tcp_flows"] >= n, 20, 0.1), \
                relay_stats(direct)

            async def one(i: int, s: socket.socket) -> bytes:
                await loop.sock_sendall(s, b"x" * (i + 1))
                s.shutdown(socket.SHUT_WR)
                got = b""
                for _ in range(1000):
                    chunk = await loop.sock_recv(s, 4096)
                    if not chunk:
                        break
                    got += chunk
                return got
            return await asyncio.gather(*(one(i, s) for i, s in enumerate(socks)))
        replies = asyncio.run(asyncio.wait_for(run(), 120))
    finally:
        for s in socks:
            s.close()
    assert replies == [RU.HALF_REPLY + str(i + 1).encode() for i in range(n)]
    assert wait_until(lambda: relay_stats(direct)["tcp_flows"] == 0, 20, 0.1)
    assert relay_stats(direct)["tcp_flows_total"] >= n


def test_stats_shows_the_relay_flows(direct):
    with sock_in(direct.net.client) as s:
        s.connect((RU.SERVER_ADDRS[3], RU.HALF_PORT))
        s.sendall(b"held")
        port = s.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "fasttcp", "stats", "--control",
                              direct.control], capture_output=True, text=True, timeout=30,
                             env=RU._env(), cwd=RU.CHILD_CWD)
        assert out.returncode == 0, out.stderr
        assert "relay:" in out.stdout
        line = [ln for ln in out.stdout.splitlines()
                if ln.startswith("tcp ") and f":{port} " in ln]
        assert len(line) == 1, out.stdout
        assert line[0].split()[2:] == [f"198.18.0.1:{port}",
                                       f"{RU.SERVER_ADDRS[3]}:{RU.HALF_PORT}", "direct"]


# ------------------------------------------------------------------------------------------
# Through SOCKS5 (microsocks)
# ------------------------------------------------------------------------------------------

@needs_curl
def test_socks5_download_and_upload_64mib(socks):
    check_download_upload(socks, RU.SERVER_ADDRS[0])
    check_download_upload(socks, RU.SERVER_ADDRS6[0])


@needs_curl
def test_socks5_refused_port_is_connection_refused(socks):
    check_refused(socks, RU.SERVER_ADDRS[0])


def test_socks5_udp_direct_dns(socks):
    """microsocks has no UDP ASSOCIATE: with --udp-direct, UDP goes direct. (Nor does it
    keep a half-closed connection open: its copy loop closes both directions at the
    first EOF, so half-close through a proxy is tested with Dante below.)"""
    check_dns(socks, RU.SERVER_ADDRS[0])


def flows_via(r: Running, kind: str, address: str, port: int) -> List[str]:
    """How the relay carries its flows of ``kind`` to ``address``:``port``."""
    dest = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    return [f["via"] for f in RU.relay_snapshot(r.control).get("flows", [])
            if f["kind"] == kind and f["destination"] == dest]


def test_socks5_udp_direct_with_microsocks(socks):
    with sock_in(socks.net.client, socket.AF_INET, socket.SOCK_DGRAM, timeout=5) as s:
        s.connect((RU.SERVER_ADDRS[4], RU.DNS_PORT))
        q = RU.dns_query(7)
        s.send(q)
        assert s.recv(2048) == RU.dns_answer(q)
        assert flows_via(socks, "udp", RU.SERVER_ADDRS[4], RU.DNS_PORT) == ["direct"]


@needs_curl
def test_dante_tcp_and_udp_associate(dante):
    """TCP (CONNECT) and UDP (UDP ASSOCIATE, RFC 1928 7) through Dante, both families."""
    check_download_upload(dante, RU.SERVER_ADDRS[0])
    check_half_close(dante, RU.SERVER_ADDRS6[1])
    for address in (RU.SERVER_ADDRS[5], RU.SERVER_ADDRS6[5]):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with sock_in(dante.net.client, family, socket.SOCK_DGRAM, timeout=5) as s:
            s.connect((address, RU.DNS_PORT))
            for qid in (1, 2, 3):
                q = RU.dns_query(qid)
                s.send(q)
                assert s.recv(2048) == RU.dns_answer(q)
            assert flows_via(dante, "udp", address, RU.DNS_PORT) == ["socks5 127.0.0.1:1081"]
        with sock_in(dante.net.client, family, socket.SOCK_DGRAM, timeout=5) as s:
            s.connect((address, RU.ECHO_PORT))
            for i in range(200):
                s.send(b"%d" % i)
                assert s.recv(2048) == b"%d" % i


# ------------------------------------------------------------------------------------------
# Life of the command
# ------------------------------------------------------------------------------------------

def _links(netns: str) -> List[str]:
    with ns.iproute(netns) as ipr:
        return [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]


@needs_curl
def test_sigint_mid_transfer_exits_cleanly_and_leaves_nothing(tmp_path):
    file = RU.pattern_file(str(tmp_path / "source"), 1 << 30)
    with RU.relay_netns() as net:
        servers = RU.start_servers(net, file)
        try:
            tun = unique_ifname("ftr")
            control = str(tmp_path / "relay.sock")
            relay = RU.start_relay(RU.relay_argv(net, tun, control))
            assert tun in _links(net.client)
            client = subprocess.Popen(
                script_cmd(net.client, "exec", "--", CURL, "-sS", "--limit-rate", "20M",
                           "-o", "/dev/null", url(RU.SERVER_ADDRS[0], f"/{1 << 30}")),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                assert wait_until(lambda: RU.relay_counter(control, "bytes_down") > 1 << 20,
                                  20, 0.05)
                relay.send_signal(signal.SIGINT)
                relay.wait(15)
                out, err = relay.stdout.read(), relay.stderr.read()
                assert relay.returncode == 0, (out, err)
                assert "stopped by SIGINT" in out and f"removed {tun}" in out, out
                assert "Traceback" not in err, err
                client.wait(15)
                assert client.returncode != 0       # its transfer was cut
            finally:
                RU.stop(client)
                RU.stop(relay)
            assert tun not in _links(net.client)
            assert not os.path.exists(control)
            with ns.iproute(net.client) as ipr:      # the routes went with the device
                dsts = {r.get_attr("RTA_DST") for r in ipr.get_routes(family=socket.AF_INET)}
            assert "10.99.0.0" not in dsts
        finally:
            RU.stop(servers)


def test_sigterm_removes_the_namespace_it_created(tmp_path):
    name = unique_netns_name()
    tun = unique_ifname("ftr")
    argv = [sys.executable, "-m", "fasttcp", "relay", "--netns", name, "--tun", tun,
            "--route", "10.99.0.0/16", "--control", str(tmp_path / "c.sock")]
    relay = RU.start_relay(argv)
    try:
        assert ns.netns_exists(name)
        assert tun in _links(name)
        relay.send_signal(signal.SIGTERM)
        relay.wait(15)
        out = relay.stdout.read()
        assert relay.returncode == 0
        assert f"removed {tun} and network namespace {name}" in out, out
    finally:
        RU.stop(relay)
        ns.remove_netns(name)
    assert not ns.netns_exists(name)


def _one_line(r: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def fasttcp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fasttcp", *args], capture_output=True,
                          text=True, timeout=60, env=RU._env(), cwd=RU.CHILD_CWD)


@pytest.mark.parametrize("route,fragment", [
    ("10.99.0.5/16", "host bits set (did you mean 10.99.0.0/16?)"),
    ("10.99.0.0/33", "not a CIDR network"),
    ("relay.test", "not a CIDR network"),
])
def test_bad_cidr_is_one_line(route, fragment):
    _one_line(fasttcp("relay", "--netns", "x", "--route", route), 2, fragment)


def test_unreachable_socks5_proxy_is_one_line_at_start(tmp_path):
    """Nothing listens on the port (loopback of a namespace of the test's own): refused at
    once, before anything is created."""
    name = unique_netns_name()
    with temp_ns() as gw:
        r = subprocess.run(script_cmd(gw, "exec", "--", sys.executable, "-m", "fasttcp",
                                      "relay", "--netns", name, "--route", "10.99.0.0/16",
                                      "--socks5", "127.0.0.1:1", "--control",
                                      str(tmp_path / "c.sock")),
                           capture_output=True, text=True, timeout=60, env=RU._env(),
                           cwd=RU.CHILD_CWD)
        _one_line(r, 1, "SOCKS5 proxy 127.0.0.1:1 is unreachable")
        assert not ns.netns_exists(name)


def test_relay_inside_its_own_namespace_is_one_line(tmp_path):
    """Run inside --netns, the relay's upstream connections would loop into its TUN."""
    with temp_ns() as n:
        r = subprocess.run(script_cmd(n, "exec", "--", sys.executable, "-m", "fasttcp",
                                      "relay", "--netns", n, "--route", "10.99.0.0/16",
                                      "--control", str(tmp_path / "c.sock")),
                           capture_output=True, text=True, timeout=60, env=RU._env(),
                           cwd=RU.CHILD_CWD)
        _one_line(r, 1, f"running inside network namespace {n}")
        assert not any(name.startswith("ftun") for name in _links(n))


def temp_ns():
    from netns_util import temp_netns
    return temp_netns()


def test_tun_name_and_route_in_use_are_one_line(tmp_path):
    name = unique_netns_name()
    tun = unique_ifname("ftr")
    first = RU.start_relay([sys.executable, "-m", "fasttcp", "relay", "--netns", name,
                            "--tun", tun, "--route", "10.99.0.0/16",
                            "--control", str(tmp_path / "a.sock")])
    try:
        r = fasttcp("relay", "--netns", name, "--tun", tun, "--route", "10.98.0.0/16",
                    "--control", str(tmp_path / "b.sock"))
        _one_line(r, 1, tun)
        second = unique_ifname("ftr")
        r = fasttcp("relay", "--netns", name, "--tun", second, "--route",
                    "10.99.0.0/16", "--control", str(tmp_path / "b.sock"))
        _one_line(r, 1, "route 10.99.0.0/16 already exists")
        links = _links(name)
        assert tun in links                      # the first relay's device is untouched
        assert second not in links               # and the refused one's is gone again
    finally:
        RU.stop(first)
        ns.remove_netns(name)
