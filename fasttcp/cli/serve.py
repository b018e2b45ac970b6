"""``fasttcp serve``: own a TUN device and serve echo, discard or HTTP on it; and the
control socket that ``fasttcp stats`` reads."""
from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
from typing import Any, Dict, List, Optional

from fasttcp.aio import FastTcpStack
from fasttcp.cli.servers import DEFAULT_PORTS, control_path, make_handler
from fasttcp.host.host import Host
from fasttcp.link.tun import TunLink


def snapshot(host: Host, link: Any = None) -> Dict[str, Any]:
    """The host's counters and connection table, as JSON-able data."""
    conns: List[Dict[str, Any]] = []
    for c in host.connections():
        i = c.info()
        conns.append({
            "local": f"{c.local_address[0]}:{c.local_address[1]}",
            "remote": f"{c.remote_address[0]}:{c.remote_address[1]}",
            "state": i.state, "mss": i.mss, "cwnd": i.cwnd, "ssthresh": i.ssthresh,
            "srtt_ms": None if i.srtt is None else round(i.srtt * 1000, 3),
            "rto_ms": round(i.rto * 1000, 1), "retransmits": i.retransmits,
            "bytes_acked": i.bytes_acked, "bytes_received": i.bytes_received,
            "send_buffered": i.send_buffered, "recv_buffered": i.recv_buffered,
        })
    data: Dict[str, Any] = {"address": host.address, "stats": host.stats(),
                            "connections": conns}
    if link is not None and hasattr(link, "stats"):
        data["link"] = link.stats()
    return data


def render(data: Dict[str, Any]) -> str:
    """``ss -ti``-like text for a person."""
    lines = [f"fasttcp host {data['address']}"]
    stats = data["stats"]
    keys = sorted(stats)
    width = max((len(k) for k in keys), default=0)
    lines += [f"  {k:<{width}}  {stats[k]}" for k in keys]
    if data.get("link"):
        lines.append("link:")
        lines += [f"  {k:<{width}}  {v}" for k, v in sorted(data["link"].items())]
    lines.append(f"{'State':<12} {'Local':<22} {'Peer':<22}")
    for c in data["connections"]:
        lines.append(f"{c['state']:<12} {c['local']:<22} {c['remote']:<22}")
        lines.append(f"    mss:{c['mss']} cwnd:{c['cwnd']} ssthresh:{c['ssthresh']} "
                     f"rtt:{c['srtt_ms']}ms rto:{c['rto_ms']}ms retrans:{c['retransmits']} "
                     f"bytes_acked:{c['bytes_acked']} bytes_received:{c['bytes_received']}")
    return "\n".join(lines)


async def serve_control(path: str, host: Host, link: Any) -> asyncio.AbstractServer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(json.dumps(snapshot(host, link)).encode())
        await writer.drain()
        writer.close()

    if os.path.exists(path):
        os.unlink(path)
    return await asyncio.start_unix_server(answer, path)


def read_control(path: str) -> Dict[str, Any]:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        chunks = []
        while chunk := s.recv(1 << 16):
            chunks.append(chunk)
    return json.loads(b"".join(chunks))


def kernel_side(address: str) -> str:
    """The kernel's address on the TUN: the first address of ADDR's /24."""
    net = ipaddress.ip_network(f"{address}/24", strict=False)
    first = str(next(net.hosts()))
    if first == address:
        raise ValueError(f"{address} is the first address of its /24: the kernel side "
                         f"takes it; pick another")
    return first


def serve(service: str, *, netns: Optional[str], tun: str, address: str,
          port: Optional[int], root: Optional[str], size: int, offload: bool,
          mtu: int, control: Optional[str], duration: Optional[float] = None) -> int:
    kernel = kernel_side(address)
    # pyroute2's netlink calls run outside the event loop (they drive their own).
    link = TunLink(tun, address=address, prefix=24, mtu=mtu, netns=netns, offload=offload,
                   kernel_address=kernel, keep_netns=True)
    try:
        return asyncio.run(_serve(link, service, netns=netns, tun=tun, address=address,
                                  kernel=kernel, port=port, root=root, size=size,
                                  control=control, duration=duration))
    finally:
        link.close()


async def _serve(link: TunLink, service: str, *, netns: Optional[str], tun: str,
                 address: str, kernel: str, port: Optional[int], root: Optional[str],
                 size: int, control: Optional[str], duration: Optional[float]) -> int:
    host = Host(address, mtu=link.mtu, gso_max=65000 if link.offload else 0)
    port = port or DEFAULT_PORTS[service]
    ctl_path = control or control_path(tun)
    try:
        async with FastTcpStack(host, link) as stack:
            server = await stack.start_server(make_handler(service, root, size), port)
            ctl = await serve_control(ctl_path, host, link)
            where = f" in netns {netns}" if netns else ""
            print(f"fasttcp serving {service} on {address}:{port} via {tun}{where}; the kernel "
                  f"side is {kernel}/24 (offload {'on' if link.offload else 'off'}). "
                  f"Stats: fasttcp stats --control {ctl_path}", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            try:
                if duration is None:
                    await stop.wait()
                else:
                    await asyncio.wait_for(stop.wait(), duration)
            except asyncio.TimeoutError:
                pass
            ctl.close()
            server.close()
    finally:
        if os.path.exists(ctl_path):
            os.unlink(ctl_path)
    return 0
