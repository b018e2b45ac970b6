"""``fasttcp demo``: the Linux kernel's TCP downloads a file from a fasttcp HTTP server over
a TUN device, all inside a private network namespace that the demo creates and removes.

Without root or /dev/net/tun it says so and runs the same transfer between two fasttcp hosts
in this process instead.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import socket
import tempfile
import time
from typing import Any, Dict, List

from fasttcp.aio import FastTcpStack
from fasttcp.cli.servers import HttpServer, generated_body
from fasttcp.host.host import Host
from fasttcp.link.tun import TunLink, tun_available

ADDRESS = "10.77.0.2"          # fasttcp's address; the kernel takes 10.77.0.1 on the TUN
ADDRESS6 = "fd77::2"           # with --ipv6; the kernel takes fd77::1/64 (RFC 4193 ULA)


def _url_host(address: str) -> str:
    """An address as a URL's host (RFC 3986 3.2.2: IPv6 in brackets)."""
    return f"[{address}]" if ":" in address else address


def _enter_netns(name: str):
    def enter() -> None:       # runs in the child between fork and exec
        from pyroute2 import netns
        netns.setns(name, flags=0)
    return enter


def ms(seconds: Any) -> str:
    """A time in milliseconds, the unit every RTT and RTO the command line prints is in
    (``fasttcp stats`` too): ``0.125 ms``; ``-`` when unknown."""
    return "-" if seconds is None else f"{seconds * 1000:.3f} ms"


def _info_line(conn) -> str:
    i = conn.info()
    return (f"state={i.state} mss={i.mss} wscale={i.snd_wscale}/{i.rcv_wscale} "
            f"timestamps={'on' if conn.ts_ok else 'off'} sack={'on' if conn.sack_ok else 'off'} "
            f"cwnd={i.cwnd} srtt={ms(i.srtt)} rto={ms(i.rto)} "
            f"retransmits={i.retransmits} bytes_acked={i.bytes_acked}")


async def _python_client(ns: str, url_path: str, size: int,
                         address: str = ADDRESS) -> Dict[str, Any]:
    """The kernel's TCP through a plain Python socket in the namespace (no curl)."""
    from fasttcp.link.netns import socket_in

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    s = socket_in(ns, family, socket.SOCK_STREAM)
    s.settimeout(30)

    def run() -> Dict[str, Any]:
        t0 = time.perf_counter()
        s.connect((address, 80))
        t_conn = time.perf_counter() - t0
        s.sendall(f"GET {url_path} HTTP/1.1\r\nHost: {_url_host(address)}\r\n"
                  "Connection: close\r\n\r\n".encode())
        h = hashlib.sha256()
        buf = bytearray(1 << 20)
        head = b""
        got = 0
        while True:
            n = s.recv_into(buf)
            if not n:
                break
            chunk = memoryview(buf)[:n]
            if head is not None:
                head += bytes(chunk)
                if b"\r\n\r\n" in head:
                    head, body = head.split(b"\r\n\r\n", 1)
                    h.update(body)
                    got += len(body)
                    head = None
                continue
            h.update(chunk)
            got += n
        total = time.perf_counter() - t0
        return {"client": "python socket", "bytes": got, "sha256": h.hexdigest(),
                "time_connect": t_conn, "time_total": total}

    try:
        return await asyncio.get_running_loop().run_in_executor(None, run)
    except asyncio.CancelledError:
        try:
            s.shutdown(socket.SHUT_RDWR)          # the thread's recv returns at once
        except OSError:
            pass
        raise
    finally:
        s.close()


async def _curl_client(ns: str, curl: str, size: int,
                       address: str = ADDRESS) -> Dict[str, Any]:
    with tempfile.NamedTemporaryFile(prefix="fasttcp-demo-", delete=False) as f:
        path = f.name
    try:
        proc = await asyncio.create_subprocess_exec(
            # -g: the brackets of an IPv6 URL are literal, not a glob
            curl, "-sS", "-g", "--max-time", "60", "-o", path, "-w",
            "%{http_code} %{size_download} %{time_connect} %{time_total}",
            f"http://{_url_host(address)}/file", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, preexec_fn=_enter_netns(ns))
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 90)
        finally:
            if proc.returncode is None:        # cancelled or timed out: no stray curl
                proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"curl failed ({proc.returncode}): {err.decode().strip()}")
        code, nbytes, t_conn, t_total = out.decode().split()
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        return {"client": f"curl (HTTP {code})", "bytes": int(nbytes), "sha256": h.hexdigest(),
                "time_connect": float(t_conn), "time_total": float(t_total)}
    finally:
        os.unlink(path)


async def tun_demo(link: TunLink, ns: str, size: int, mtu: int) -> int:
    finished: List[str] = []
    address = link.address or ADDRESS
    host = Host(address, mtu=mtu, gso_max=65000 if link.offload else 0)
    http = HttpServer(size=size)

    async def handler(reader, writer):
        conn = writer.get_extra_info("fasttcp_connection")
        print(f"  handshake: {_url_host(conn.remote_address[0])}:{conn.remote_address[1]} "
              f"-> {_url_host(address)}:80 established; {_info_line(conn)}", flush=True)
        t0 = time.perf_counter()
        try:
            await http(reader, writer)
        except asyncio.CancelledError:
            # Interrupted: end the task normally (asyncio's stream machinery reports a
            # cancelled handler task as an error).
            writer.close()
            return
        finished.append(f"  server: response sent and connection closed in "
                        f"{(time.perf_counter() - t0) * 1000:.0f} ms; {_info_line(conn)}")

    async with FastTcpStack(host, link) as stack:
        server = await stack.start_server(handler, 80)
        curl = shutil.which("curl")
        result = await (_curl_client(ns, curl, size, address) if curl
                        else _python_client(ns, "/file", size, address))
        for _ in range(100):                   # let the close handshake finish
            if finished:
                break
            await asyncio.sleep(0.01)
        server.close()
    expected = hashlib.sha256(generated_body(size)).hexdigest()
    ok = result["bytes"] == size and result["sha256"] == expected
    xfer = result["time_total"] - result["time_connect"]
    print(f"  client: {result['client']} received {result['bytes']} bytes, sha256 "
          f"{'matches' if ok else 'DIFFERS'}")
    for line in finished:
        print(line)
    print(f"  goodput: {size * 8 / xfer / 1e9:.2f} Gbit/s ({xfer * 1000:.0f} ms after the "
          f"handshake, which took {ms(result['time_connect'])})")
    st = host.stats()
    print(f"  host: {st.get('packets_in', 0)} packets in ({st.get('fast_path_segments', 0)} "
          f"on the fast path), {st.get('packets_out', 0)} out, "
          f"{st.get('retransmitted_segments', 0)} retransmitted; link: "
          f"{link.stats().get('rx_gso_packets', 0)} TSO super-packets in, "
          f"{link.stats().get('tx_gso_packets', 0)} out")
    return 0 if ok else 1


def memory_demo(size: int, mtu: int) -> int:
    from fasttcp.transfer import bulk_transfer

    print(f"fasttcp demo (in memory): {size / 2**20:.0f} MiB from a fasttcp client host "
          f"(10.0.0.1) to a fasttcp server host (10.0.0.2), MTU {mtu}, both in this process")
    r = bulk_transfer(size, mtu=mtu, log=lambda m: print("  " + m))
    print(f"  transfer: {r.nbytes} bytes, content {'matches' if r.intact else 'DIFFERS'}, "
          f"{r.packets} packets")
    print(f"  goodput: {r.gbit_per_s:.2f} Gbit/s of wall time "
          f"({r.wall_seconds * 1000:.0f} ms for both stacks' work)")
    ci, si = r.client_info, r.server_info
    print(f"  client info: state={ci.state} mss={ci.mss} cwnd={ci.cwnd} srtt={ms(ci.srtt)} "
          f"rto={ms(ci.rto)} retransmits={ci.retransmits} bytes_acked={ci.bytes_acked}")
    print(f"  server info: state={si.state} bytes_received={si.bytes_received}")
    return 0 if r.intact else 1


def run_demo(size: int, mtu: int, offload: bool, memory: bool, ipv6: bool = False) -> int:
    """The TUN demo (over IPv6 with ``ipv6``), or the in-memory one without TUN or root."""
    reason = "--memory was given" if memory else tun_available()
    if reason is None:
        ns = f"fasttcp-demo-{os.getpid()}"
        address, kernel = (ADDRESS6, "fd77::1/64") if ipv6 else (ADDRESS, "10.77.0.1/24")
        print(f"fasttcp demo: the Linux kernel's TCP downloads {size / 2**20:.0f} MiB from a "
              f"fasttcp HTTP server over a TUN device ({'IPv6, ' if ipv6 else ''}MTU {mtu}, "
              f"offload {'on' if offload else 'off'})")
        print(f"  setting up network namespace {ns}: TUN ftdemo0, kernel side {kernel}, "
              f"fasttcp on {address}", flush=True)
        try:
            link = TunLink("ftdemo0", address=address, mtu=mtu, netns=ns, offload=offload)
        except OSError as e:                   # the link removed what it had made
            reason = f"setting up the TUN device failed: {e.strerror or e}"
        else:
            return _run_tun_demo(link, ns, size, mtu)
    print(f"(TUN demo unavailable: {reason}; running the transfer in memory"
          f"{', over IPv4' if ipv6 else ''})")
    return memory_demo(size, mtu)


def _run_tun_demo(link: TunLink, ns: str, size: int, mtu: int) -> int:
    """tun_demo on a loop of its own; SIGINT or SIGTERM cancels it, and either way the
    device and namespace are removed (with those signals ignored meanwhile)."""
    stopped: List[signal.Signals] = []

    async def main() -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def stop(sig: signal.Signals) -> None:
            if not stopped:
                stopped.append(sig)
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop, sig)
        return await tun_demo(link, ns, size, mtu)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        if not stopped:
            raise
        return 128 + stopped[0]
    finally:
        saved = {sig: signal.signal(sig, signal.SIG_IGN)
                 for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            link.close()
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)
        if stopped:
            print(f"fasttcp demo: interrupted by {stopped[0].name}; TUN device and namespace "
                  f"{ns} removed", flush=True)
        else:
            print(f"  cleaned up: TUN device and namespace {ns} removed")
