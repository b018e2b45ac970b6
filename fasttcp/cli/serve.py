"""``fasttcp serve``: own a TUN device and serve echo, discard or HTTP on it; and the
control socket that ``fasttcp stats`` reads."""
from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
import socket
import stat
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from fasttcp.aio import FastTcpStack
from fasttcp.cli.servers import DEFAULT_PORTS, control_path, make_handler
from fasttcp.host.host import Host
from fasttcp.link import netns as _ns
from fasttcp.link.tun import (DEFAULT_PREFIX, TunLink, check_host_ip, check_link_address,
                              link_addresses, parse_ip)
from fasttcp.tcp.states import State

#: After --grace, connections still open are closed (FIN) and get this long to finish the
#: close handshake before they are reset.
CLOSE_TIMEOUT = 2.0


def hostport(address: Any) -> str:
    """``10.77.0.2:80``, or ``[fd77::2]:80`` for IPv6 (RFC 3986 3.2.2), from a socket
    address tuple (IPv6's has four fields)."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def snapshot(host: Host, link: Any = None) -> Dict[str, Any]:
    """The host's counters and connection table, as JSON-able data."""
    conns: List[Dict[str, Any]] = []
    for c in host.connections():
        i = c.info()
        conns.append({
            "local": hostport(c.local_address),
            "remote": hostport(c.remote_address),
            "state": i.state, "mss": i.mss, "cwnd": i.cwnd, "ssthresh": i.ssthresh,
            "srtt_ms": None if i.srtt is None else round(i.srtt * 1000, 3),
            "rto_ms": round(i.rto * 1000, 1), "retransmits": i.retransmits,
            "bytes_acked": i.bytes_acked, "bytes_received": i.bytes_received,
            "send_buffered": i.send_buffered, "recv_buffered": i.recv_buffered,
        })
    addresses = list(getattr(host, "addresses", None) or (host.address,))
    data: Dict[str, Any] = {"address": addresses[0], "addresses": addresses,
                            "time": time.time(), "stats": host.stats(), "connections": conns}
    if link is not None and hasattr(link, "stats"):
        data["link"] = link.stats()
    return data


def render(data: Dict[str, Any]) -> str:
    """``ss -ti``-like text for a person."""
    lines = [f"fasttcp host {', '.join(data.get('addresses') or [data['address']])}"]
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
    relay = data.get("relay")
    if relay:                                  # fasttcp relay: its counters and flows
        lines.append("relay:")
        rstats = relay["stats"]
        lines += [f"  {k:<{width}}  {v}" for k, v in sorted(rstats.items())]
        lines.append(f"{'Flow':<12} {'Client':<22} {'Destination':<22} Via")
        for f in relay["flows"]:
            lines.append(f"{f['kind'] + ' ' + f['state']:<12} {f['client']:<22} "
                         f"{f['destination']:<22} {f['via']}")
            lines.append(f"    seconds:{f['seconds']} bytes_up:{f['bytes_up']} "
                         f"bytes_down:{f['bytes_down']}")
    return "\n".join(lines)


def status_line(data: Dict[str, Any], previous: Optional[Dict[str, Any]] = None) -> str:
    """One line about a snapshot: connections by state, packets, bytes, retransmissions,
    the mean smoothed RTT (ms, as everywhere in the command line) and, given the previous
    snapshot, the link's receive and transmit rates since."""
    states: Dict[str, int] = {}
    rtts = []
    for c in data["connections"]:
        states[c["state"]] = states.get(c["state"], 0) + 1
        if c["srtt_ms"] is not None and c["state"] == "ESTABLISHED":
            rtts.append(c["srtt_ms"])
    n = len(data["connections"])
    by_state = ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
    st = data["stats"]
    line = (f"fasttcp {', '.join(data.get('addresses') or [data['address']])}: "
            f"{n} connection{'' if n == 1 else 's'}"
            f"{f' ({by_state})' if by_state else ''}; packets in {st.get('packets_in', 0)} "
            f"out {st.get('packets_out', 0)}; retransmitted {st.get('retransmitted_segments', 0)}")
    if rtts:
        line += f"; srtt {sum(rtts) / len(rtts):.3f} ms"
    relay = (data.get("relay") or {}).get("stats")
    if relay:
        line += (f"; relay flows tcp {relay.get('tcp_flows', 0)} "
                 f"(connecting {relay.get('tcp_connecting', 0)}) udp {relay.get('udp_flows', 0)}")
    link = data.get("link") or {}
    if previous is not None and link and previous.get("link"):
        dt = data.get("time", 0) - previous.get("time", 0)
        if dt > 0:
            rx = (link.get("rx_bytes", 0) - previous["link"].get("rx_bytes", 0)) * 8 / dt
            tx = (link.get("tx_bytes", 0) - previous["link"].get("tx_bytes", 0)) * 8 / dt
            line += f"; rx {rx / 1e6:.1f} Mbit/s tx {tx / 1e6:.1f} Mbit/s"
    return line


# ------------------------------------------------------------------------------------------
# The control socket
# ------------------------------------------------------------------------------------------

def check_control(path: str) -> None:
    """Refuse a control socket path that is not ours to take: something other than a
    socket, or a socket a live server answers on. A stale socket (nobody listening) is
    fine: :func:`serve_control` replaces it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(f"control socket {path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return                                             # stale
        except OSError as e:
            raise OSError(e.errno, f"control socket {path}: {e.strerror}") from e
    raise FileExistsError(f"another fasttcp server answers on control socket {path} "
                          "(stop it, or give this one --control PATH)")


class ControlSocket:
    """The Unix socket ``fasttcp stats`` reads; :meth:`close` removes the path only while it
    is still this socket (another server may have replaced it since)."""

    def __init__(self, path: str, server: asyncio.AbstractServer, ident: Tuple[int, int]):
        self.path, self.server, self.ident = path, server, ident

    def close(self) -> None:
        self.server.close()
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self.ident:
            os.unlink(self.path)


async def serve_control(path: str, host: Host, link: Any,
                        extra: Optional[Callable[[], Dict[str, Any]]] = None) -> ControlSocket:
    """The control socket at ``path``: each connection gets one JSON snapshot of ``host``
    (and ``link``), plus whatever ``extra()`` returns merged in (the relay's flows)."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            data = snapshot(host, link)
            if extra is not None:
                data.update(extra())
            writer.write(json.dumps(data).encode())
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    check_control(path)
    try:
        os.unlink(path)                                        # a stale one
    except FileNotFoundError:
        pass
    server = await asyncio.start_unix_server(answer, path)
    st = os.lstat(path)
    return ControlSocket(path, server, (st.st_dev, st.st_ino))


def read_control(path: str) -> Dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        chunks = []
        while chunk := s.recv(1 << 16):
            chunks.append(chunk)
    return json.loads(b"".join(chunks))


# ------------------------------------------------------------------------------------------
# Checks before anything is created
# ------------------------------------------------------------------------------------------

def split_address(text: str) -> Tuple[str, Optional[int]]:
    """``ADDR`` or ``ADDR/PREFIX`` (ValueError for a prefix that is no number)."""
    addr, slash, prefix = text.partition("/")
    if not slash:
        return addr, None
    if not prefix.isdigit():
        raise ValueError(f"invalid prefix length {prefix!r} in {text!r}")
    return addr, int(prefix)


def kernel_side(address: str, prefix: Optional[int] = None) -> str:
    """The kernel's address on the TUN: the first address of ADDR's network (its /24 for
    IPv4, its /64 for IPv6, unless ``prefix`` says otherwise)."""
    family = 6 if ":" in address else 4
    plen = DEFAULT_PREFIX[family] if prefix is None else prefix
    try:
        net = ipaddress.ip_network(f"{address}/{plen}", strict=False)
    except ValueError:
        return ""                              # check_link_address says what is wrong
    first = str(net.network_address + 1)
    if first == str(ipaddress.ip_address(address)):
        raise ValueError(f"{address} is the first address of its /{plen}: the kernel side "
                         f"takes it; pick another")
    return first


def check_address(address: str) -> str:
    """fasttcp's address for ``serve`` (``ADDR`` or ``ADDR/PREFIX``, IPv4 or IPv6): a host
    address of its network other than the first (the kernel's). Returns the kernel's
    address; ValueError in one line otherwise."""
    addr, prefix = split_address(address)
    ip = parse_ip(addr)                        # not an address; scoped (link-local)
    check_host_ip(ip)                          # multicast, unspecified, link-local, ...
    kernel_side(str(ip), prefix)
    _, kernel, _ = check_link_address(str(ip), prefix)   # prefix, network, broadcast, ...
    return str(kernel)


def address_plan(addresses: Sequence[str]) -> List[str]:
    """``--address`` values (one or more, either family) as TunLink's ``addresses=``
    (``ADDR/PREFIX``, the default prefix filled in); ValueError for any that cannot work
    or that cannot work together (twice the same, overlapping networks)."""
    out = []
    for text in addresses:
        check_address(text)
        addr, prefix = split_address(text)
        a = ipaddress.ip_address(addr)
        out.append(f"{a}/{DEFAULT_PREFIX[a.version] if prefix is None else prefix}")
    link_addresses(addresses=out)
    return out


def routing_conflict(netns: Optional[str], address: str, tun: str) -> Optional[str]:
    """Why ADDR's network (``ADDR/PREFIX``; by default its /24, or /64 for IPv6) would not
    reach a new TUN device in ``netns`` (None: it would): an address of the network on
    another interface, or a route for it (or a part of it) through one. The connected
    route of the TUN would lose to either, and every connection would time out."""
    addr, prefix = split_address(address)
    version = ipaddress.ip_address(addr).version
    plen = DEFAULT_PREFIX[version] if prefix is None else prefix
    net = ipaddress.ip_network(f"{addr}/{plen}", strict=False)
    family = socket.AF_INET6 if version == 6 else socket.AF_INET
    where = f" in network namespace {netns}" if netns else ""
    if netns is not None and not _ns.netns_exists(netns):
        return None
    with _ns.iproute(netns) as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for a in ipr.get_addr(family=family):
            ip = a.get_attr("IFA_ADDRESS")
            if ip and ipaddress.ip_address(ip) in net and names.get(a["index"]) != tun:
                return (f"{net} is already in use{where}: {ip}/{a['prefixlen']} is on "
                        f"{names.get(a['index'], a['index'])}")
        for r in ipr.get_routes(family=family):
            if r.get_attr("RTA_TABLE") not in (None, 254) or r["dst_len"] < net.prefixlen:
                continue
            dst = r.get_attr("RTA_DST")
            if dst is None:
                continue
            route = ipaddress.ip_network(f"{dst}/{r['dst_len']}", strict=False)
            oif = names.get(r.get_attr("RTA_OIF"), r.get_attr("RTA_OIF"))
            if route.overlaps(net) and oif != tun:
                via = r.get_attr("RTA_GATEWAY")
                return (f"{net} is already routed{where}: {route} "
                        f"{f'via {via} ' if via else ''}dev {oif}")
    return None


def check_root(root: Optional[str]) -> None:
    if root is None:
        return
    if not os.path.isdir(root):
        raise FileNotFoundError(f"--root {root}: no such directory")
    if not os.access(root, os.R_OK | os.X_OK):
        raise PermissionError(f"--root {root}: directory not readable")


# ------------------------------------------------------------------------------------------
# serve
# ------------------------------------------------------------------------------------------

class _Stop:
    """What ended the serving: a signal, or --duration."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()


def serve(service: str, *, netns: Optional[str], tun: str, address: Union[str, Sequence[str]],
          port: Optional[int], root: Optional[str], size: int, offload: bool,
          mtu: int, control: Optional[str], duration: Optional[float] = None,
          stats_interval: float = 0.0, grace: float = 5.0,
          out: Callable[[str], None] = lambda line: print(line, flush=True)) -> int:
    """Serve until SIGINT, SIGTERM or ``duration``; then stop accepting, let connections
    finish for up to ``grace`` seconds, close the rest (reset those that do not close
    within CLOSE_TIMEOUT), remove the device, the control socket and a namespace this
    command created, and print one line. ``address`` is one address or several (either
    family, ``ADDR`` or ``ADDR/PREFIX``): the Host answers on all of them, and the kernel
    takes the first host of each network on the TUN. Bad input raises OSError or
    ValueError before anything is created."""
    plan = address_plan([address] if isinstance(address, str) else list(address))
    if mtu < 1280 and any(":" in a for a in plan):
        raise ValueError(f"--mtu {mtu} is below 1280, the IPv6 minimum (RFC 8200 5)")
    check_root(root)
    ctl_path = control or control_path(tun)
    check_control(ctl_path)
    for a in plan:
        conflict = routing_conflict(netns, a, tun)
        if conflict is not None:
            raise OSError(f"{conflict}; pick another --address or namespace")
    link = TunLink(tun, addresses=plan, mtu=mtu, netns=netns, offload=offload)
    created_ns = link.created_netns and not link.keep_netns
    summary = ""
    try:
        summary = asyncio.run(_serve(link, service, netns=netns, tun=tun,
                                     port=port, root=root, size=size,
                                     ctl_path=ctl_path, duration=duration,
                                     stats_interval=stats_interval, grace=grace, out=out))
    finally:
        saved = {sig: signal.signal(sig, signal.SIG_IGN)
                 for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            link.close()                     # the device, and a namespace it created
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)
    removed = f"; removed {tun}" + (f" and network namespace {netns}" if created_ns else "")
    out(f"fasttcp serve: {summary}{removed}")
    return 0


async def _serve(link: TunLink, service: str, *, netns: Optional[str], tun: str,
                 port: Optional[int], root: Optional[str],
                 size: int, ctl_path: str, duration: Optional[float],
                 stats_interval: float, grace: float, out: Callable[[str], None]) -> str:
    addresses = list(link.addresses)
    # One address as the Host has always taken it; several as a list (either family).
    host = Host(addresses[0] if len(addresses) == 1 else addresses, mtu=link.mtu,
                gso_max=65000 if link.offload else 0)
    port = port or DEFAULT_PORTS[service]
    handler = make_handler(service, root, size)
    active: Dict[asyncio.Task, asyncio.StreamWriter] = {}
    stopping = False

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        active[task] = writer
        try:
            await handler(reader, writer)
        except asyncio.CancelledError:
            # Cancelled by the stop: the connection is closed (FIN), and the task ends
            # normally - asyncio's stream machinery reports a cancelled one as an error.
            if not stopping:
                raise
            writer.close()
        finally:
            active.pop(task, None)

    stop = _Stop()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set, sig.name)
    async with FastTcpStack(host, link) as stack:
        server = await stack.start_server(tracked, port)
        ctl = await serve_control(ctl_path, host, link)
        try:
            where = f" in netns {netns}" if netns else ""
            on = ", ".join(hostport((a, port)) for a in addresses)
            kernel = ", ".join(f"{k}/{n.rsplit('/', 1)[1]}"
                               for k, n in zip(link.kernel_addresses, link.networks))
            out(f"fasttcp serving {service} on {on} via {tun}{where}; the kernel "
                f"side is {kernel} (offload {'on' if link.offload else 'off'}). "
                f"Stats: fasttcp stats --control {ctl_path}")
            ticker = None
            if stats_interval > 0:
                ticker = asyncio.create_task(_status(host, link, stats_interval, out))
            try:
                await asyncio.wait_for(stop.event.wait(), duration)
            except asyncio.TimeoutError:
                stop.set(f"--duration {duration:g} s")
            if ticker is not None:
                ticker.cancel()
            server.close()                     # stop accepting
            stopping = True
            finished = 0
            if active:
                done, _ = await asyncio.wait(list(active), timeout=grace)
                finished = len(done)
            left = list(active)
            for task in left:
                task.cancel()                  # the handler closes its connection
            if left:
                await asyncio.wait(left, timeout=CLOSE_TIMEOUT)
            closed, reset = await _close_connections(host, stack, CLOSE_TIMEOUT)
        finally:
            ctl.close()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    parts = [f"{finished} finished"]
    if left:
        parts.append(f"{len(left)} closed after --grace {grace:g} s")
    if reset:
        parts.append(f"{reset} reset")
    return f"stopped by {stop.reason}; connections: {', '.join(parts)}"


#: States in which our side of a connection is done: our FIN was acknowledged (or the
#: connection is gone). A closed transport's connection lives on in the engine until then,
#: sending what its send buffer still holds, and then the FIN.
_DONE = {State.FIN_WAIT_2, State.TIME_WAIT, State.CLOSED}


async def _close_connections(host: Host, stack: FastTcpStack, timeout: float) -> Tuple[int, int]:
    """Close every connection still open and wait, at most ``timeout`` seconds, until each
    has sent what it holds and its FIN was acknowledged; reset the rest. Returns (closed,
    reset) counts of the connections that were still open."""
    pending = [c for c in host.connections() if c.state not in _DONE]
    for c in pending:
        if c.state in (State.ESTABLISHED, State.CLOSE_WAIT, State.SYN_RECEIVED):
            c.close()                           # a connection no handler holds any more
    stack.kick()
    end = time.monotonic() + timeout
    for _ in range(int(timeout / 0.01) + 1):
        if all(c.state in _DONE for c in pending) or time.monotonic() >= end:
            break
        await asyncio.sleep(0.01)
    reset = 0
    for c in pending:
        if c.state not in _DONE:
            c.abort()                           # RST, sent by the stack's last flush
            reset += 1
    return len(pending) - reset, reset


async def _status(host: Host, link: Any, interval: float, out: Callable[[str], None]) -> None:
    previous = snapshot(host, link)
    while True:
        await asyncio.sleep(interval)
        data = snapshot(host, link)
        out(status_line(data, previous))
        previous = data
