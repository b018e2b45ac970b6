"""A kernel client reusing its ports against fasttcp's HTTP server, which closes first.

fasttcp holds TIME-WAIT for each of those connections; the kernel's next SYN from the same
port must open a new connection at once (RFC 6191, as Linux's TCP_TW_SYN): no challenge
ACK, no client RST, no SYN retransmission a second later. The kernel's own counter
(TcpExt TCPSynRetrans of the namespace) is the oracle.
"""
from __future__ import annotations

import socket
import subprocess

from interop_util import US, make_host, recv_to_eof, run_async, script_cmd, tun_netns
from netns_util import TUN_MARKS, sock_in

from fasttcp.aio import FastTcpStack
from fasttcp.cli.servers import HttpServer

pytestmark = TUN_MARKS

PORTS = (41000, 41001, 41002)          # the client's ports, in turn
N = 15                                  # connections: the last 12 meet TIME-WAIT
REQUEST = b"GET / HTTP/1.1\r\nHost: fasttcp\r\nConnection: close\r\n\r\n"


def _tcpext(ns: str, name: str) -> int:
    """A TcpExt counter of the namespace's kernel (/proc/net/netstat read inside it)."""
    out = subprocess.run(script_cmd(ns, "exec", "--", "/bin/cat", "/proc/net/netstat"),
                         capture_output=True, text=True, timeout=30, check=True).stdout
    lines = [ln.split() for ln in out.splitlines() if ln.startswith("TcpExt:")]
    return int(dict(zip(lines[0][1:], lines[1][1:]))[name])


def test_kernel_client_reusing_ports_meets_no_stall():
    with tun_netns(offload=True) as (ns, link):
        host = make_host(link)
        retrans0 = _tcpext(ns, "TCPSynRetrans")

        def client() -> list:
            sizes = []
            for i in range(N):
                s = sock_in(ns, timeout=10)
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("0.0.0.0", PORTS[i % len(PORTS)]))
                    s.connect((US, 80))
                    s.sendall(REQUEST)
                    sizes.append(recv_to_eof(s, limit=1 << 20))
                finally:
                    s.close()
            return sizes

        async def main() -> list:
            import asyncio

            async with FastTcpStack(host, link) as stack:
                server = await stack.start_server(HttpServer(size=1024), 80)
                sizes = await asyncio.get_running_loop().run_in_executor(None, client)
                server.close()
                return sizes

        sizes = run_async(main(), 120)
        retrans = _tcpext(ns, "TCPSynRetrans") - retrans0
    st = host.stats()
    assert len(sizes) == N and all(n > 1024 for n in sizes), sizes
    assert retrans == 0, (retrans, st)
    assert "challenge_acks_out" not in st and "rst_in" not in st, st
    assert st["time_wait_reopened"] == N - len(PORTS), st
