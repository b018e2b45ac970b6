# cython: language_level=3, boundscheck=True, wraparound=True, cdivision=False
"""The sans-IO host: its IPv4 and IPv6 addresses, TCP connections, listeners, ICMP and
ICMPv6, and timers.

Driven by three calls and nothing else: :meth:`Host.receive` (a batch of IP packets and
the time), :meth:`Host.transmit` (the packets to send now) and :meth:`Host.poll_at` (when the
next timer is due). No clock, socket, thread or file descriptor is touched below this API.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import weakref
from heapq import heappop, heappush
import itertools
from collections import Counter, deque
from typing import Any, Deque, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from fasttcp.host.settings import Settings
from libc.math cimport floor
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.string cimport memcmp, memcpy
from fasttcp.tcp._isn cimport IsnGenerator
from fasttcp.wire._wire cimport wr16, wr32
from fasttcp.tcp import _fastpath
from fasttcp.tcp._cookies import OPT_MASK, SynCookies, encode_options
from fasttcp.tcp.congestion import resolve
from fasttcp.tcp._timewait cimport TimeWait
from fasttcp.tcp.connection cimport Connection
from fasttcp.tcp.tcb cimport S_CLOSED, S_SYN_RECEIVED, S_TIME_WAIT
from fasttcp.tcp.host_services import COUNT_NAMES
from fasttcp.wire._wire cimport (DROP_REASON_COUNT, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP,
                                 IPTOS_ECN_MASK, Packet, TH_ACK as ACK,
                                 TH_CWR as CWR, TH_ECE as ECE, TH_FIN as FIN, TH_RST as RST,
                                 TH_SYN as SYN)
from fasttcp.wire.types import DropReason
from fasttcp.tcp.states import State

# States as module constants: an Enum member lookup costs ~100 ns on the slow path.
CLOSED = State.CLOSED
_STATES = tuple(State)                                            # by state number
_STATE_COUNTERS = ["state_" + s.name.lower() for s in State]     # by state number
_DROP_COUNTER_NAMES = ["drop_" + DropReason(i).name.lower() for i in range(DROP_REASON_COUNT)]
from fasttcp.host._frag import FragmentReassembler
from fasttcp.host._prefix cimport PrefixSet
from fasttcp.tcp.host_services cimport (
    COUNT_INTERCEPT_ACCEPTED, COUNT_INTERCEPT_DROPPED, COUNT_INTERCEPT_ECHO_REPLIES,
    COUNT_INTERCEPT_PENDING, COUNT_INTERCEPT_PENDING_EXPIRED, COUNT_INTERCEPT_PENDING_OVERFLOW,
    COUNT_INTERCEPT_PENDING_RESET, COUNT_INTERCEPT_REFUSED, COUNT_INTERCEPT_SYN_ABSORBED,
    COUNT_INTERCEPTED_PACKETS)
from fasttcp.host.udp import UdpLayer
from fasttcp.wire import (MalformedPacket, SegmentBatch, TcpOptions, build_icmp_echo,
                          build_icmpv6_echo, build_tcp, bytes_to_ip6, int_to_ip, ip6_to_bytes,
                          ip_to_int, parse)

COMPILED = True
MASK = 0xFFFFFFFF
# Connection lifecycle events at DEBUG (state changes, retransmissions, timeouts, drops
# with their reason); see Host.trace_event.
log = logging.getLogger("fasttcp.tcp")
cdef int _DEBUG = logging.DEBUG
cdef double _INF = float("inf")
# The logger's own cache of isEnabledFor answers by level (logging clears it whenever a
# level, handler or disable setting changes), read as a C dict by _debug_on().
cdef object _log_cache = getattr(log, "_cache", None)
if not isinstance(_log_cache, dict):
    _log_cache = None                           # another logging: always ask the logger


cdef bint _debug_on() except -1:
    """log.isEnabledFor(DEBUG), without a Python call when the logger's cache knows: a
    host asks on every receive/transmit (Host._set_tracing)."""
    if _log_cache is not None:
        v = (<dict>_log_cache).get(_DEBUG)
        if v is False:
            return False                        # isEnabledFor is False too (even disabled)
        if v is True and not log.disabled:
            return True
    return log.isEnabledFor(_DEBUG)
# Buffers of closed connections kept for new ones (per host, per kind).
POOL_MAX = 64


def _label(Connection conn):
    """``10.0.0.1:49153>10.0.0.2:80``: a connection in log lines."""
    lip, lport = conn.local_address[:2]
    rip, rport = conn.remote_address[:2]
    return f"{lip}:{lport}>{rip}:{rport}"


def _host_addresses(address: Any) -> List[Any]:
    """The host's addresses as ipaddress objects, validated: one clear line of
    ValueError for anything a host cannot have as its own address."""
    items = [address] if isinstance(address, str) else list(address)
    if not items:
        raise ValueError("a Host needs at least one address")
    out = []
    seen = set()
    for a in items:
        if not isinstance(a, str):
            raise ValueError(f"an address is text, got {a!r}")
        try:
            ip = ipaddress.ip_address(a)
        except ValueError:
            raise ValueError(f"not an IPv4 or IPv6 address: {a!r}") from None
        if ip.is_unspecified:
            raise ValueError(f"{a} is the unspecified address, not a host address")
        if ip.is_multicast:
            raise ValueError(f"{a} is a multicast address, not a host address")
        if ip.version == 4 and (ip == ipaddress.IPv4Address("255.255.255.255")
                                or int(ip) >> 28 == 0xF):
            # RFC 1122 3.2.1.3: broadcast and class E are no host's address (the parser
            # drops them as sources).
            raise ValueError(f"{a} is a broadcast or reserved (class E) address")
        if ip.version == 6:
            if ip.ipv4_mapped is not None:
                raise ValueError(f"{a} is an IPv4-mapped address: give {ip.ipv4_mapped} "
                                 "as an IPv4 address")
            if ip.is_link_local and not ip.scope_id:
                raise ValueError(f"{a} is link-local: it needs a scope (e.g. {a}%tun0)")
        key = (ip.version, ip.packed)
        if key in seen:
            raise ValueError(f"{a} is given twice")
        seen.add(key)
        out.append(ip)
    return out


_UNSPECIFIED6 = bytes(16)
_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


def _parse_remote(remote: Any) -> Tuple[int, Any, str, int]:
    """(version, address as a number (IPv4) or 16 bytes (IPv6), canonical text, port) of a
    connect() destination: (host, port), or for IPv6 also (host, port, flowinfo, scope_id)
    as the socket module takes it. IPv4 text takes the C parser (connect is on the path
    of connections/s)."""
    if not isinstance(remote, tuple) or len(remote) not in (2, 4):
        raise ValueError("the remote address is (host, port) or (host, port, flow, scope)")
    host, port = remote[0], remote[1]
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError("port must be 1..65535")
    if isinstance(host, str) and ":" not in host:
        if len(remote) == 4:
            raise ValueError("an IPv4 remote address is (host, port)")
        rip = ip_to_int(host)
        if rip == 0:
            raise ValueError(f"cannot connect to the unspecified address {host}")
        if rip >> 28 == 0xE:
            raise ValueError(f"cannot connect to a multicast address ({host}): TCP is unicast")
        return 4, rip, int_to_ip(rip), port
    # inet_pton / inet_ntop (C), not the ipaddress module: ~10 us less per connect.
    try:
        packed = ip6_to_bytes(host)
    except (ValueError, TypeError):
        raise ValueError(f"not an IPv4 or IPv6 address: {host!r}") from None
    if packed == _UNSPECIFIED6:
        raise ValueError(f"cannot connect to the unspecified address {host}")
    if packed[0] == 0xFF:
        raise ValueError(f"cannot connect to a multicast address ({host}): TCP is unicast")
    if packed[:12] == _MAPPED_PREFIX:
        raise ValueError(f"{host} is an IPv4-mapped address: connect to "
                         f"{int_to_ip(int.from_bytes(packed[12:], 'big'))} over IPv4")
    return 6, packed, bytes_to_ip6(packed), port


cdef object _tw_key(TimeWait rec):
    """A record's demux key (as Connection.key: the 4-tuple)."""
    if rec.ipver == 6:
        return (rec.lport, PyBytes_FromStringAndSize(<const char*>rec.rip6, 16), rec.rport,
                PyBytes_FromStringAndSize(<const char*>rec.lip6, 16))
    return (rec.lport, rec.rip, rec.rport, rec.lip)


cdef inline object _seg_key(Packet pk):
    """A received segment's demux key: (local port, remote address, remote port, local
    address), as Connection.key."""
    if pk.d.ipver == 6:
        return (pk.d.dport, pk.raw[8:24], pk.d.sport, pk.raw[24:40])
    return (pk.d.dport, pk.d.src, pk.d.sport, pk.d.dst)


class Listener:
    """A listening port: a queue of half-open connections and a backlog of accepted ones.
    ``address``: None when it listens on every address of its host, else the one."""

    def __init__(self, host: "Host", port: int, backlog: int,
                 address: Optional[str] = None) -> None:
        self.host = host
        self.port = port
        self.backlog = backlog
        self.address = address
        # The local address it takes, as the demux sees it (number or 16 bytes), or None.
        self._local: Any = None
        self.syn_queue: Set[Connection] = set()       # SYN-RECEIVED
        self.accept_queue: Deque[Connection] = deque()
        self.closed = False
        self.cookies_until = -1.0     # SYN cookies were sent recently: validate ACKs

    def accept(self) -> Optional[Connection]:
        """The next established connection, or None when none is waiting."""
        while self.accept_queue:
            conn = self.accept_queue.popleft()
            conn.listener = None
            if conn.state != CLOSED or conn.readable:
                return conn
        return None

    def close(self) -> None:
        """Stop listening; connections not yet accepted are reset."""
        if self.closed:
            return
        self.closed = True
        for conn in list(self.syn_queue) + list(self.accept_queue):
            conn.listener = None
            conn.abort()
        self.syn_queue.clear()
        self.accept_queue.clear()
        (<Host>self.host)._listeners.pop(self.port, None)

    def _established(self, conn: Connection) -> None:
        self.syn_queue.discard(conn)
        self.accept_queue.append(conn)
        (<Host>self.host)._ready.add(self)

    # An Interceptor with decide=True takes SYNs as PendingFlows (Host._pending_input).
    decide = False

    def __len__(self) -> int:
        return len(self.accept_queue)

    def __repr__(self) -> str:
        where = "" if self.address is None else (
            f"[{self.address}]" if ":" in self.address else self.address)
        return f"<Listener {where}:{self.port} pending={len(self.accept_queue)}>"


class Interceptor(Listener):
    """TCP to addresses that are not the host's own, inside ``prefixes``, any port
    (Host.intercept; docs/ARCHITECTURE.md "Interception"). A listener for those
    destinations: accept() gives the established connections, whose local_address is the
    original destination. With ``decide`` each new SYN first becomes a
    :class:`PendingFlow` (pop_pending()) that the application accepts, refuses or drops."""

    def __init__(self, host: "Host", prefixes: PrefixSet, decide: bool, backlog: int) -> None:
        super().__init__(host, 0, backlog)
        self._set = prefixes
        self.decide = decide
        self._pending: Dict[Any, PendingFlow] = {}     # 4-tuple -> flow, oldest first
        self._new: List[PendingFlow] = []              # not yet given by pop_pending()

    @property
    def prefixes(self) -> Tuple[str, ...]:
        return self._set.prefixes

    def pop_pending(self) -> List["PendingFlow"]:
        """The pending flows that arrived since the last call (decide=True), those still
        pending."""
        new, self._new = self._new, []
        return [pf for pf in new if pf.pending]

    def close(self) -> None:
        """Stop intercepting: packets to the prefixes are no longer taken (counted
        drop_not_for_us, as for any address not ours), except those of connections
        already accepted, which live on; those not yet accepted are reset (as a
        listener's) and pending flows are forgotten."""
        if self.closed:
            return
        super().close()
        for pf in list(self._pending.values()):
            pf._forget("closed")
        self._new.clear()
        icpts = (<Host>self.host)._icpts
        if self in icpts:
            icpts.remove(self)

    def __repr__(self) -> str:
        return (f"<Interceptor {', '.join(self.prefixes)} decide={self.decide} "
                f"pending={len(self._pending)} accepted={len(self.accept_queue)}>")


class PendingFlow:
    """A SYN to an intercepted destination waiting for the application's decision
    (Interceptor with decide=True): :meth:`accept`, :meth:`refuse` or :meth:`drop`.
    ``local_address`` is the original destination, ``remote_address`` the client. Holds
    the SYN (to answer it when accepted) until decided, expired or reset."""

    __slots__ = ("interceptor", "key", "local_address", "remote_address", "deadline",
                 "state", "_syn")

    def __init__(self, interceptor: Interceptor, key: Any, syn: bytes,
                 local: Tuple[Any, ...], remote: Tuple[Any, ...], deadline: float) -> None:
        self.interceptor = interceptor
        self.key = key
        self._syn = syn
        self.local_address = local
        self.remote_address = remote
        self.deadline = deadline
        #: "pending", then "accepted", "refused", "dropped", "expired", "reset" or
        #: "closed" (the interceptor closed).
        self.state = "pending"

    @property
    def pending(self) -> bool:
        return self.state == "pending"

    def _forget(self, state: str) -> None:
        self.state = state
        self._syn = None
        pend = self.interceptor._pending
        if pend.get(self.key) is self:
            del pend[self.key]

    def _check(self) -> None:
        if self.state != "pending":
            raise ConnectionError(f"the flow is no longer pending ({self.state})")

    def accept(self) -> Connection:
        """Answer the SYN: the connection is in SYN-RECEIVED, its SYN-ACK leaves at the
        next transmit(), and it comes out of the interceptor's accept() once established.
        Raises ConnectionError when the flow is no longer pending (expired, reset by the
        client, decided) and OSError when max_connections are open."""
        cdef Host host = <Host>self.interceptor.host
        self._check()
        conn = host._intercept_accept(self)
        self._forget("accepted")
        host.counts[<int>COUNT_INTERCEPT_ACCEPTED] += 1
        return conn

    def refuse(self) -> None:
        """Reset the client as a closed port does (RFC 9293 3.10.7.1: <SEQ=0>
        <ACK=SEG.SEQ+1><CTL=RST,ACK>): its connect() fails with ECONNREFUSED."""
        cdef Host host = <Host>self.interceptor.host
        self._check()
        host._reset_for(parse(self._syn, verify_checksums=False), SYN)
        self._forget("refused")
        host.counts[<int>COUNT_INTERCEPT_REFUSED] += 1

    def drop(self) -> None:
        """Forget the SYN silently: the client's SYN retransmission comes back as a new
        pending flow."""
        self._check()
        self._forget("dropped")
        (<Host>self.interceptor.host).counts[<int>COUNT_INTERCEPT_DROPPED] += 1

    def __repr__(self) -> str:
        return f"<PendingFlow {self.remote_address} > {self.local_address} {self.state}>"


cdef class Host:
    """A user-space TCP/IP host with one or more IPv4 and IPv6 addresses; see the module
    docstring."""

    def __init__(self, address: Union[str, Sequence[str]], **settings: Any) -> None:
        ips = _host_addresses(address)
        self.settings = Settings.from_kwargs(**settings)
        self.addresses = tuple(str(ip) for ip in ips)
        self.address = self.addresses[0]
        v4 = [int(ip) for ip in ips if ip.version == 4]
        v6 = [ip.packed for ip in ips if ip.version == 6]
        self._text = {}
        for ip in ips:
            self._text[int(ip) if ip.version == 4 else ip.packed] = str(ip)
        self._own = {k: k for k in self._text}
        self._set4 = frozenset(v4)
        self._set6 = frozenset(v6)
        self._n4 = len(v4)
        self._n6 = len(v6)
        self._addr4 = v4[0] if v4 else 0
        self._first4 = v4[0] if v4 else None
        self._first6 = v6[0] if v6 else None
        #: The first IPv4 address as a number (0 when the host has none).
        self.address_int = self._addr4
        self._conns: Dict[Tuple[Any, ...], Connection] = {}
        self._listeners: Dict[int, Listener] = {}
        self._tw: Dict[Tuple[Any, ...], TimeWait] = {}
        self._tw_fifo: Deque[TimeWait] = deque()
        self._isn = IsnGenerator(self.settings.isn_secret)
        self._cookies = SynCookies(self._isn)
        s = self.settings
        self._frags = FragmentReassembler(s.frag_max_bytes, s.frag_max_datagrams, s.frag_timeout)
        self._batch = SegmentBatch(256)
        # Timers: a heap of (deadline, seq); _timer_conns maps the seq of each live entry to
        # its connection and _armed a connection to its (deadline, seq). Superseded entries
        # stay in the heap but hold no reference: a closed connection is freed at once,
        # not when an old RTO or keepalive deadline comes round.
        self._timers: List[Tuple[float, int]] = []
        self._timer_seq = itertools.count()
        self._timer_conns: Dict[int, Connection] = {}
        self._armed: Dict[Connection, Tuple[float, int]] = {}
        self._dirty: Dict[Connection, None] = {}       # ordered set: needs output
        self._ready: Set[Any] = set()                  # user-visible changes since last poll
        self._ready_closed = weakref.WeakSet()         # ... connections that closed
        self._out: List[bytes] = []                    # packets emitted outside _output
        self._stats: Counter = Counter()
        self._ring_pool: List[SendRing] = []
        self._challenge_second = -1e300               # no challenge-ACK budget drawn yet
        self._time_wait_count = 0
        self._reasm_pool: List[Reassembler] = []
        self.ooo_budget = OooBudget(s.ooo_budget)
        #: Reassemblers holding data by reference since receive(defer_copy=True).
        self._deferred: list = []
        #: transmit() may return SplitPackets (TSO super-segments as headers + views of
        #: the send ring) for a link that writes them at once with scatter I/O (a driver
        #: sets this for a link with ``takes_split_packets``). They are valid only until
        #: the connection's send buffer moves on.
        self.split_tx = False
        self._icpts = []                   # Interceptors (Host.intercept)
        self._pending_fifo = deque()       # their PendingFlows by deadline (one timeout)
        self._init_port_table()
        self._traces = weakref.WeakKeyDictionary()
        self._trace_refs = self._traces.data
        self.tracing = False
        self.now = 0.0
        self._raise_internal = False   # tests flip this to see internal errors
        self._udp_deadline = _INF
        self._udp = UdpLayer(self)     # UDP (issue 15): fasttcp/host/udp.py

    def advance_clock(self, double now) -> None:
        """Move the host's clock (:attr:`now`, what :meth:`connect` reads when given no
        time) forward to ``now``; never backwards. For drivers that open connections
        between receive/transmit calls."""
        if now > self.now:
            self.now = now

    # ===================================================================================
    # The sans-IO driver API
    # ===================================================================================

    def receive(self, packets: Iterable[Any], now: float, parse_flags: int = 0,
                defer_copy: bool = False) -> None:
        """Ingest a batch of IP packets (IPv4 or IPv6, by their version nibble) that
        arrived at time ``now`` (seconds).

        ``parse_flags`` (a link's ``parse_flags``): 1 when the link already verified the
        TCP checksums (TUN offload: partial checksums from the local kernel), 2 for the
        IPv4 header checksums.

        By default every byte the host keeps is copied before this returns. With
        ``defer_copy`` in-order data stays in the packets until a reader takes it or
        :meth:`settle` copies what is left: one copy fewer for data read at once (the
        driver dispatches readiness before it settles). The caller must then keep the
        packets unchanged, and call :meth:`settle` before it reuses their buffers. (The
        next receive() settles what the previous one left, as a safety net: too late if
        those buffers were already reused.)"""
        if self._deferred:
            self.settle()
        self.now = now
        self._set_tracing()
        if not isinstance(packets, list):
            packets = list(packets)
        # Parse the batch and run header prediction in C; the rest comes back through
        # input_slow one packet at a time.
        _fastpath.receive_batch(self, self._batch, packets, now, parse_flags, self._conns,
                                self._deferred if defer_copy else None)

    def settle(self) -> None:
        """Copy the data still held in the packets of ``receive(..., defer_copy=True)``
        into the connections' buffers. Cheap when there is none."""
        deferred = self._deferred
        if deferred:
            for reasm in deferred:
                reasm.settle()
            deferred.clear()

    cdef int input_fragment(self, object packet, double now) except -1:
        """An IPv4 or IPv6 fragment: reassemble (RFC 791, RFC 8200 4.5, bounded; overlaps
        discard the datagram, RFC 5722) and process the datagram once complete."""
        self._stats["fragments_in"] += 1
        whole = self._frags.add(bytes(packet), now)
        if whole is None:
            return 0
        self._stats["datagrams_reassembled"] += 1
        try:
            pk = parse(whole)
        except MalformedPacket as e:
            self._stats["drop_" + e.reason.name.lower()] += 1
            return 0
        self.input_slow(pk, now)
        return 0

    cdef bint _is_ours(self, Packet pk) except -1:
        """Whether the packet's destination is one of the host's addresses."""
        if pk.d.ipver == 6:
            if self._n6 == 1:                       # no slice: compare in place
                return memcmp(PyBytes_AS_STRING(pk.raw) + 24,
                              PyBytes_AS_STRING(<bytes>self._first6), 16) == 0
            return pk.raw[24:40] in self._set6
        if self._n4 == 1:
            return pk.d.dst == self._addr4
        return pk.d.dst in self._set4

    cdef int input_slow(self, Packet pk, double now) except -1:
        stats = self._stats
        if pk.d.proto == 17:                       # UDP (issue 15): fasttcp/host/udp.py
            try:
                self._udp.input(pk, now, self._is_ours(pk))
            except Exception:                      # pragma: no cover - must not happen
                stats["drop_internal_error"] += 1
                if self._raise_internal:
                    raise
            return 0
        if not self._is_ours(pk) and not self._intercepted(pk):
            stats["drop_not_for_us"] += 1
            return 0
        try:
            if pk.is_tcp:
                self._tcp_input(pk, now)
            elif pk.is_icmp:
                if pk.d.ipver == 6:
                    self._icmp6_input(pk, now)
                else:
                    self._icmp_input(pk, now)
            else:
                stats["drop_unsupported_protocol"] += 1
        except Exception:                          # pragma: no cover - must not happen
            # Nothing a peer sends may raise out of receive(): count it and go on.
            stats["drop_internal_error"] += 1
            if self._raise_internal:
                raise
        return 0

    cdef int count_batch(self, uint64_t packets, uint64_t fast,
                         const uint64_t* drops) except -1:
        cdef Py_ssize_t i
        self.packets_in += packets
        self.fast_segments_in += fast
        for i in range(DROP_REASON_COUNT):
            if drops[i]:
                self._stats[_DROP_COUNTER_NAMES[i]] += drops[i]
                if self.tracing and _debug_on():
                    log.debug("batch: %d dropped (%s)", drops[i], _DROP_COUNTER_NAMES[i])
        return 0

    def transmit(self, double now) -> List[Any]:
        """Run due timers and return every packet to send now: bytes, or with
        ``split_tx`` also :class:`fasttcp.wire.SplitPacket` s (bytes-like)."""
        cdef Connection conn
        cdef list timers = self._timers
        cdef list out
        self.now = now
        self._set_tracing()
        if self._tw_fifo:
            self._tw_expire(now)
        if self._pending_fifo:
            self._pending_expire(now)
        if self._udp_deadline <= now:
            self._udp.expire(now)                      # idle UDP flows (issue 15)
        if not self._dirty and not self._out and (not timers or timers[0][0] > now):
            return []                                  # nothing due: the common idle call
        while timers and timers[0][0] <= now:
            obj = self._timer_conns.pop(heappop(timers)[1], None)
            if obj is None:
                continue                               # superseded
            conn = <Connection>obj
            del self._armed[conn]
            if conn.st != S_CLOSED:
                conn.on_timer(now)
                self._dirty[conn] = None
        out = self._out
        self._out = []
        while self._dirty:
            dirty = list(self._dirty)
            self._dirty.clear()
            for obj in dirty:
                conn = <Connection>obj
                if conn.st != S_CLOSED:
                    conn._output(now, out)
                self._arm(conn)
        self.packets_out += len(out)
        return out

    def poll_at(self) -> Optional[float]:
        """When :meth:`transmit` must next be called for timers; None when no timer runs.
        Returns the current time when output is pending."""
        if self._dirty or self._out:
            return self.now
        tw = self._tw_head() if self._tw_fifo else -1.0
        if self._pending_fifo:
            pend = self._pending_head()
            if pend >= 0 and (tw < 0 or pend < tw):
                tw = pend
        if self._udp_deadline != _INF and (tw < 0 or self._udp_deadline < tw):
            tw = self._udp_deadline                    # idle UDP flows (issue 15)
        timers = self._timers
        while timers:
            when, seq = timers[0]
            if seq in self._timer_conns:
                return when if tw < 0 or when < tw else tw
            heappop(timers)
        return None if tw < 0 else tw

    # ===================================================================================
    # User API
    # ===================================================================================

    def listen(self, port: int, backlog: Optional[int] = None,
               address: Optional[str] = None) -> Listener:
        """Accept connections to ``port`` on every address of the host, or only on
        ``address`` (one of :attr:`addresses`). One listener per port."""
        if not 0 < port < 65536:
            raise ValueError("port must be 1..65535")
        local = None
        if address is not None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"not an IPv4 or IPv6 address: {address!r}") from None
            local = int(ip) if ip.version == 4 else ip.packed
            if local not in self._text:
                raise ValueError(f"{address} is not an address of this host "
                                 f"({', '.join(self.addresses)})")
            address = self._text[local]
        if port in self._listeners:
            raise OSError(98, f"port {port} is already listening")
        lst = Listener(self, port, self.settings.backlog if backlog is None else backlog,
                       address)
        lst._local = local
        self._listeners[port] = lst
        return lst

    def connect(self, remote: Tuple[str, int], local_port: Optional[int] = None,
                now: Optional[float] = None) -> Connection:
        """Open a connection (active open); the SYN leaves at the next :meth:`transmit`.
        ``now`` (default: the time of the last receive/transmit) feeds the ISN clock."""
        if now is not None:
            self.now = now
        version, rip, rtext, rport = _parse_remote(remote)
        # The source: the host's first address of the destination's family.
        lip = self._first6 if version == 6 else self._first4
        if lip is None:
            raise ValueError(f"this host has no IPv{version} address to connect to "
                             f"{rtext} from ({', '.join(self.addresses)})")
        if len(self._conns) + len(self._tw) >= self.settings.max_connections:
            raise OSError(105, "too many connections (max_connections)")
        lport = self._pick_port(rip, rport, lip) if local_port is None else local_port
        key = (lport, rip, rport, lip)
        if key in self._conns or key in self._tw:
            raise OSError(98, "address already in use for this 4-tuple")
        if version == 6:
            iss = self._isn.isn6(lip, lport, rip, rport, self.now)
            conn = Connection(self, (self._text[lip], lport, 0, 0), (rtext, rport, 0, 0),
                              rip, iss, self.now, False, lip)
        else:
            iss = self._isn.isn(lip, lport, rip, rport, self.now)
            conn = Connection(self, (self._text[lip], lport), (rtext, rport), rip, iss,
                              self.now, False, lip)
        self._conns[key] = conn
        self._set_tracing()
        conn._open_active(self.now)
        return conn

    # --- UDP (issue 15): the layer is fasttcp/host/udp.py --------------------------------

    def udp_bind(self, port: int = 0, address: Optional[str] = None) -> Any:
        """A UDP endpoint on ``port`` (0: an ephemeral one, RFC 6056) of every address, or
        of ``address`` only; OSError EADDRINUSE when the port is taken."""
        return self._udp.bind(port, address)

    def intercept_udp(self, prefixes: Any, *, idle_timeout: Optional[float] = None,
                      max_flows: Optional[int] = None) -> Any:
        """Take UDP to addresses not ours inside ``prefixes`` as :class:`UdpFlow` s, one
        per 4-tuple (see :class:`fasttcp.host.udp.UdpInterceptor`)."""
        ui = self._udp.intercept(prefixes, idle_timeout, max_flows)
        # ICMP errors to non-own addresses now pass _intercepted: one quoting a datagram
        # of a flow reaches it (UdpLayer.icmp_error), as TCP's reach their connection.
        self._icpt_ever = True
        return ui

    def _udp_out(self, list packets) -> None:
        self._out.extend(packets)

    def _udp_ready(self, obj) -> None:
        self._ready.add(obj)

    def _udp_count(self, str name, int n=1) -> None:
        self._stats[name] += n

    def connections(self) -> List[Any]:
        """The connections, and a read-only :class:`fasttcp.tcp.TimeWait` (state,
        addresses, info()) for each closed connection the host keeps in TIME-WAIT as a
        record."""
        return list(self._conns.values()) + list(self._tw.values())

    def stats(self) -> Dict[str, int]:
        """Counters: packets in/out, segments by kind, retransmits, drops by reason."""
        d = dict(self._stats)
        # The counters the per-packet paths keep in C (see host.pxd).
        for name, v in (("packets_in", self.packets_in), ("packets_out", self.packets_out),
                        ("segments_in", self.segments_in + self.fast_segments_in),
                        ("fast_path_segments", self.fast_segments_in)):
            if v:
                d[name] = d.get(name, 0) + v
        cdef int i
        for i in range(<int>COUNT_KINDS):
            if self.counts[i]:
                name = COUNT_NAMES[i]
                d[name] = d.get(name, 0) + self.counts[i]
        for st in range(len(_STATE_COUNTERS)):
            if self.state_entries[st]:
                d[_STATE_COUNTERS[st]] = self.state_entries[st]
        d["connections"] = len(self._conns) + len(self._tw)
        d["time_wait"] = self._time_wait_count
        d["orphans"] = self._orphans
        # Out-of-order bytes held now by all connections, and dropped to stay within
        # settings.ooo_budget (RFC 2018 section 8 reneging).
        d["ooo_bytes"] = self.ooo_budget.held
        d["ooo_pruned_bytes"] = self.ooo_budget.pruned_bytes
        # Buffers kept for new connections (at most POOL_MAX of each kind).
        d["pooled_send_rings"] = len(self._ring_pool)
        d["pooled_reassemblers"] = len(self._reasm_pool)
        for k, v in self._frags.stats().items():
            if v:
                d["reasm_" + k] = v
        d["listeners"] = len(self._listeners)
        return d

    def pop_ready(self) -> Set[Any]:
        """Connections and listeners with user-visible changes since the last call
        (data to read, room to write, state changes, connections to accept)."""
        ready, self._ready = self._ready, set()
        if self._closed_pending:
            ready.update(self._ready_closed)
            self._ready_closed.clear()
            self._closed_pending = 0
        return ready

    # ===================================================================================
    # Interception (docs/ARCHITECTURE.md "Interception")
    # ===================================================================================

    def intercept(self, prefixes: Any, *, decide: bool = False,
                  backlog: Optional[int] = None) -> Interceptor:
        """Take TCP to any address and port inside ``prefixes`` (IPv4 and IPv6 text,
        ``"0.0.0.0/0"`` / ``"::/0"`` for all) that is not one of the host's own addresses,
        as if that address were ours. ``decide=False``: every SYN is accepted as by a
        listener (SYN queue, SYN cookies, ``backlog`` (default settings.backlog),
        max_connections); ``decide=True``: each new SYN becomes a PendingFlow
        (Interceptor.pop_pending) and at most ``backlog`` (default settings.syn_backlog)
        are pending. Interceptors are asked in the order they were made."""
        if isinstance(prefixes, str):
            prefixes = [prefixes]
        pset = PrefixSet(prefixes)
        if not len(pset):
            raise ValueError("intercept needs at least one prefix")
        if backlog is None:
            backlog = self.settings.syn_backlog if decide else self.settings.backlog
        elif not isinstance(backlog, int) or backlog < (1 if decide else 0):
            raise ValueError(f"backlog must be an int >= {1 if decide else 0}, got {backlog!r}")
        icpt = Interceptor(self, pset, bool(decide), backlog)
        self._icpts.append(icpt)
        self._icpt_ever = True
        return icpt

    cdef object _interceptor_for(self, Packet pk):
        """The (first) interceptor whose prefixes hold the packet's destination, or None."""
        cdef PrefixSet pset
        cdef const unsigned char* dst6
        for icpt in self._icpts:
            pset = <PrefixSet>icpt._set
            if pk.d.ipver == 6:
                dst6 = <const unsigned char*>PyBytes_AS_STRING(pk.raw) + 24
                if pset.contains6(dst6):
                    return icpt
            elif pset.contains4(pk.d.dst):
                return icpt
        return None

    cdef bint _intercepted(self, Packet pk) except -1:
        """Whether a packet to an address that is not ours is taken as if it were: TCP
        or ICMP to an intercepted destination, TCP of an intercepted connection (which
        outlives its interceptor), ICMP errors (they reach only the connection or UDP flow
        they quote, by its 4-tuple)."""
        cdef int proto = pk.d.proto
        if not self._icpt_ever:
            return False
        if proto == IPPROTO_TCP:
            if self._interceptor_for(pk) is None:
                key = _seg_key(pk)
                if key not in self._conns and key not in self._tw:
                    return False
        elif proto == (IPPROTO_ICMPV6 if pk.d.ipver == 6 else IPPROTO_ICMP):
            t = pk.d.icmp_type
            if t == (128 if pk.d.ipver == 6 else 8):
                if not self.settings.intercept_echo or self._interceptor_for(pk) is None:
                    return False
            elif not (t < 128 if pk.d.ipver == 6 else t in (3, 11, 12)):
                return False                    # only echo and errors (RFC 4443 2.1)
        else:
            return False
        self.counts[<int>COUNT_INTERCEPTED_PACKETS] += 1
        return True

    cdef _pending_input(self, icpt, Packet pk, int flags, double now):
        """A segment with no connection for an interceptor with decide=True: a new SYN
        becomes a PendingFlow, a retransmitted one is absorbed, an RST forgets its flow;
        anything else is answered as by a closed port (RFC 9293 3.10.7.1)."""
        key = _seg_key(pk)
        pf = icpt._pending.get(key)
        if flags & RST:
            if pf is not None:
                pf._forget("reset")
                self.counts[<int>COUNT_INTERCEPT_PENDING_RESET] += 1
                self._ready.add(icpt)
            return
        if flags & (SYN | ACK) == SYN:
            if flags & FIN:
                self._stats["drop_syn_fin"] += 1
                return
            if pf is not None:
                self.counts[<int>COUNT_INTERCEPT_SYN_ABSORBED] += 1
                return
            if len(icpt._pending) >= icpt.backlog:
                self.counts[<int>COUNT_INTERCEPT_PENDING_OVERFLOW] += 1
                return                              # the client retransmits its SYN
            if pk.d.ipver == 6:
                local = (bytes_to_ip6(pk.raw[24:40]), pk.d.dport, 0, 0)
                remote = (bytes_to_ip6(pk.raw[8:24]), pk.d.sport, 0, 0)
            else:
                local = (int_to_ip(pk.d.dst), pk.d.dport)
                remote = (int_to_ip(pk.d.src), pk.d.sport)
            pf = PendingFlow(icpt, key, bytes(pk.raw), local, remote,
                             now + self.settings.intercept_pending_timeout)
            icpt._pending[key] = pf
            icpt._new.append(pf)
            self._pending_fifo.append(pf)
            self._ready.add(icpt)
            self.counts[<int>COUNT_INTERCEPT_PENDING] += 1
            return
        self._stats["segments_no_connection"] += 1
        self._reset_for(pk, flags)

    def _intercept_accept(self, pf: PendingFlow) -> Connection:
        """PendingFlow.accept(): the connection a listener makes for the SYN
        (_listen_input), in SYN-RECEIVED, its SYN-ACK due."""
        cdef Connection conn
        # (Validated when it arrived: a TUN offload's partial checksum is no longer checked.)
        cdef Packet pk = parse(pf._syn, verify_checksums=False)
        cdef int64_t iss
        if len(self._conns) + len(self._tw) >= self.settings.max_connections:
            self._stats["drop_max_connections"] += 1
            raise OSError(105, "too many connections (max_connections)")
        now = self.now
        if pk.d.ipver == 6:
            iss = self._isn.isn6(pk.raw[24:40], pk.d.dport, pk.raw[8:24], pk.d.sport, now)
        else:
            iss = self._isn.isn(pk.d.dst, pk.d.dport, pk.d.src, pk.d.sport, now)
        conn = <Connection>self._new_conn(pk, <uint32_t>iss, now, True)
        icpt = pf.interceptor
        conn.listener = icpt
        self._conns[conn.key] = conn
        icpt.syn_queue.add(conn)
        self._set_tracing()
        conn._open_passive(pk, now)
        self._stats["passive_opens"] += 1
        return conn

    cdef double _pending_head(self):
        """The deadline of the first pending flow, or -1; drops decided ones."""
        fifo = self._pending_fifo
        while fifo:
            pf = fifo[0]
            if pf.state == "pending":
                return pf.deadline
            fifo.popleft()
        return -1.0

    cdef int _pending_expire(self, double now) except -1:
        """Forget the pending flows nobody decided within intercept_pending_timeout."""
        cdef double when
        fifo = self._pending_fifo
        while True:
            when = self._pending_head()
            if when < 0 or when > now:
                return 0
            pf = fifo.popleft()
            pf._forget("expired")
            self._ready.add(pf.interceptor)
            self.counts[<int>COUNT_INTERCEPT_PENDING_EXPIRED] += 1

    # ===================================================================================
    # Input
    # ===================================================================================

    cdef _tcp_input(self, Packet pk, double now):
        cdef int flags = pk.d.flags
        cdef int64_t iss
        key = _seg_key(pk)
        conn = self._conns.get(key)
        if conn is None and self._tw:
            rec = self._tw.get(key)
            if rec is not None:
                self._tw_input(<TimeWait>rec, pk, flags, now)
                return
        self.segments_in += 1
        if conn is not None:
            if (<Connection>conn).st == S_TIME_WAIT and flags & (SYN | ACK | RST) == SYN:
                # A new incarnation's SYN in TIME-WAIT (RFC 1122 4.2.2.13, RFC 6191): the
                # listener takes it when it is beyond the old one (Linux: TCP_TW_SYN).
                lst = self._listener_for(pk)
                if lst is not None and not lst.decide:
                    iss = (<Connection>conn).time_wait_reopen(pk)
                    if iss >= 0:
                        self._listen_input(lst, pk, flags, now, iss)
                        return
            (<Connection>conn).on_segment(pk, now)
            return
        lst = self._listener_for(pk)
        if lst is not None:
            if lst.decide:
                self._pending_input(lst, pk, flags, now)
            else:
                self._listen_input(lst, pk, flags, now)
            return
        # No connection (RFC 9293 3.10.7.1): answer with a RST unless it is one.
        self._stats["segments_no_connection"] += 1
        if self.tracing:
            self._log_drop("segments_no_connection", pk)
        if not flags & RST:
            self._reset_for(pk, flags)

    cdef _listen_input(self, lst, Packet pk, int flags, double now, int64_t iss=-1):
        """A segment for a listener; ``iss`` (when >= 0) is the ISS a SYN that reopens a
        TIME-WAIT 4-tuple must use."""
        cdef Connection conn
        stats = self._stats
        if flags & RST:
            return
        if flags & ACK:
            if not flags & SYN and lst.cookies_until >= now and self._cookie_ack(lst, pk, now):
                return
            self._reset_for(pk, flags)            # RFC 9293 3.10.7.2: <SEQ=SEG.ACK><CTL=RST>
            return
        if not flags & SYN:
            return
        if flags & FIN:
            stats["drop_syn_fin"] += 1
            return
        if len(lst.accept_queue) >= lst.backlog:
            stats["drop_listen_overflow"] += 1    # the peer retransmits its SYN
            return
        cookies = self.settings.syn_cookies
        if cookies == "always" or len(lst.syn_queue) >= self.settings.syn_backlog:
            if cookies:
                self._send_cookie(lst, pk, now)   # RFC 4987 3.6: no state for this SYN
            else:
                stats["drop_syn_queue_full"] += 1
            return
        if len(self._conns) + len(self._tw) >= self.settings.max_connections:
            stats["drop_max_connections"] += 1
            return
        if iss < 0:
            if pk.d.ipver == 6:
                iss = self._isn.isn6(pk.raw[24:40], pk.d.dport, pk.raw[8:24], pk.d.sport, now)
            else:
                iss = self._isn.isn(pk.d.dst, pk.d.dport, pk.d.src, pk.d.sport, now)
        conn = <Connection>self._new_conn(pk, <uint32_t>iss, now, True)
        conn.listener = lst
        self._conns[conn.key] = conn
        lst.syn_queue.add(conn)
        conn._open_passive(pk, now)
        stats["passive_opens"] += 1

    def _send_cookie(self, lst: Listener, Packet pk, double now) -> None:
        """Answer a SYN with a SYN cookie SYN-ACK (see fasttcp/tcp/_cookies.pyx)."""
        s = self.settings
        opts = pk.options
        peer_mss = opts.mss or 536
        our_mss = s.effective_mss
        if pk.d.ipver == 6:
            our_mss = min(our_mss, s.mtu - 60)
            lip, rip = pk.raw[24:40], pk.raw[8:24]
            cookie, _mss = self._cookies.make6(lip, pk.d.dport, rip, pk.d.sport, pk.d.seq,
                                               min(peer_mss, our_mss), now)
            offset = self._isn.ts_offset6(pk.d.dport, rip, pk.d.sport)
        else:
            lip, rip = pk.d.dst, pk.d.src
            cookie, _mss = self._cookies.make(lip, pk.d.dport, rip, pk.d.sport, pk.d.seq,
                                              min(peer_mss, our_mss), now)
            offset = self._isn.ts_offset(pk.d.dport, rip, pk.d.sport)
        reply = TcpOptions(mss=our_mss)
        wscale = s.rcv_wscale if (s.window_scaling and opts.wscale is not None) else -1
        sack = bool(s.sack and opts.sack_permitted)
        flags = SYN | ACK
        if s.timestamps and opts.timestamps is not None:
            # The options the cookie cannot hold ride in our TSval's low bits; ECN too
            # (only then, as Linux's cookie_ecn_ok), on the rules of a listener's SYN
            # (Connection._take_syn_options).
            ecn = (s.ecn != 0 and pk.d.flags & ECE and pk.d.flags & CWR
                   and (pk.d.tos & IPTOS_ECN_MASK) == 0)
            if ecn:
                flags |= ECE                       # RFC 3168 6.1.1: ECN-setup SYN-ACK
            clock = (int(now * 1000) + offset) & MASK
            tsval = (clock & ~OPT_MASK) | encode_options(wscale, sack, ecn)
            if 0 < ((tsval - clock) & MASK) < 0x80000000:
                # Never ahead of our clock, or the peer's PAWS test (RFC 7323 5.3) drops
                # what we send next: one step of the low-bit field back (as Linux does).
                tsval = (tsval - (OPT_MASK + 1)) & MASK
            reply.timestamps = (tsval, opts.timestamps[0])
            if wscale >= 0:
                reply.wscale = wscale
            reply.sack_permitted = sack
        self._out.append(build_tcp(lip, rip, pk.d.dport, pk.d.sport, cookie,
                                   (pk.d.seq + 1) & MASK, flags, min(s.rcv_buf, 65535),
                                   options=reply, ttl=s.ttl))
        lst.cookies_until = now + 2 * self._cookies.period
        self._stats["syn_cookies_sent"] += 1

    def _cookie_ack(self, lst: Listener, Packet pk, double now) -> bool:
        """An ACK that may complete a cookie handshake: validate and build the
        connection (RFC 4987 3.6). Returns False when it is no valid cookie."""
        client_isn = (pk.d.seq - 1) & MASK
        cookie = (pk.d.ack - 1) & MASK
        if pk.d.ipver == 6:
            mss = self._cookies.check6(pk.raw[24:40], pk.d.dport, pk.raw[8:24], pk.d.sport,
                                       client_isn, cookie, now)
        else:
            mss = self._cookies.check(pk.d.dst, pk.d.dport, pk.d.src, pk.d.sport, client_isn,
                                      cookie, now)
        if not mss:
            self._stats["syn_cookies_failed"] += 1
            return False
        if len(self._conns) + len(self._tw) >= self.settings.max_connections:
            self._stats["drop_max_connections"] += 1
            return True
        conn = <Connection>self._new_conn(pk, <uint32_t>cookie, now, True)
        self._conns[conn.key] = conn
        conn._open_from_cookie(pk, mss, now)
        lst._established(conn)
        self._stats["syn_cookies_validated"] += 1
        self._stats["passive_opens"] += 1
        if pk.d.payload_len or pk.d.flags & FIN:
            conn.on_segment(pk, now)              # data riding on the handshake's ACK
        return True

    cdef _reset_for(self, Packet pk, int flags):
        """A RST answering a segment that has no connection (RFC 9293 3.10.7.1)."""
        if flags & ACK:
            seq, ack, rflags = pk.d.ack, 0, RST
        else:
            seg_len = pk.d.payload_len + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
            seq, ack, rflags = 0, (pk.d.seq + seg_len) & MASK, RST | ACK
        if pk.d.ipver == 6:
            lip, rip = pk.raw[24:40], pk.raw[8:24]
        else:
            lip, rip = pk.d.dst, pk.d.src
        self._out.append(build_tcp(lip, rip, pk.d.dport, pk.d.sport, seq, ack, rflags, 0,
                                   ttl=self.settings.ttl))
        self._stats["rsts_out"] += 1

    cdef object _listener_for(self, Packet pk):
        """The listener that takes a segment to its destination port and address (an
        Interceptor for an intercepted destination)."""
        if self._icpt_ever and not self._is_ours(pk):
            return self._interceptor_for(pk)   # (never an own-address listener)
        lst = self._listeners.get(pk.d.dport)
        if lst is None or lst._local is None:
            return lst
        if lst._local == (pk.raw[24:40] if pk.d.ipver == 6 else pk.d.dst):
            return lst
        return None

    cdef object _new_conn(self, Packet pk, uint32_t iss, double now, bint passive):
        """A connection for the segment's 4-tuple (passive open or SYN cookie), with the
        address family's local and remote address conventions."""
        cdef Connection conn
        # The local address in the demux key (Connection.key) is the host's own object
        # for its own addresses: no new int/bytes per connection.
        if pk.d.ipver == 6:
            lip, rip = pk.raw[24:40], pk.raw[8:24]
            lip = self._own.get(lip, lip)
            ltext = self._text.get(lip)
            conn = Connection(self, (ltext if ltext is not None else bytes_to_ip6(lip),
                                     pk.d.dport, 0, 0),
                              (bytes_to_ip6(rip), pk.d.sport, 0, 0), rip, iss, now, passive,
                              lip)
        else:
            lip = pk.d.dst
            lip = self._own.get(lip, lip)
            ltext = self._text.get(lip)
            conn = Connection(self, (ltext if ltext is not None else int_to_ip(pk.d.dst),
                                     pk.d.dport),
                              (int_to_ip(pk.d.src), pk.d.sport), pk.d.src, iss, now, passive,
                              lip)
        return conn

    def _icmp_input(self, Packet pk, double now) -> None:
        t = pk.icmp_type
        stats = self._stats
        if t == 8 and pk.icmp_code == 0:          # echo request (RFC 792, RFC 1122 3.2.2.6)
            # The reply's source is the address the request was sent to (RFC 1122
            # 3.2.2.6): one of ours, or an intercepted one.
            if not self._is_ours(pk):
                self.counts[<int>COUNT_INTERCEPT_ECHO_REPLIES] += 1
            self._out.append(build_icmp_echo(pk.d.dst, pk.d.src, pk.icmp_id,
                                             pk.icmp_seq, pk.payload, reply=True,
                                             ttl=self.settings.ttl))
            stats["icmp_echo_replies"] += 1
            return
        if t in (3, 11, 12):
            q = pk.quoted
            if q is not None and q[2] == 17:
                self._udp.icmp_error(pk, q)        # a datagram of ours (issue 15)
                return
            if q is None or q[2] != 6:
                stats["icmp_ignored"] += 1
                return
            # (The 4-tuple lookup finds only our own connections, to our addresses or
            # intercepted ones.)
            conn = self._conns.get((q[3], ip_to_int(q[1]), q[4], ip_to_int(q[0])))
            if conn is None:
                stats["icmp_ignored"] += 1
                return
            conn.on_icmp_error(t, pk.icmp_code, pk.icmp_mtu, q[5], now)
            self._dirty[conn] = None
            return
        stats["icmp_ignored"] += 1

    def _icmp6_input(self, Packet pk, double now) -> None:
        """ICMPv6 (RFC 4443): echo requests are answered; errors quoting one of our
        segments reach its connection (Packet Too Big: path MTU, RFC 8201). Neighbour
        discovery has no place on a layer-3 TUN (issue 14) and is ignored, as are the
        rest."""
        t = pk.d.icmp_type
        stats = self._stats
        if t == 128 and pk.d.icmp_code == 0:     # echo request (RFC 4443 4.1, 4.2)
            if not self._is_ours(pk):
                self.counts[<int>COUNT_INTERCEPT_ECHO_REPLIES] += 1
            self._out.append(build_icmpv6_echo(pk.raw[24:40], pk.raw[8:24], pk.icmp_id,
                                               pk.icmp_seq, pk.payload, reply=True,
                                               hop_limit=self.settings.ttl))
            stats["icmp_echo_replies"] += 1
            return
        if t < 128:                               # an error (RFC 4443 2.1)
            q = pk.quoted
            if q is not None and q[2] == 17:
                self._udp.icmp_error(pk, q)        # a datagram of ours (issue 15)
                return
            if q is None or q[2] != 6:
                stats["icmp_ignored"] += 1
                return
            lip = ip6_to_bytes(q[0])
            conn = self._conns.get((q[3], ip6_to_bytes(q[1]), q[4], lip))
            if conn is None:
                stats["icmp_ignored"] += 1
                return
            conn.on_icmp_error(t, pk.d.icmp_code, pk.icmp_mtu, q[5], now)
            self._dirty[conn] = None
            return
        stats["icmp_ignored"] += 1

    # ===================================================================================
    # HostServices: what connections ask of their host (fasttcp/tcp/host_services.pxd)
    # ===================================================================================

    cdef int count(self, Count what) except -1:
        self.counts[<int>what] += 1
        return 0

    # --- tracing: DEBUG logging and per-connection traces -------------------------------

    cdef int _set_tracing(self) except -1:
        # Once per receive/transmit/connect: with DEBUG off and nothing traced, an event
        # costs the connection one test of this flag.
        # (_trace_refs may still hold a dead connection's reference until the mapping
        # drops it: tracing stays on a little longer, which only costs time.)
        self.tracing = bool(self._trace_refs) or _debug_on()
        return 0

    cdef int trace_event(self, object conn, Count what) except -1:
        cdef Connection c = <Connection>conn
        name = COUNT_NAMES[<int>what]
        if log.isEnabledFor(_DEBUG):
            log.debug("%s %s: %s", _label(c), _STATES[c.st].name, name)
        if self._traces:
            self._trace(c, name, None)
        return 0

    cdef int _trace(self, Connection conn, str name, dict data) except -1:
        sink = self._traces.get(conn)
        if sink is None:
            return 0
        if data is None:
            data = {}
        data["state"] = _STATES[conn.st].name
        data["snd_una"] = conn.snd_una
        data["snd_nxt"] = conn.snd_nxt
        cc = conn.cc
        if cc is not None:
            data["cwnd"] = cc.cwnd
        line = json.dumps({"time": round((self.now - conn.created_at) * 1000.0, 6),
                           "name": "tcp:" + name, "data": data})
        if callable(sink):
            sink(line)
        else:
            sink.write(line + "\n")
        return 0

    cdef int _log_drop(self, str reason, Packet pk) except -1:
        if log.isEnabledFor(_DEBUG):
            log.debug("%s:%d>%s:%d dropped (%s)", pk.src, pk.d.sport, pk.dst, pk.d.dport,
                      reason)
        return 0

    def trace_connection(self, conn: Connection, sink: Any) -> None:
        """Write ``conn``'s events to ``sink`` as qlog-style JSON lines, one per event:
        ``{"time": ms since the connection was created, "name": "tcp:state_updated" or
        "tcp:<stats() counter>", "data": {"state", "snd_una", "snd_nxt", "cwnd", ...}}``.
        ``sink`` is a writable text file or a callable taking one line (without its
        newline); None stops tracing ``conn``. The host holds ``conn`` only weakly, and
        stops tracing it when it closes."""
        if not isinstance(conn, Connection) or (<Connection>conn).host is not self:
            raise ValueError("not a connection of this host")
        if sink is None:
            self._traces.pop(conn, None)
        else:
            if not callable(sink) and not hasattr(sink, "write"):
                raise TypeError("sink must be a writable text file or a callable")
            self._traces[conn] = sink
        self._set_tracing()

    cdef int emit(self, object packet) except -1:
        self._out.append(packet)
        return 0

    cdef int want_output(self, object conn) except -1:
        # The application's own call (send, a read that opened the window) gives a
        # connection something to transmit: nothing it has to be told about, so not
        # "ready" (a driver would dispatch it once more per batch for nothing).
        self._dirty[conn] = None
        return 0

    cdef int wake(self, object conn) except -1:
        if (<Connection>conn)._tw is not None:
            # Its TIME-WAIT is a record now: told by the next pop_ready() only while the
            # application still holds it (as a closed connection is).
            self._ready_closed.add(conn)
            self._closed_pending += 1
            return 0
        self._dirty[conn] = None
        self._ready.add(conn)
        return 0

    cdef bint challenge_ack_allowed(self, double now) except -1:
        """Rate limit of challenge ACKs (RFC 5961 section 7) over the whole host: a budget
        per second of the clock, random around ``challenge_ack_limit`` (below)."""
        cdef double second
        cdef int64_t limit = self.settings.challenge_ack_limit
        if limit <= 0:
            return True
        second = floor(now)
        if second != self._challenge_second:
            # Each second's budget is random in [limit/2, 3*limit/2), as Linux's since 4.7
            # (tcp_send_challenge_ack: half + prandom_u32_max(tcp_challenge_ack_limit)), the
            # fix of CVE-2016-5696: an off-path attacker who counts the challenge ACKs its
            # own connections get can no longer tell whether one went to a victim. Drawn
            # from a keyed hash of the second, so a host is deterministic under its secret.
            self._challenge_second = second
            self._challenge_left = (limit + 1) // 2 + <int64_t>(self._isn.mac(
                b"challenge-ack budget " + repr(second).encode()) % <uint64_t>limit)
        if self._challenge_left <= 0:
            return False
        self._challenge_left -= 1
        return True

    cdef bint time_wait_full(self) except -1:
        return self._time_wait_count >= self.settings.max_time_wait

    cdef bint time_wait_compact(self, object conn) except -1:
        # Not while someone watches every state change (state_observer, DEBUG logging, a
        # traced connection): those see the whole connection to CLOSED, as before. Nor
        # with msl=0 (tests): that TIME-WAIT ends at the transmit after the next, as the
        # connection's timer is armed only after its ACK went out.
        return (self.state_observer is None and not self.tracing
                and self.settings.msl > 0)

    cdef int hold_time_wait(self, object conn_obj, object record) except -1:
        cdef Connection conn = <Connection>conn_obj
        cdef TimeWait rec = <TimeWait>record
        if self._conns.get(conn.key) is conn:
            del self._conns[conn.key]
        self._tw[conn.key] = rec
        self._disarm(conn)
        self._dirty.pop(conn, None)
        if conn in self._ready:
            # Its change to TIME-WAIT is told only while the application holds it.
            self._ready.discard(conn)
            self._ready_closed.add(conn)
            self._closed_pending += 1
        rec.queued += 1
        self._tw_fifo.append(rec)
        return 0

    cdef int drop_time_wait(self, object record) except -1:
        cdef TimeWait rec = <TimeWait>record
        if rec.live:
            rec.live = False
            key = _tw_key(rec)
            if self._tw.get(key) is rec:
                del self._tw[key]
        return 0

    cdef int _tw_input(self, TimeWait rec, Packet pk, int flags, double now) except -1:
        """A segment for a TIME-WAIT record (see _tcp_input for a connection's)."""
        cdef int64_t iss
        cdef double deadline = rec.deadline
        self.segments_in += 1
        if flags & (SYN | ACK | RST) == SYN:
            # RFC 1122 4.2.2.13, RFC 6191: a new incarnation's SYN (Linux: TCP_TW_SYN).
            lst = self._listener_for(pk)
            if lst is not None and not lst.decide:
                iss = rec.reopen_iss(self, pk)
                if iss >= 0:
                    self._tw_close(rec)
                    self._listen_input(lst, pk, flags, now, iss)
                    return 0
        if rec.segment(self, pk, now):
            self._tw_close(rec)                   # an acceptable RST (RFC 9293 3.10.7.4)
        elif rec.deadline != deadline:
            rec.queued += 1                       # 2*MSL restarted by a FIN: queue again
            self._tw_fifo.append(rec)
        return 0

    cdef int _tw_close(self, TimeWait rec) except -1:
        """The record goes (2*MSL passed, an RST, a reopening SYN): TIME-WAIT -> CLOSED,
        counted as a connection's change is."""
        self.drop_time_wait(rec)
        self.state_entries[<int>S_CLOSED] += 1
        self._time_wait_count -= 1
        return 0

    cdef double _tw_head(self):
        """The deadline of the first record due, or -1; drops the FIFO's stale entries."""
        cdef TimeWait rec
        fifo = self._tw_fifo
        while fifo:
            rec = <TimeWait>fifo[0]
            if rec.live and rec.queued == 1:
                return rec.deadline
            fifo.popleft()
            rec.queued -= 1
        return -1.0

    cdef int _tw_expire(self, double now) except -1:
        """Close the records whose 2*MSL has passed (RFC 9293 3.10.8)."""
        cdef TimeWait rec
        cdef double when
        fifo = self._tw_fifo
        while True:
            when = self._tw_head()
            if when < 0 or when > now:
                return 0
            rec = <TimeWait>fifo.popleft()
            rec.queued -= 1
            self._tw_close(rec)

    cdef bint adopt_orphan(self, object conn) except -1:
        # Linux tcp_close: with more than tcp_max_orphans orphans the new one is reset.
        if self._orphans >= self.settings.max_orphans:
            return False
        self._orphans += 1
        (<Connection>conn).orphan = True
        return True

    cdef int queue_for_accept(self, object conn) except -1:
        lst = (<Connection>conn).listener
        if lst is not None:
            lst._established(conn)
        return 0

    cdef int state_changed(self, object conn_obj, int old, int new) except -1:
        cdef Connection conn = <Connection>conn_obj
        if new == S_CLOSED:
            # Reported by the next pop_ready() only while someone still holds the
            # connection: a host driven without pop_ready() must not keep every
            # connection it ever had.
            self._ready.discard(conn)
            self._ready_closed.add(conn)
            self._closed_pending += 1
        else:
            self._ready.add(conn)
        self.state_entries[new] += 1
        if new == S_TIME_WAIT:
            self._time_wait_count += 1
        elif old == S_TIME_WAIT:
            self._time_wait_count -= 1
        if conn.orphan and (new == S_CLOSED or new == S_TIME_WAIT):
            conn.orphan = False                # TIME-WAIT has its own limit (max_time_wait)
            self._orphans -= 1
        if new == S_CLOSED:
            if self._conns.get(conn.key) is conn:
                del self._conns[conn.key]
            self._disarm(conn)
            lst = conn.listener
            if lst is not None:
                lst.syn_queue.discard(conn)
            if old == S_SYN_RECEIVED and conn.passive:
                self._stats["half_open_dropped"] += 1
        if self.tracing:
            if log.isEnabledFor(_DEBUG):
                log.debug("%s state_updated: %s -> %s", _label(conn), _STATES[old].name,
                          _STATES[new].name)
            if self._traces:
                self._trace(conn, "state_updated",
                            {"old": _STATES[old].name, "new": _STATES[new].name})
                if new == S_CLOSED:
                    self._traces.pop(conn, None)
        if self.state_observer is not None:
            self.state_observer(conn, _STATES[old], _STATES[new])
        return 0

    # Buffers of closed connections are kept for new ones: allocating and freeing 1 MiB
    # rings per connection costs more than the whole handshake.

    cdef SendRing take_ring(self):
        # The connection sets the ring's ref_min (zero-copy send) for its own segments.
        if self._ring_pool:
            return self._ring_pool.pop()
        return SendRing(self.settings.snd_buf)

    cdef Reassembler take_reassembler(self):
        if self._reasm_pool:
            return self._reasm_pool.pop()
        return Reassembler(self.settings.rcv_storage, self.settings.max_ooo_holes,
                           self.ooo_budget)

    cdef bint return_ring(self, SendRing ring) except -1:
        if len(self._ring_pool) < POOL_MAX:
            self._ring_pool.append(ring)
            return True
        return False

    cdef bint return_reassembler(self, Reassembler reasm) except -1:
        if len(self._reasm_pool) < POOL_MAX:
            reasm.reset()
            self._reasm_pool.append(reasm)
            return True
        return False

    cdef uint32_t ts_offset(self, uint16_t lport, uint32_t rip, uint16_t rport) except? 0:
        return self._isn.ts_offset(lport, rip, rport)

    cdef uint32_t ts_offset6(self, uint16_t lport, bytes rip, uint16_t rport) except? 0:
        return self._isn.ts_offset6(lport, rip, rport)

    cdef object make_congestion(self, int mss):
        cc = resolve(self.settings.congestion)(mss)
        if self.settings.hystart is not None:
            cc.hystart = self.settings.hystart    # else the policy's own default
        return cc

    cdef _arm(self, Connection conn):
        cdef tuple old
        when = conn.deadline() if conn.st != S_CLOSED else None
        old = self._armed.get(conn)
        if old is not None:
            if when == old[0]:
                return
            del self._timer_conns[old[1]]
        if when is None:
            if old is not None:
                del self._armed[conn]
            return
        seq = next(self._timer_seq)
        self._armed[conn] = (when, seq)
        self._timer_conns[seq] = conn
        heappush(self._timers, (when, seq))

    cdef _disarm(self, Connection conn):
        old = self._armed.pop(conn, None)
        if old is not None:
            del self._timer_conns[old[1]]

    cdef _init_port_table(self):
        """RFC 6056 3.3.4: the table of increments starts random (from the secret)."""
        cdef unsigned char t[24]
        cdef int i
        memcpy(t, b"fasttcp port table: ", 20)
        for i in range(PORT_TABLE_SIZE):
            wr32(t + 20, <uint32_t>i)
            self._port_table[i] = <uint32_t>(<IsnGenerator>self._isn).mac_c(t, 24)

    def _pick_port(self, rip: Any, rport: int, lip: Any = None) -> int:
        """An ephemeral port for a connection to (rip, rport): RFC 6056 3.3.4 (Algorithm 4,
        double-hash port selection), in Linux's variant (__inet_hash_connect): one keyed
        hash of (local address, remote address, remote port) gives the offset (high half)
        and the table bucket (low bits) whose counter moves on with each port tried. So
        ports are unpredictable off-path and differ between hosts and restarts (a new
        secret), while consecutive connections to one destination do not collide. A
        4-tuple still in use, TIME-WAIT included (its TCB stays in the table until 2*MSL),
        or a listening port is never picked. ``rip``/``lip``: IPv4 numbers (``lip`` None:
        the first IPv4 address), or IPv6 addresses as 16 bytes (the hash then covers the
        128-bit addresses)."""
        cdef unsigned char t[38]
        cdef uint64_t h
        cdef uint32_t offset, index, span, lo, port, _i
        lo, hi = self.settings.ephemeral_ports
        span = hi - lo + 1
        memcpy(t, b"port", 4)
        if isinstance(rip, bytes):
            memcpy(t + 4, <const unsigned char*><bytes>lip, 16)
            memcpy(t + 20, <const unsigned char*><bytes>rip, 16)
            wr16(t + 36, <uint16_t>rport)
            h = (<IsnGenerator>self._isn).mac_c(t, 38)
        else:
            wr32(t + 4, self._addr4 if lip is None else <uint32_t>lip)
            wr32(t + 8, <uint32_t>rip)
            wr16(t + 12, <uint16_t>rport)
            h = (<IsnGenerator>self._isn).mac_c(t, 14)
        offset = <uint32_t>(h >> 32)
        index = <uint32_t>h & (PORT_TABLE_SIZE - 1)
        conns = self._conns
        if lip is None:
            lip = self._addr4
        for _i in range(span):
            port = lo + (offset + self._port_table[index]) % span
            self._port_table[index] += 1
            key = (port, rip, rport, lip)
            if key not in conns and port not in self._listeners and key not in self._tw:
                return port
        raise OSError(99, "no ephemeral port free for this destination")
