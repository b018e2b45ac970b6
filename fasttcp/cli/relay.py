"""``fasttcp relay``: a TUN device in a network namespace, routes into it, and every TCP
and UDP flow sent there relayed from this process's own namespace (tun2socks)."""
from __future__ import annotations

import asyncio
import ipaddress
import os
import resource
import signal
from typing import Any, Callable, Dict, List, Optional, Sequence

from fasttcp.aio import FastTcpStack
from fasttcp.cli.serve import _Stop, check_control, hostport, serve_control
from fasttcp.cli.servers import control_path
from fasttcp.host.host import Host
from fasttcp.link import netns as _ns
from fasttcp.link.tun import TunLink, run_outside_loop
from fasttcp.relay import Direct, Flow, Relay, Socks5, check_socks5

#: fasttcp's own address on the TUN device, per family (the kernel side takes the first
#: host of the network, which becomes the source of what the namespace sends into the
#: routes). 198.18.0.0/15 is set aside for network benchmarks (RFC 2544 C.2.2) and is what
#: tun2socks setups use; fdff:198:18::/64 is a unique local network (RFC 4193).
DEFAULT_ADDRESSES = {4: "198.18.0.2/24", 6: "fdff:198:18::2/64"}
DIRECT = Direct()
#: Seconds the relay waits for a SOCKS5 proxy to answer at start.
SOCKS5_CHECK_TIMEOUT = 5.0


def parse_route(text: str) -> str:
    """One ``--route``: an IPv4 or IPv6 network in CIDR notation without host bits (as
    ``ip route`` takes it); ValueError in one line otherwise."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as e:
        msg = str(e)
        if "host bits set" in msg:
            raise ValueError(f"invalid route {text!r}: host bits set (did you mean "
                             f"{ipaddress.ip_network(text.strip(), strict=False)}?)") from None
        raise ValueError(f"invalid route {text!r}: not a CIDR network "
                         "(e.g. 10.99.0.0/16 or fd00:99::/64)") from None
    return str(net)


def parse_socks5(text: str) -> Socks5:
    """``HOST:PORT`` or ``[IPv6]:PORT`` (RFC 3986 3.2.2)."""
    host, sep, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"invalid SOCKS5 proxy {text!r}: HOST:PORT expected "
                         "(e.g. 127.0.0.1:1080 or [::1]:1080)")
    return Socks5(host, int(port))


def tun_addresses(routes: Sequence[str]) -> List[str]:
    """fasttcp's addresses on the TUN: one per family the routes use, IPv4 first."""
    versions = {ipaddress.ip_network(r).version for r in routes}
    return [DEFAULT_ADDRESSES[v] for v in (4, 6) if v in versions]


def _raise_fd_limit(want: int) -> None:
    """Each relayed flow holds a socket: lift the soft open-files limit towards ``want``
    (never above the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _add_routes(netns: Optional[str], ifindex: int, routes: Sequence[str]) -> None:
    """Route each network into the TUN device inside ``netns`` (pyroute2)."""
    where = f" in network namespace {netns}" if netns else ""
    with _ns.iproute(netns) as ipr:
        for r in routes:
            net = ipaddress.ip_network(r)
            try:
                ipr.route("add", dst=str(net.network_address), dst_len=net.prefixlen,
                          oif=ifindex,
                          family=10 if net.version == 6 else 2)
            except Exception as e:              # pyroute2's NetlinkError is no OSError
                code = getattr(e, "code", 0)
                if code == 17:                  # EEXIST
                    raise FileExistsError(f"route {net} already exists{where} (another "
                                          "relay, or an interface on it?)") from None
                raise OSError(code, f"cannot add route {net}{where}: {e}") from None


def check_not_inside(netns: str) -> None:
    """The relay's upstream connections go to the original destinations, which the routes
    send into the TUN device: run inside ``netns`` itself, it would intercept its own
    connections, forever. ValueError then."""
    try:
        ours = os.stat("/proc/self/ns/net")
        theirs = os.stat(f"/run/netns/{netns}")
    except OSError:
        return                                  # no such namespace yet: it is made anew
    if (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino):
        raise ValueError(f"fasttcp relay is running inside network namespace {netns}: its "
                         "own connections to the destinations would be routed back into "
                         "the TUN; run it from another namespace")


def relay(*, netns: str, tun: str, routes: Sequence[str], socks5: Optional[str] = None,
          udp_direct: bool = False, udp_timeout: float = 60.0, max_flows: int = 4096,
          max_connecting: int = 512,
          connect_timeout: float = 10.0, control: Optional[str] = None,
          mtu: int = 1500, duration: Optional[float] = None,
          out: Callable[[str], None] = lambda line: print(line, flush=True)) -> int:
    """Relay until SIGINT, SIGTERM or ``duration``; then reset every flow, remove the TUN
    device (its routes go with it), the control socket and a namespace this command
    created, and print one line. Bad input raises OSError or ValueError before anything is
    created."""
    nets = [parse_route(r) for r in routes]
    if not nets:
        raise ValueError("at least one --route is needed")
    check_not_inside(netns)
    proxy = parse_socks5(socks5) if socks5 else None
    ctl_path = control or control_path(tun)
    check_control(ctl_path)
    if proxy is not None:
        asyncio.run(check_socks5(proxy, SOCKS5_CHECK_TIMEOUT))
    _raise_fd_limit(2 * max_flows + 256)
    link = TunLink(tun, addresses=tun_addresses(nets), mtu=mtu, netns=netns, offload=True)
    created_ns = link.created_netns and not link.keep_netns
    summary = ""
    try:
        run_outside_loop(_add_routes, netns, link.ifindex, nets)
        summary = asyncio.run(_relay(link, nets, proxy=proxy, udp_direct=udp_direct,
                                     netns=netns, tun=tun,
                                     udp_timeout=udp_timeout, max_flows=max_flows,
                                     max_connecting=max_connecting,
                                     connect_timeout=connect_timeout, ctl_path=ctl_path,
                                     duration=duration, out=out))
    finally:
        saved = {sig: signal.signal(sig, signal.SIG_IGN)
                 for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            link.close()                     # the device and its routes, and a namespace
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)
    removed = f"; removed {tun}" + (f" and network namespace {netns}" if created_ns else "")
    out(f"fasttcp relay: {summary}{removed}")
    return 0


def relay_snapshot(relay: Relay) -> Dict[str, Any]:
    """What ``fasttcp stats`` shows of a relay: its counters and its flows."""
    return {"relay": {"stats": relay.stats(), "routes": list(relay.routes),
                      "flows": [f.info() for f in relay.flows()]}}


async def _relay(link: TunLink, routes: List[str], *, proxy: Optional[Socks5],
                 udp_direct: bool, netns: str,
                 tun: str, udp_timeout: float, max_flows: int, max_connecting: int,
                 connect_timeout: float, ctl_path: str, duration: Optional[float],
                 out: Callable[[str], None]) -> str:
    addresses: List[str] = list(link.addresses)
    # nodelay: the relay forwards what it reads as it reads it; Nagle on this side would
    # hold a client's small replies for an ACK (the upstream sockets are TCP_NODELAY too,
    # as asyncio makes them).
    host = Host(addresses[0] if len(addresses) == 1 else addresses, mtu=link.mtu,
                gso_max=65000 if link.offload else 0, nodelay=True)
    stop = _Stop()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set, sig.name)
    upstream: Optional[Callable[[Flow], Any]] = None
    if proxy is not None:
        def upstream(flow: Flow) -> Any:
            return DIRECT if udp_direct and flow.kind == "udp" else proxy
    async with FastTcpStack(host, link) as stack:
        r = Relay(stack, routes, upstream=upstream, udp_timeout=udp_timeout,
                  max_flows=max_flows, max_connecting=max_connecting,
                  connect_timeout=connect_timeout)
        await r.start()
        ctl = await serve_control(ctl_path, host, link, extra=lambda: relay_snapshot(r))
        try:
            via = "directly"
            if proxy is not None:
                via = (f"through SOCKS5 proxy {hostport((proxy.host, proxy.port))}"
                       + (" (UDP directly)" if udp_direct else ""))
            out(f"fasttcp relaying {', '.join(routes)} from {tun} in netns {netns} {via}; "
                f"the namespace's source addresses are "
                f"{', '.join(link.kernel_addresses)}. Stats: fasttcp stats --control "
                f"{ctl_path}")
            try:
                await asyncio.wait_for(stop.event.wait(), duration)
            except asyncio.TimeoutError:
                stop.set(f"--duration {duration:g} s")
            st = r.stats()
            await r.close()
        finally:
            ctl.close()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    return (f"stopped by {stop.reason}; flows: {st['tcp_flows_total']} TCP, "
            f"{st['udp_flows_total']} UDP; reset {st['tcp_flows']} TCP still open, "
            f"closed {st['udp_flows']} UDP")
