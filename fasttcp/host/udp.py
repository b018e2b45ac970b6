"""UDP for the Host (RFC 768; issue 15): bound endpoints, intercepted flows, ICMP errors.

UDP never reaches the TCP fast path: the batch parse (fasttcp/wire/_wire.pyx) checks its
length and checksum in C, and each valid datagram comes through ``Host.input_slow`` to
:meth:`UdpLayer.input`, the one hook. Like the rest of the host this is sans-IO: packets
leave through the host's output list at the next ``transmit()``, readiness through
``pop_ready()``, and the idle expiry of intercepted flows through ``poll_at()`` /
``transmit()``. See docs/ARCHITECTURE.md, "UDP".
"""
from __future__ import annotations

import errno
import hashlib
import heapq
import ipaddress
import itertools
import os
import random
from collections import deque
from typing import Any, Deque, Dict, Iterable, List, Optional, Tuple

from fasttcp.host._prefix import PrefixSet
from fasttcp.wire import (
    Packet,
    build_icmp,
    build_icmpv6_error,
    build_udp_fragments,
    bytes_to_ip6,
    int_to_ip,
)

__all__ = ["UdpEndpoint", "UdpFlow", "UdpInterceptor", "UdpLayer"]

#: Linux's icmp_msgs_burst: the ICMP error token bucket's depth.
ICMP_BURST = 50

# ICMP (type 3) and ICMPv6 (type 1) unreachable codes as errno values, as Linux's
# icmp_err_convert / icmpv6_err_convert; time exceeded is EHOSTUNREACH in both.
_ICMP4_ERRNO = {0: errno.ENETUNREACH, 1: errno.EHOSTUNREACH, 2: errno.ENOPROTOOPT,
                3: errno.ECONNREFUSED, 5: errno.EOPNOTSUPP, 6: errno.ENETUNREACH,
                7: errno.EHOSTDOWN, 8: errno.ENONET, 9: errno.ENETUNREACH,
                10: errno.EHOSTUNREACH, 11: errno.ENETUNREACH, 12: errno.EHOSTUNREACH,
                13: errno.EHOSTUNREACH, 14: errno.EHOSTUNREACH, 15: errno.EHOSTUNREACH}
_ICMP6_ERRNO = {0: errno.ENETUNREACH, 1: errno.EACCES, 2: errno.EHOSTUNREACH,
                3: errno.EHOSTUNREACH, 4: errno.ECONNREFUSED, 5: errno.EACCES,
                6: errno.EACCES}

# An address key: the IPv4 number, or the 16 bytes of an IPv6 address (never equal).
_Key = Any


def _addr_key(text: str) -> Tuple[int, _Key]:
    ip = ipaddress.ip_address(text.split("%", 1)[0])
    return (ip.version, int(ip) if ip.version == 4 else ip.packed)


def _name(ver: int, key: _Key, port: int) -> Tuple[Any, ...]:
    """The socket module's address shape: (host, port), or (host, port, 0, 0) for IPv6."""
    if ver == 6:
        return (bytes_to_ip6(key), port, 0, 0)
    return (int_to_ip(key), port)


def _pk_keys(pk: Packet) -> Tuple[int, _Key, _Key]:
    if pk.version == 6:
        return 6, pk.src_bytes, pk.dst_bytes
    return 4, pk.src_int, pk.dst_int




class _Queue:
    """Received datagrams, bounded in bytes (settings.udp_rcvbuf, as Linux's rcvbuf)."""

    __slots__ = ("items", "nbytes")

    def __init__(self) -> None:
        self.items: Deque[Any] = deque()
        self.nbytes = 0


class UdpEndpoint:
    """A bound UDP port (``Host.udp_bind``): ``sendto``/``recvfrom``, optionally
    ``connect``-ed to one peer (datagrams from others are then not for it, as Linux)."""

    def __init__(self, layer: "UdpLayer", port: int, local: Optional[Tuple[int, _Key]]) -> None:
        self._layer = layer
        self.port = port
        self._local = local
        self._peer: Optional[Tuple[int, _Key, int]] = None
        self._q = _Queue()
        #: A pending error from an ICMP error (connected endpoints, as Linux without
        #: IP_RECVERR): raised, and cleared, by the next recvfrom() or sendto().
        self.error: Optional[OSError] = None
        self.closed = False

    @property
    def local_address(self) -> Tuple[Any, ...]:
        """(address, port): the bound address; for an endpoint bound to every address the
        source a connect() chose (as Linux's getsockname), else the wildcard."""
        local = self._local
        if local is None and self._peer is not None:
            ver = self._peer[0]
            local = (ver, self._layer.first4 if ver == 4 else self._layer.first6)
        if local is None:
            if self._layer.first4 is None and self._layer.first6 is not None:
                return ("::", self.port, 0, 0)
            return ("0.0.0.0", self.port)
        return _name(local[0], local[1], self.port)

    @property
    def remote_address(self) -> Optional[Tuple[Any, ...]]:
        """The connected peer, or None."""
        if self._peer is None:
            return None
        return _name(*self._peer)

    def connect(self, addr: Tuple[Any, ...]) -> None:
        """Send to ``addr`` by default and take datagrams only from it (Linux's connected
        UDP: others find no socket, RFC 1122 4.1.3.1 then answers port unreachable)."""
        self._check_open()
        ver, key = _addr_key(str(addr[0]))
        self._layer.source_for(ver, self._local)            # a family we have
        self._peer = (ver, key, int(addr[1]))

    def sendto(self, data: Any, addr: Optional[Tuple[Any, ...]] = None) -> int:
        """Queue one datagram to ``addr`` (the connected peer when None); it leaves at the
        next transmit(), fragmented when larger than the MTU. Returns its length."""
        self._check_open()
        self._raise_error()
        if addr is None:
            if self._peer is None:
                raise OSError(errno.EDESTADDRREQ, "destination address required")
            ver, key, port = self._peer
        else:
            ver, key = _addr_key(str(addr[0]))
            port = int(addr[1])
        if not 0 < port < 65536:
            raise ValueError("port must be 1..65535")
        src = self._layer.source_for(ver, self._local)
        n = len(memoryview(data))
        self._layer.send(ver, src, key, self.port, port, data)
        return n

    def recvfrom(self) -> Optional[Tuple[bytes, Tuple[Any, ...]]]:
        """The oldest queued datagram and its sender, or None."""
        self._raise_error()
        q = self._q
        if not q.items:
            return None
        data, addr = q.items.popleft()
        q.nbytes -= len(data)
        return data, addr

    def pending(self) -> int:
        """Datagrams queued."""
        return len(self._q.items)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._layer.unbind(self)
        self._q.items.clear()
        self._q.nbytes = 0

    def _check_open(self) -> None:
        if self.closed:
            raise OSError(errno.EBADF, "endpoint closed")

    def _raise_error(self) -> None:
        err = self.error
        if err is not None:
            self.error = None
            raise err

    def __repr__(self) -> str:
        return f"<UdpEndpoint {self.local_address}{' closed' if self.closed else ''}>"


class UdpFlow:
    """One intercepted UDP 4-tuple (``UdpInterceptor.accept``): datagrams from the client
    to the original destination, and replies from that destination."""

    def __init__(self, ui: "UdpInterceptor", ver: int, lkey: _Key, lport: int, rkey: _Key,
                 rport: int, now: float) -> None:
        self._ui = ui
        self._ver = ver
        self._lkey = lkey
        self._rkey = rkey
        self._lport = lport
        self._rport = rport
        self.local_address = _name(ver, lkey, lport)      # the original destination
        self.remote_address = _name(ver, rkey, rport)     # the client
        self._q = _Queue()
        self._last = b""                                  # the client's last datagram
        self.last_active = now
        #: A pending error from an ICMP error quoting a datagram the flow sent (as a
        #: connected endpoint's): raised, and cleared, by the next recv() or send(). The
        #: flow stays open (one ICMP error does not end a UDP "connection").
        self.error: Optional[OSError] = None
        self.closed = False

    def recv(self) -> Optional[bytes]:
        """The oldest datagram from the client, or None (raises a pending ``error``)."""
        err = self.error
        if err is not None:
            self.error = None
            raise err
        q = self._q
        if not q.items:
            return None
        data = q.items.popleft()
        q.nbytes -= len(data)
        return data

    def pending(self) -> int:
        return len(self._q.items)

    def send(self, data: Any) -> int:
        """A datagram to the client from the original destination (fragmented as needed);
        a pending ``error`` is raised instead, once, as a connected socket's."""
        if self.closed:
            raise OSError(errno.EBADF, "flow closed")
        err = self.error
        if err is not None:
            self.error = None
            raise err
        layer = self._ui._layer
        self.last_active = layer.host.now
        layer.send(self._ver, self._lkey, self._rkey, self._lport, self._rport, data)
        return len(memoryview(data))

    def unreachable(self, code: int = 3) -> None:
        """ICMP destination unreachable (type 3, RFC 792; ICMPv6 type 1, RFC 4443 3.1) from
        the original destination to the client, quoting its last datagram: as much as
        keeps the error within 576 bytes (RFC 1812 4.3.2.3) or 1280 (RFC 4443 2.4 (c)).
        ``code``: ICMP 0..15 (3 = port unreachable) or ICMPv6 0..7 (4 = port)."""
        if not self._last:
            raise ValueError("no datagram from the client to quote yet")
        layer = self._ui._layer
        ttl = layer.host.settings.ttl
        if self._ver == 6:
            if not 0 <= code <= 7:
                raise ValueError("ICMPv6 destination-unreachable codes are 0..7")
            pkt = build_icmpv6_error(self._lkey, self._rkey, 1, code, self._last,
                                     hop_limit=ttl)
        else:
            if not 0 <= code <= 15:
                raise ValueError("ICMP destination-unreachable codes are 0..15")
            pkt = build_icmp(self._lkey, self._rkey, 3, code, 0, self._last[:576 - 28],
                             ttl=ttl)
        layer.host._udp_out([pkt])
        layer.host._udp_count("udp_flow_unreachables_out")

    def close(self) -> None:
        if not self.closed:
            self._ui._layer.close_flow(self)

    def __repr__(self) -> str:
        return (f"<UdpFlow {self.remote_address} -> {self.local_address}"
                f"{' closed' if self.closed else ''}>")


class UdpInterceptor:
    """UDP to non-own addresses inside ``prefixes`` (``Host.intercept_udp``): each 4-tuple
    becomes a :class:`UdpFlow` on its first datagram."""

    def __init__(self, layer: "UdpLayer", prefixes: Iterable[str], idle_timeout: float,
                 max_flows: int) -> None:
        if isinstance(prefixes, str):
            prefixes = [prefixes]
        # The same prefixes, and the same errors, as TCP's Host.intercept (in C).
        nets = PrefixSet(prefixes)
        if not len(nets):
            raise ValueError("intercept_udp needs at least one prefix")
        if not idle_timeout > 0:
            raise ValueError("idle_timeout must be > 0 s")
        if max_flows < 0:
            raise ValueError("max_flows must be >= 0")
        self._layer = layer
        self._nets = nets
        self.prefixes = nets.prefixes
        self.idle_timeout = float(idle_timeout)
        self.max_flows = int(max_flows)
        self.flows = 0
        self._new: Deque[UdpFlow] = deque()
        self.closed = False

    def accept(self) -> Optional[UdpFlow]:
        """The next new flow, or None."""
        while self._new:
            flow = self._new.popleft()
            if not flow.closed:
                return flow
        return None

    def close(self) -> None:
        """Stop intercepting (flows already made live on)."""
        if not self.closed:
            self.closed = True
            self._layer.interceptors.remove(self)

    def __repr__(self) -> str:
        return f"<UdpInterceptor {list(self.prefixes)} flows={self.flows}>"


class UdpLayer:
    """The host's UDP: one per Host (``host._udp``)."""

    def __init__(self, host: Any) -> None:
        self.host = host
        s = host.settings
        self.first4: Optional[int] = None
        self.first6: Optional[bytes] = None
        self.own: set = set()
        for text in host.addresses:
            ver, key = _addr_key(text)
            self.own.add(key)
            if ver == 4 and self.first4 is None:
                self.first4 = key
            if ver == 6 and self.first6 is None:
                self.first6 = key
        self.ports: Dict[int, UdpEndpoint] = {}
        self.interceptors: List[UdpInterceptor] = []
        self.flows: Dict[Tuple[_Key, int, _Key, int], UdpFlow] = {}
        # idle expiry: a heap of (deadline, seq, flow); an entry whose flow was active
        # since is pushed again with its new deadline when it comes round. The earliest is
        # host._udp_deadline.
        self._timers: List[Tuple[float, int, UdpFlow]] = []
        self._seq = itertools.count()
        secret = s.isn_secret if s.isn_secret is not None else os.urandom(16)
        self._rng = random.Random(hashlib.blake2b(b"udp" + secret, digest_size=16).digest())
        self._ip_id = self._rng.randrange(1 << 16)
        # ICMP error token bucket (Linux icmp_global_allow)
        self._tokens = float(ICMP_BURST)
        self._tokens_at = 0.0

    # --- user side ---------------------------------------------------------------------

    def bind(self, port: int, address: Optional[str]) -> UdpEndpoint:
        local = None
        if address is not None:
            local = _addr_key(address)
            if local[1] not in self.own:
                raise OSError(errno.EADDRNOTAVAIL, f"{address} is not an address of this host")
        if port == 0:
            port = self._pick_port()
        elif not 0 < port < 65536:
            raise ValueError("port must be 0..65535")
        elif port in self.ports:
            raise OSError(errno.EADDRINUSE, f"UDP port {port} is in use")
        ep = UdpEndpoint(self, port, local)
        self.ports[port] = ep
        return ep

    def _pick_port(self) -> int:
        """RFC 6056 3.3.1 (Algorithm 1, as Linux's udp_lib_get_port): a random start in the
        ephemeral range, then the next free port."""
        lo, hi = self.host.settings.ephemeral_ports
        span = hi - lo + 1
        start = self._rng.randrange(span)
        for i in range(span):
            port = lo + (start + i) % span
            if port not in self.ports:
                return port
        raise OSError(errno.EADDRINUSE, "no ephemeral UDP port free")

    def unbind(self, ep: UdpEndpoint) -> None:
        if self.ports.get(ep.port) is ep:
            del self.ports[ep.port]

    def intercept(self, prefixes: Iterable[str], idle_timeout: Optional[float],
                  max_flows: Optional[int]) -> UdpInterceptor:
        s = self.host.settings
        ui = UdpInterceptor(self, prefixes,
                            s.udp_idle_timeout if idle_timeout is None else idle_timeout,
                            s.max_udp_flows if max_flows is None else max_flows)
        self.interceptors.append(ui)
        return ui

    def source_for(self, ver: int, local: Optional[Tuple[int, _Key]]) -> _Key:
        if local is not None:
            if local[0] != ver:
                raise OSError(errno.EAFNOSUPPORT, "endpoint bound to the other family")
            return local[1]
        src = self.first4 if ver == 4 else self.first6
        if src is None:
            raise OSError(errno.EAFNOSUPPORT, f"the host has no IPv{ver} address")
        return src

    def send(self, ver: int, src: _Key, dst: _Key, sport: int, dport: int, data: Any) -> None:
        s = self.host.settings
        if ver == 6:
            ident = self._rng.getrandbits(32)      # RFC 7739: unpredictable
        else:
            self._ip_id = (self._ip_id + 1) & 0xFFFF
            ident = self._ip_id
        pkts = build_udp_fragments(src, dst, sport, dport, data, mtu=s.mtu, ident=ident,
                                   ttl=s.ttl)
        self.host._udp_out(pkts)
        self.host._udp_count("udp_datagrams_out")

    # --- input --------------------------------------------------------------------------

    def input(self, pk: Packet, now: float, ours: bool) -> None:
        """One valid UDP datagram (the hook in Host.input_slow)."""
        host = self.host
        ver, skey, dkey = _pk_keys(pk)
        sport, dport = pk.sport, pk.dport
        if ours:
            ep = self.ports.get(dport)
            if (ep is not None and (ep._local is None or ep._local[1] == dkey)
                    and (ep._peer is None or ep._peer == (ver, skey, sport))):
                host._udp_count("udp_datagrams_in")
                self._enqueue(ep, ep._q, (pk.payload, _name(ver, skey, sport)))
                return
            # RFC 1122 4.1.3.1: no one listens - port unreachable (Linux: NoPorts)
            host._udp_count("udp_no_port")
            self._port_unreachable(pk, ver, now)
            return
        key = (dkey, dport, skey, sport)
        flow = self.flows.get(key)
        if flow is None:
            for ui in self.interceptors:
                if ui._nets.contains_key(ver, dkey):
                    break
            else:
                host._udp_count("drop_not_for_us")
                return
            if ui.flows >= ui.max_flows:
                host._udp_count("drop_udp_flow_limit")
                return
            flow = UdpFlow(ui, ver, dkey, dport, skey, sport, now)
            self.flows[key] = flow
            ui.flows += 1
            ui._new.append(flow)
            host._udp_ready(ui)
            host._udp_count("udp_flows_opened")
            self._arm(flow, now + ui.idle_timeout)
        host._udp_count("udp_datagrams_in")
        flow.last_active = now
        flow._last = pk.raw
        self._enqueue(flow, flow._q, pk.payload)

    def _enqueue(self, obj: Any, q: _Queue, item: Any) -> None:
        data = item[0] if isinstance(item, tuple) else item
        if q.nbytes + len(data) > self.host.settings.udp_rcvbuf:
            self.host._udp_count("udp_rcvbuf_errors")     # Linux: RcvbufErrors
            return
        q.items.append(item)
        q.nbytes += len(data)
        self.host._udp_ready(obj)

    def _port_unreachable(self, pk: Packet, ver: int, now: float) -> None:
        rate = self.host.settings.icmp_error_rate
        if rate <= 0:
            return
        # Linux icmp_global_allow: a token bucket of `rate` per second, ICMP_BURST deep.
        self._tokens = min(float(ICMP_BURST), self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1.0:
            self.host._udp_count("icmp_errors_rate_limited")
            return
        self._tokens -= 1.0
        ttl = self.host.settings.ttl
        if ver == 6:
            pkt = build_icmpv6_error(pk.dst_bytes, pk.src_bytes, 1, 4, pk.raw, hop_limit=ttl)
        else:
            # RFC 1812 4.3.2.3 / Linux: as much of the datagram as fits in 576 bytes
            pkt = build_icmp(pk.dst_int, pk.src_int, 3, 3, 0, pk.raw[:576 - 28], ttl=ttl)
        self.host._udp_out([pkt])
        self.host._udp_count("icmp_port_unreachables_out")

    def icmp_error(self, pk: Packet, quoted: Tuple[Any, ...]) -> None:
        """An ICMP/ICMPv6 error quoting a UDP datagram we sent (``quoted``: its src, dst,
        17, sport, dport): a connected endpoint, or the intercepted flow that sent it (the
        quoted source then is the flow's original destination, which the error is sent
        to), gets the error, raised by its next call (Linux without IP_RECVERR reports it
        only there for a connected socket); others ignore it."""
        host = self.host
        if quoted[3] is None:
            host._udp_count("icmp_ignored")
            return
        ver, lkey = _addr_key(quoted[0])
        _, rkey = _addr_key(quoted[1])
        t, code = pk.icmp_type, pk.icmp_code
        if ver == 6:
            err = _ICMP6_ERRNO.get(code, errno.EHOSTUNREACH) if t == 1 else (
                errno.EMSGSIZE if t == 2 else errno.EHOSTUNREACH if t == 3 else errno.EPROTO)
        else:
            err = _ICMP4_ERRNO.get(code, errno.EHOSTUNREACH) if t == 3 else (
                errno.EHOSTUNREACH if t == 11 else errno.EPROTO)
        pmtu = (ver == 6 and t == 2) or (ver == 4 and t == 3 and code == 4)
        target: Any = None
        if lkey in self.own:
            ep = self.ports.get(quoted[3])
            if ep is not None and ep._peer == (ver, rkey, quoted[4]):
                target = ep
        elif _pk_keys(pk)[2] == lkey:
            # As Linux's __udp4_lib_err / __udp6_lib_err: the socket that sent the quoted
            # datagram, found by its 4-tuple - here the flow from the client's address.
            target = self.flows.get((lkey, quoted[3], rkey, quoted[4]))
        if target is None or pmtu:
            # Path MTU news: we fragment to our own MTU and keep no per-path state.
            host._udp_count("icmp_ignored")
            return
        target.error = OSError(err, os.strerror(err))
        host._udp_count("udp_icmp_errors")
        host._udp_ready(target)

    # --- flows and timers -----------------------------------------------------------------

    def _arm(self, flow: UdpFlow, when: float) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), flow))
        if when < self.host._udp_deadline:
            self.host._udp_deadline = when          # a C field the host's timers read

    def expire(self, now: float) -> None:
        """Close the flows idle for their interceptor's idle_timeout (from transmit)."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, flow = heapq.heappop(timers)
            if flow.closed:
                continue
            due = flow.last_active + flow._ui.idle_timeout
            if due <= now:
                self.host._udp_count("udp_flows_expired")
                self.close_flow(flow)
            else:
                heapq.heappush(timers, (due, next(self._seq), flow))
        while timers and timers[0][2].closed:
            heapq.heappop(timers)
        self.host._udp_deadline = timers[0][0] if timers else float("inf")

    def close_flow(self, flow: UdpFlow) -> None:
        flow.closed = True
        flow._q.items.clear()
        flow._q.nbytes = 0
        key = (flow._lkey, flow._lport, flow._rkey, flow._rport)
        if self.flows.get(key) is flow:
            del self.flows[key]
            flow._ui.flows -= 1
        self.host._udp_ready(flow)
