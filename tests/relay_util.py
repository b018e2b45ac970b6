"""The three-namespace topology of the relay tests and benchmarks, and its servers.

::

    [client ns]                  [gateway ns]                     [server ns]
    curl, sockets                fasttcp relay (a subprocess)     SERVER_ADDRS, fd00:99::5..
    TUN (the relay's) --routes-> relays with its own sockets --veth-- 10.98.0.2 / fd98::2
    10.97.0.2 --veth (kernel)--- 10.97.0.1, forwards (ip_forward) ... KERNEL_ADDRS

The client namespace reaches the servers two ways: through the relay (RELAY_ROUTES,
routed into the relay's TUN device) and through the gateway's own IP forwarding over
veth (KERNEL_ROUTES: the benchmark's reference, no user-space hop). Each server address
runs the same servers (one process, see :func:`serve`).

Run as a script, this file is those servers inside a namespace::

    python relay_util.py --netns NS serve --file PATH

HTTP on HTTP_PORT and WRK_PORTS (``GET /N``: N bytes of the file by sendfile; ``PUT`` with a
Content-Length: the body's SHA-256 in hex, or with ``X-No-Hash: 1`` its length), a
half-close service on HALF_PORT (reads to EOF, then sends HALF_REPLY and the byte count,
then closes), UDP echo on ECHO_PORT and a DNS-shaped responder on DNS_PORT.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import fasttcp  # noqa: E402

#: What the relay intercepts (routed into its TUN in the client namespace).
RELAY_ROUTES = ["10.99.0.0/16", "fd00:99::/64"]
#: The ten relayed server addresses (the first, a second and the tenth are tested).
SERVER_ADDRS = [f"10.99.0.{5 + i}" for i in range(10)]
SERVER_ADDRS6 = [f"fd00:99::{5 + i:x}" for i in range(10)]
#: Reached through the gateway's kernel forwarding instead (the benchmark reference).
KERNEL_ROUTES = ["10.96.0.0/16", "fd00:96::/64"]
KERNEL_ADDR, KERNEL_ADDR6 = "10.96.0.5", "fd00:96::5"
CLIENT_GW, GW_CLIENT = ("10.97.0.2", "fd00:97::2"), ("10.97.0.1", "fd00:97::1")
GW_SERVER, SERVER_GW = ("10.98.0.1", "fd00:98::1"), ("10.98.0.2", "fd00:98::2")

HTTP_PORT, HALF_PORT, ECHO_PORT, DNS_PORT = 8080, 7000, 5000, 5353
#: More HTTP ports (IPv4), one per wrk run of the benchmark: the server closes first and
#: keeps each connection's 4-tuple in TIME-WAIT for 60 s, where a later run's client ports
#: would meet it (a SYN into TIME-WAIT costs the client a retry); a fresh port is a fresh
#: set of 4-tuples.
WRK_PORTS = range(8081, 8097)
CLOSED_PORT = 9                         # nothing listens there
#: Inside the relayed routes, but the gateway has an "unreachable" route for it: a
#: connect() there fails at once with EHOSTUNREACH.
UNREACHABLE = "10.99.200.1"
HALF_REPLY = b"still sending after your EOF: "


# ==========================================================================================
# Topology (test-process side)
# ==========================================================================================

class RelayNet:
    """Names of one topology: ``client``, ``gateway``, ``server`` namespaces."""

    def __init__(self, client: str, gateway: str, server: str) -> None:
        self.client, self.gateway, self.server = client, gateway, server


def _lo_up(ipr: Any) -> int:
    idx = ipr.link_lookup(ifname="lo")[0]
    ipr.link("set", index=idx, state="up")
    return idx


@contextmanager
def relay_netns() -> Iterator[RelayNet]:
    """The three namespaces and two veth links of the module docstring (IPv4 and IPv6),
    the gateway forwarding; all removed afterwards."""
    from interop_util import _add_addr6, _ipv6_ready, _veth, _wait_local6
    from netns_util import temp_netns

    from fasttcp.link import netns as ns

    with temp_netns() as client, temp_netns() as gw, temp_netns() as server:
        for n in (client, gw, server):
            _ipv6_ready(n, forwarding=n == gw)
        ns.write_net_sysctl(gw, "ipv4/ip_forward", "1")
        ca, gc = _veth(client, gw, "vc0", "vc1", 1500)
        gs, sg = _veth(gw, server, "vs0", "vs1", 1500)
        with ns.iproute(client) as ipr:
            _lo_up(ipr)
            ipr.addr("add", index=ca, address=CLIENT_GW[0], prefixlen=24)
            _add_addr6(ipr, ca, CLIENT_GW[1])
            ipr.route("add", dst=KERNEL_ROUTES[0], gateway=GW_CLIENT[0])
        with ns.iproute(gw) as ipr:
            _lo_up(ipr)
            ipr.addr("add", index=gc, address=GW_CLIENT[0], prefixlen=24)
            _add_addr6(ipr, gc, GW_CLIENT[1])
            ipr.addr("add", index=gs, address=GW_SERVER[0], prefixlen=24)
            _add_addr6(ipr, gs, GW_SERVER[1])
        with ns.iproute(server) as ipr:
            lo = _lo_up(ipr)
            ipr.addr("add", index=sg, address=SERVER_GW[0], prefixlen=24)
            _add_addr6(ipr, sg, SERVER_GW[1])
            for a in [*SERVER_ADDRS, KERNEL_ADDR]:
                ipr.addr("add", index=lo, address=a, prefixlen=32)
            for a in [*SERVER_ADDRS6, KERNEL_ADDR6]:
                _add_addr6(ipr, lo, a, 128)
        _wait_local6(client, [CLIENT_GW[1]])
        _wait_local6(gw, [GW_CLIENT[1], GW_SERVER[1]])
        _wait_local6(server, [SERVER_GW[1], *SERVER_ADDRS6, KERNEL_ADDR6])
        # Routes through a gateway need its address usable first (IPv6).
        with ns.iproute(client) as ipr:
            ipr.route("add", dst=KERNEL_ROUTES[1], gateway=GW_CLIENT[1])
        with ns.iproute(gw) as ipr:
            for r in (RELAY_ROUTES[0], KERNEL_ROUTES[0]):
                ipr.route("add", dst=r, gateway=SERVER_GW[0])
            ipr.route("add", dst="10.99.200.0/24", type="unreachable")
            for r in (RELAY_ROUTES[1], KERNEL_ROUTES[1]):
                ipr.route("add", dst=r, gateway=SERVER_GW[1])
        with ns.iproute(server) as ipr:
            ipr.route("add", dst="0.0.0.0/0", gateway=GW_SERVER[0])
            ipr.route("add", dst="::/0", gateway=GW_SERVER[1])
        yield RelayNet(client, gw, server)


def pattern_file(path: str, size: int) -> str:
    """``size`` bytes of fasttcp's generated-content pattern at ``path``."""
    from fasttcp.cli.servers import CHUNK, pattern_block

    block = pattern_block()
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[:min(CHUNK, left)])
            left -= CHUNK
    return path


# Children import the same fasttcp as this process and start outside the source tree: in
# CI the package is installed and the checkout has no compiled extensions, and
# ``python -m`` puts its working directory first on sys.path (as tests/test_cli.py does).
CHILD_CWD = "/"
FASTTCP_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fasttcp.__file__)))


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = FASTTCP_PARENT + (os.pathsep + env["PYTHONPATH"]
                                          if env.get("PYTHONPATH") else "")
    return env


def _wait_line(proc: subprocess.Popen, want: str, timeout: float) -> str:
    """Read ``proc``'s stdout until a line containing ``want`` (bounded in time)."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    seen: List[str] = []
    try:
        while time.monotonic() < end:
            if not sel.select(max(0.0, end - time.monotonic())):
                break
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if want in line:
                return line
    finally:
        sel.close()
    err = ""
    if proc.poll() is not None and proc.stderr is not None:
        err = proc.stderr.read()
    raise RuntimeError(f"no {want!r} from {proc.args[-6:]} within {timeout} s: "
                       f"{''.join(seen)!r} {err!r}")


def start_servers(net: RelayNet, file: str) -> subprocess.Popen:
    """The servers (module docstring) in the server namespace; ended by :func:`stop`."""
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--netns",
                             net.server, "serve", "--file", file],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=CHILD_CWD)
    try:
        _wait_line(proc, "ready", 30)
    except BaseException:
        stop(proc)
        raise
    return proc


def relay_argv(net: RelayNet, tun: str, control: str, *extra: str) -> List[str]:
    """``fasttcp relay`` run inside the gateway namespace, its TUN in the client's."""
    from interop_util import script_cmd

    args = ["--netns", net.client, "--tun", tun, "--control", control]
    for r in RELAY_ROUTES:
        args += ["--route", r]
    return script_cmd(net.gateway, "exec", "--", sys.executable, "-m", "fasttcp", "relay",
                      *args, *extra)


def start_relay(argv: List[str], timeout: float = 30.0) -> subprocess.Popen:
    """Start ``fasttcp relay`` (argv from :func:`relay_argv`) and wait until it relays."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=CHILD_CWD)
    try:
        _wait_line(proc, "fasttcp relaying", timeout)
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    """End a process this module started, by its PID; its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            f.close()
    return proc.returncode


#: The gateway's interface towards the server namespace (``relay_netns``).
GW_SERVER_IFNAME = "vs0"


def dante_config(path: str, port: int) -> str:
    """A Dante (``danted``) configuration for the gateway namespace: SOCKS5 on its loopback
    at ``port``, no authentication, CONNECT and UDP ASSOCIATE to anywhere, out through
    its interface towards the servers. ``0/0`` is Dante's "any address of either family"
    (a UDP reply is matched from its source: an IPv6 server's is no IPv4 address)."""
    with open(path, "w") as f:
        f.write(f"""logoutput: stderr
internal: 127.0.0.1 port = {port}
external: {GW_SERVER_IFNAME}
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {{ from: 0/0 to: 0/0 }}
socks pass {{ from: 0/0 to: 0/0 command: connect udpassociate udpreply }}
""")
    return path


def relay_snapshot(control: str) -> dict:
    """The relay's part of its control socket's snapshot (``fasttcp stats --json``):
    ``{"stats": ..., "flows": [...]}``, or {} while nothing answers there."""
    import json

    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(control)
            data = b""
            while chunk := s.recv(1 << 16):
                data += chunk
    except OSError:
        return {}
    return json.loads(data).get("relay", {})


def relay_counter(control: str, key: str) -> int:
    """One of the relay's counters (0 while nothing answers)."""
    return int(relay_snapshot(control).get("stats", {}).get(key, 0))


def dns_query(qid: int, name: str = "relay.test") -> bytes:
    """A DNS query for ``name`` IN A (RFC 1035 4.1): header, one question."""
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", 1, 1)


def dns_answer(query: bytes, address: str = "192.0.2.1") -> bytes:
    """The DNS responder's answer to ``query``: same ID and question, QR set, one A
    record pointing back at the question name (RFC 1035 4.1.4 compression)."""
    qid, flags = struct.unpack_from("!HH", query)
    ip = bytes(int(x) for x in address.split("."))
    head = struct.pack("!HHHHHH", qid, 0x8180 | (flags & 0x0100), 1, 1, 0, 0)
    return (head + query[12:] + struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + ip)


# ==========================================================================================
# The servers (script side)
# ==========================================================================================

class _Http(asyncio.Protocol):
    def __init__(self, file: str) -> None:
        self.file = file
        self.head = b""
        self.left = -1                  # body bytes still to read (PUT)
        self.hasher: Any = None
        self.got = 0

    def connection_made(self, transport: Any) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        if self.left < 0:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > 65536:
                    self.t.close()
                return
            head, body = self.head[:end].decode("latin-1"), self.head[end + 4:]
            self.head = b""
            lines = head.split("\r\n")
            method, path = lines[0].split()[:2]
            fields = {k.strip().lower(): v.strip() for k, _, v in
                      (ln.partition(":") for ln in lines[1:])}
            if method == "GET":
                self.left = 0
                asyncio.get_running_loop().create_task(self._send(int(path.strip("/") or 0)))
                return
            self.left = int(fields.get("content-length", 0))
            self.hasher = None if fields.get("x-no-hash") else hashlib.sha256()
            if fields.get("expect", "").lower() == "100-continue":
                self.t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            data = body
        if self.left > 0 and data:
            n = min(len(data), self.left)
            if self.hasher is not None:
                self.hasher.update(data[:n])
            self.got += n
            self.left -= n
            if self.left == 0:
                reply = (self.hasher.hexdigest() if self.hasher is not None
                         else str(self.got)).encode()
                self.t.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close"
                             b"\r\n\r\n%s" % (len(reply), reply))
                self.t.close()

    async def _send(self, size: int) -> None:
        t = self.t
        t.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
        try:
            with open(self.file, "rb") as f:
                if size:
                    await asyncio.get_running_loop().sendfile(t, f, 0, size)
        except (ConnectionError, OSError, RuntimeError):
            t.abort()
            return
        t.close()

    def eof_received(self) -> bool:
        return False


class _Half(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.t, self.n = transport, 0

    def data_received(self, data: bytes) -> None:
        self.n += len(data)

    def eof_received(self) -> bool:
        self.t.write(HALF_REPLY + str(self.n).encode())
        self.t.close()
        return True


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.t = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.t.sendto(data, addr)


class _Dns(_Echo):
    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) >= 12:
            self.t.sendto(dns_answer(data), addr)


def serve(file: str, seconds: float = 600.0) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop_ev = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop_ev.set)
        servers = []
        for port in WRK_PORTS:
            servers.append(await loop.create_server(
                lambda: _Http(file), sock=_bound(socket.AF_INET, socket.SOCK_STREAM, port),
                backlog=4096))
        for family in (socket.AF_INET, socket.AF_INET6):
            servers.append(await loop.create_server(
                lambda: _Http(file), sock=_bound(family, socket.SOCK_STREAM, HTTP_PORT),
                backlog=4096))
            servers.append(await loop.create_server(
                _Half, sock=_bound(family, socket.SOCK_STREAM, HALF_PORT), backlog=4096))
        # UDP: a socket per address, so that each reply comes from the address the request
        # went to (a socket on the wildcard address would answer from the address routing
        # picks, the veth's, which a connected client socket drops).
        for address in [*SERVER_ADDRS, KERNEL_ADDR, *SERVER_ADDRS6, KERNEL_ADDR6]:
            for port, proto in ((ECHO_PORT, _Echo), (DNS_PORT, _Dns)):
                await loop.create_datagram_endpoint(
                    proto, sock=_bound(family_of(address), socket.SOCK_DGRAM, port, address))
        print("ready", flush=True)
        try:
            await asyncio.wait_for(stop_ev.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        for s in servers:
            s.close()

    asyncio.run(main())


def family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _bound(family: int, kind: int, port: int, address: Optional[str] = None) -> socket.socket:
    """A socket bound to ``address`` (default: every address of ``family``; IPv6 only for
    AF_INET6)."""
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if address is None:
        address = "::" if family == socket.AF_INET6 else "0.0.0.0"
    sock.bind((address, port))
    if kind == socket.SOCK_DGRAM:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return sock


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--netns", required=True)
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--file", required=True)
    p.add_argument("--seconds", type=float, default=600.0)
    args = ap.parse_args(argv)
    from pyroute2 import netns as pnetns
    pnetns.setns(args.netns, flags=0)
    if args.mode == "serve":
        serve(args.file, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
