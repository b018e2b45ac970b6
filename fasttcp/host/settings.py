"""Host settings: every tunable of the stack, with its default and where it comes from."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Optional, Type, Union


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Settings:
    """Keyword settings of :class:`fasttcp.Host`. Unknown names are an error.

    Times are seconds, sizes bytes. Settings are immutable and checked when made (every
    field; an invalid value raises ValueError): derive changed ones with
    ``dataclasses.replace(settings, name=value)``, which checks them again.
    """

    #: Link MTU; the MSS we announce is ``mtu - 40`` unless ``mss`` is set (RFC 6691).
    mtu: int = 1500
    #: Maximum segment size we announce and send at most; None derives it from ``mtu``.
    mss: Optional[int] = None
    #: First retransmission timeout, before any RTT sample (RFC 6298 2.1 says 1 s).
    initial_rto: float = 1.0
    #: Lower bound of the RTO. RFC 6298 2.4 says 1 s; like Linux we default to 200 ms.
    min_rto: float = 0.2
    #: Upper bound of the RTO (RFC 6298 2.5: at least 60 s).
    max_rto: float = 60.0
    #: Maximum segment lifetime; TIME-WAIT lasts 2*MSL (RFC 9293 3.4.2). Linux's TIME-WAIT
    #: is 60 s, i.e. an MSL of 30 s.
    msl: float = 30.0
    #: Receive buffer per connection: the most we advertise (window scaling is used above
    #: 64 KiB, RFC 7323). With window scaling the buffer holds a sixteenth more
    #: (``rcv_storage``), for the rounding of a scaled window.
    rcv_buf: int = 1 << 20
    #: Send buffer per connection: how much `send()` accepts before the peer acknowledges.
    snd_buf: int = 1 << 20
    #: Zero-copy send, for a host whose link writes TSO super-segments as SplitPackets
    #: (`split_tx` with `gso_max`: TunLink with offloads): a `send()` of at least this many
    #: bytes of a `bytes` object (or a contiguous memoryview of one) keeps a reference until
    #: they are acknowledged instead of copying them (they count against snd_buf all the
    #: same); 0 always copies, else at least 1024. Below 16 KiB a copy costs less than
    #: tracking a reference, and a super-segment stays in at most two pieces.
    send_ref_min: int = 16384
    #: Disable Nagle's algorithm (RFC 9293 3.7.4) when True.
    nodelay: bool = False
    #: Delayed-ACK timer (RFC 1122 4.2.3.2, RFC 9293 3.8.6.3): at most 0.5 s; 0 disables
    #: delaying (every segment is acknowledged at once).
    delayed_ack: float = 0.04
    #: ACKs sent at once, without delay, when data first arrives and again after
    #: out-of-order data (Linux's quickack mode, at most TCP_MAX_QUICKACKS = 16): at most
    #: rcv window / (2 * the peer's segment size), at least 2; 0 disables.
    quick_acks: int = 16
    #: The smallest send MSS (bytes of payload) a peer's MSS option can impose, unless our
    #: own MTU allows less: as Linux's tcp_min_snd_mss (48) since CVE-2019-11479.
    min_mss: int = 48
    #: Keepalive idle time before the first probe; None disables keepalive (the default,
    #: RFC 1122 4.2.3.6).
    keepalive: Optional[float] = None
    #: Seconds between keepalive probes, and unanswered probes before the connection fails.
    keepalive_interval: float = 75.0
    keepalive_probes: int = 9
    #: Retransmissions of one segment before the connection fails with a timeout (Linux's
    #: tcp_retries2), and of a SYN / SYN-ACK (tcp_syn_retries).
    max_retries: int = 15
    syn_retries: int = 6
    #: Default listen backlog (completed connections waiting for accept()).
    backlog: int = 128
    #: Half-open (SYN-RECEIVED) connections per listener.
    syn_backlog: int = 1024
    #: Most connections the host holds (all states); new ones beyond it are refused.
    max_connections: int = 65536
    #: Most connections held in TIME-WAIT; beyond it a closing connection skips TIME-WAIT
    #: (counted as ``time_wait_overflow``), as Linux's tcp_max_tw_buckets does.
    max_time_wait: int = 16384
    #: Most separate out-of-order holes per connection (the bytes are bounded by rcv_buf).
    max_ooo_holes: int = 64
    #: Most bytes held out of order by all connections together (each is also bounded by
    #: rcv_buf). Under pressure a connection drops its own out-of-order data from the
    #: highest sequence downwards, above the arriving segment (Linux tcp_prune_ofo_queue;
    #: RFC 2018 section 8 lets a receiver renege on SACKed data), and a segment that still
    #: does not fit is dropped (counted as ``drop_ooo_budget``). 64 MiB: 64 connections
    #: with their whole default rcv_buf out of order, the share Linux's tcp_mem puts all TCP
    #: memory under pressure at (1/16 of RAM) on a 1 GiB machine. 0 keeps none.
    ooo_budget: int = 64 << 20
    #: Zero-window probes (RFC 9293 3.8.6.1) an orphan (a connection the application
    #: closed, with data or FIN still to deliver) sends before it gives up, and RTO
    #: retransmissions it makes: Linux's tcp_orphan_retries, whose default (0) means 8. A
    #: live connection keeps probing while the peer answers (RFC 1122 4.2.2.17) and gives
    #: up after max_retries unanswered probes.
    orphan_retries: int = 8
    #: Most orphans the host holds; a connection closed beyond it is reset at once (Linux's
    #: tcp_max_orphans, which like tcp_max_tw_buckets defaults to half the connection
    #: table: the same default as max_time_wait).
    max_orphans: int = 16384
    #: RFC 5482 user timeout (Linux TCP_USER_TIMEOUT): a connection whose data (or FIN)
    #: stays unacknowledged this many seconds, also behind a zero window whose probes the
    #: peer answers, is aborted with ConnectionTimedOut. None (the default) leaves it to
    #: max_retries, and a peer that answers probes keeps a live connection open.
    user_timeout: Optional[float] = None
    #: Window scaling (RFC 7323); the shift is the smallest that covers rcv_buf.
    window_scaling: bool = True
    #: TCP timestamps (RFC 7323): RTT samples from every ACK and PAWS.
    timestamps: bool = True
    #: Selective acknowledgments (RFC 2018) with RFC 6675 loss recovery.
    sack: bool = True
    #: D-SACK (RFC 2883): report duplicate segments in the first SACK block (with SACK
    #: on), so a sender such as Linux can detect and undo spurious retransmissions.
    dsack: bool = True
    #: SYN cookies (RFC 4987 3.6) when a listener's SYN queue is full: True, False, or
    #: "always" (every SYN answered with a cookie, no half-open state at all).
    syn_cookies: Union[bool, str] = True
    #: IPv4 and IPv6 reassembly (RFC 791, RFC 8200 4.5; one budget for both): most bytes
    #: held in fragments, most datagrams in progress, and how long an incomplete datagram
    #: is kept (RFC 1122 3.3.2: 60-120 s recommended; 30 s like Linux's ipfrag_time).
    frag_max_bytes: int = 1 << 20
    frag_max_datagrams: int = 64
    frag_timeout: float = 30.0
    #: Challenge ACKs (RFC 5961 7) per second for the whole host, on average: each
    #: second's budget is random in [limit / 2, 3 * limit / 2), as Linux's since 4.7, so
    #: that an off-path attacker counting them learns nothing (CVE-2016-5696); 0 =
    #: unlimited.
    challenge_ack_limit: int = 1000
    #: Per connection, at most one challenge ACK (RFC 5961), and one ACK in answer to
    #: segments without data that fail the window or PAWS test, per this many seconds (as
    #: Linux's tcp_invalid_ratelimit): forged or looping segments cannot make us send one
    #: ACK each, nor spend the host-wide challenge budget through one connection. Segments
    #: with data or FIN that fail the window test are always answered. 0 = no limit.
    invalid_ack_interval: float = 0.5
    #: Largest TCP super-segment (bytes) handed to a link with segmentation offload (a
    #: TunLink with offload cuts it into MTU-sized packets); 0 sends MSS-sized packets.
    gso_max: int = 0
    #: Path MTU black-hole detection (RFC 4821's answer to a full-stop timeout, as Linux's
    #: tcp_mtu_probing): 0 off (Linux's default), 1 on: when full-sized segments keep
    #: timing out (more than tcp_retries1 = 3 timeouts in a row) and no ICMP frag-needed
    #: came, the send MSS falls to Linux's tcp_base_mss (1024), then halves with each
    #: further timeout (not below 48, tcp_mtu_probe_floor); counted as
    #: ``pmtu_black_holes``. Off by default as in Linux: nothing probes back up, so on a
    #: merely lossy path it would cost throughput for the rest of the connection.
    mtu_probing: int = 0
    #: IPv4 TTL (IPv6 hop limit) of packets we send.
    ttl: int = 64
    #: Congestion control policy: a name ("cubic", RFC 9438; "newreno", RFC 5681 + 6582)
    #: or a CongestionControl subclass.
    congestion: Union[str, Type[Any]] = "cubic"
    #: Loss detection (fasttcp/tcp/loss.py): "rack" (RACK-TLP, RFC 8985: time-based, with
    #: a reordering window that adapts with D-SACK; the default, as in Linux) or
    #: "dupthresh" (RFC 6675's three duplicate ACKs / SACKed segments), or a LossDetection
    #: subclass. Used with SACK; a peer without SACK gets NewReno (RFC 6582) either way.
    loss_detection: Union[str, Type[Any]] = "rack"
    #: Tail-loss probes (RFC 8985 7) with RACK: at about 2*SRTT without an ACK, send new
    #: data or the last segment again instead of waiting for the RTO.
    tlp: bool = True
    #: F-RTO (RFC 5682), as Linux's default tcp_frto=2: after a retransmission timeout,
    #: send new data rather than go back while the first ACKs come, and undo the timeout's
    #: reduction if they show it was spurious (the original segments were only late). The
    #: SACK-enhanced algorithm (section 3) with SACK, the basic one (section 2) without.
    frto: bool = True
    #: ECN (RFC 3168), as Linux's tcp_ecn: 0 off; 1 ask for it on our SYNs and accept it;
    #: 2 (default, as Linux) accept it when a peer's SYN asks, never ask.
    ecn: int = 2
    #: HyStart++ (RFC 9406) in the initial slow start: None follows the policy (on for
    #: CUBIC, as RFC 9438 4.10 recommends; off for NewReno), True or False forces it.
    #: It needs RTT samples from timestamps (RFC 7323) on every ACK.
    hystart: Optional[bool] = None
    #: Secret for ISNs (RFC 6528), and the key of the challenge-ACK budget and of port
    #: choice (RFC 6056); None draws a random one per host.
    isn_secret: Optional[bytes] = None
    #: Ephemeral ports (first, last): the IANA dynamic range (RFC 6335), chosen by RFC
    #: 6056's Algorithm 4 keyed with isn_secret.
    ephemeral_ports: tuple = field(default=(49152, 65535))
    # --- interception (Host.intercept) ---
    #: How long a pending flow of ``intercept(..., decide=True)`` waits for accept(),
    #: refuse() or drop() before it is forgotten (counted intercept_pending_expired; the
    #: client's next SYN retransmission comes back as a new flow).
    intercept_pending_timeout: float = 30.0
    #: Answer ICMP/ICMPv6 echo requests to intercepted addresses, from that address.
    intercept_echo: bool = True

    # --- UDP (issue 15; fasttcp/host/udp.py) ---
    #: Bytes of datagrams a UDP endpoint or intercepted flow queues unread (Linux's
    #: rmem_default); more are dropped and counted (``udp_rcvbuf_errors``).
    udp_rcvbuf: int = 212992
    #: Most intercepted UDP flows alive at once (``intercept_udp``'s default); datagrams
    #: that would open one more are dropped and counted (``drop_udp_flow_limit``).
    max_udp_flows: int = 4096
    #: Seconds an intercepted UDP flow may stay idle (nothing either way) before it closes.
    udp_idle_timeout: float = 60.0
    #: ICMP errors (port unreachable) sent per second, host-wide: a token bucket of this
    #: rate with a burst of 50 (Linux's icmp_msgs_per_sec / icmp_msgs_burst). 0 = none.
    icmp_error_rate: int = 1000

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "Settings":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(names))}")
        return cls(**kwargs)

    @property
    def effective_mss(self) -> int:
        return self.mss if self.mss is not None else self.mtu - 40

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first field with an invalid value."""
        for name in _INT_FIELDS:
            if not _is_int(getattr(self, name)):
                raise ValueError(f"{name} must be an int, got {getattr(self, name)!r}")
        for name in _FLOAT_FIELDS:
            if not _is_number(getattr(self, name)):
                raise ValueError(f"{name} must be a number of seconds, "
                                 f"got {getattr(self, name)!r}")
        for name in _BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not 68 <= self.mtu <= 65535:
            raise ValueError(f"mtu must be 68..65535 (RFC 791), got {self.mtu}")
        if self.mss is not None and not _is_int(self.mss):
            raise ValueError(f"mss must be an int or None, got {self.mss!r}")
        if not 1 <= self.effective_mss <= self.mtu - 40:
            raise ValueError(f"mss must fit the mtu: 1..mtu - 40 ({self.mtu - 40}), "
                             f"got {self.effective_mss}")
        if not 0 < self.min_rto <= self.initial_rto <= self.max_rto:
            raise ValueError("need 0 < min_rto <= initial_rto <= max_rto, got "
                             f"{self.min_rto}, {self.initial_rto}, {self.max_rto}")
        if not 0 <= self.delayed_ack <= 0.5:
            raise ValueError("delayed_ack must be 0..0.5 s (RFC 1122 4.2.3.2), "
                             f"got {self.delayed_ack}")
        if not 0 <= self.quick_acks <= 1024:
            raise ValueError(f"quick_acks must be 0..1024, got {self.quick_acks}")
        if not 1 <= self.min_mss <= 65535 - 40:
            raise ValueError(f"min_mss must be 1..65495 bytes, got {self.min_mss}")
        if not (self.send_ref_min == 0 or 1024 <= self.send_ref_min <= 1 << 30):
            # At least 1 KiB: each referenced run takes a table entry.
            raise ValueError(f"send_ref_min must be 0 or 1024..2**30 bytes, "
                             f"got {self.send_ref_min}")
        if self.rcv_buf < self.effective_mss or self.snd_buf < self.effective_mss:
            raise ValueError(f"rcv_buf and snd_buf must hold at least one segment "
                             f"({self.effective_mss} bytes), got {self.rcv_buf}, {self.snd_buf}")
        if self.rcv_buf > (65535 << 14):
            raise ValueError(f"rcv_buf larger than a scaled window can announce "
                             f"(65535 << 14, RFC 7323), got {self.rcv_buf}")
        if self.msl < 0:
            raise ValueError(f"msl must be >= 0, got {self.msl}")
        if not 0 <= self.invalid_ack_interval <= 60:
            raise ValueError(f"invalid_ack_interval must be 0..60 s, "
                             f"got {self.invalid_ack_interval}")
        if not 1 <= self.ttl <= 255:
            raise ValueError(f"ttl must be 1..255, got {self.ttl}")
        # Keepalive (RFC 1122 4.2.3.6).
        if self.keepalive is not None and not (_is_number(self.keepalive)
                                               and self.keepalive > 0):
            raise ValueError(f"keepalive must be None (off) or > 0 s, got {self.keepalive!r}")
        if not self.keepalive_interval > 0:
            raise ValueError(f"keepalive_interval must be > 0 s, got {self.keepalive_interval}")
        if self.keepalive_probes < 1:
            raise ValueError(f"keepalive_probes must be >= 1, got {self.keepalive_probes}")
        # Retransmission limits.
        if self.max_retries < 0 or self.syn_retries < 0:
            raise ValueError(f"max_retries and syn_retries must be >= 0, "
                             f"got {self.max_retries}, {self.syn_retries}")
        # Connection and queue limits.
        if self.backlog < 0:
            raise ValueError(f"backlog must be >= 0, got {self.backlog}")
        if self.syn_backlog < 1:
            raise ValueError(f"syn_backlog must be >= 1, got {self.syn_backlog}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")
        if self.max_time_wait < 0:
            raise ValueError(f"max_time_wait must be >= 0, got {self.max_time_wait}")
        if not 0 <= self.max_ooo_holes <= 1 << 16:
            raise ValueError(f"max_ooo_holes must be 0..65536, got {self.max_ooo_holes}")
        if self.ooo_budget < 0:
            raise ValueError(f"ooo_budget must be >= 0 bytes, got {self.ooo_budget}")
        if self.orphan_retries < 0:
            raise ValueError(f"orphan_retries must be >= 0, got {self.orphan_retries}")
        if self.max_orphans < 0:
            raise ValueError(f"max_orphans must be >= 0, got {self.max_orphans}")
        if self.user_timeout is not None and not (_is_number(self.user_timeout)
                                                  and self.user_timeout > 0):
            raise ValueError(f"user_timeout must be None (off) or > 0 s, "
                             f"got {self.user_timeout!r}")
        if self.udp_rcvbuf < 0 or self.max_udp_flows < 0 or self.icmp_error_rate < 0:
            raise ValueError(f"udp_rcvbuf, max_udp_flows and icmp_error_rate must be >= 0, "
                             f"got {self.udp_rcvbuf}, {self.max_udp_flows}, "
                             f"{self.icmp_error_rate}")
        if not self.udp_idle_timeout > 0:
            raise ValueError(f"udp_idle_timeout must be > 0 s, got {self.udp_idle_timeout}")
        if self.challenge_ack_limit < 0:
            raise ValueError(f"challenge_ack_limit must be >= 0 (0 = unlimited), "
                             f"got {self.challenge_ack_limit}")
        if not (isinstance(self.syn_cookies, bool) or self.syn_cookies == "always"):
            raise ValueError(f"syn_cookies must be True, False or \"always\", "
                             f"got {self.syn_cookies!r}")
        # IPv4 reassembly.
        if self.frag_max_bytes < 1 or self.frag_max_datagrams < 1:
            raise ValueError(f"frag_max_bytes and frag_max_datagrams must be >= 1, "
                             f"got {self.frag_max_bytes}, {self.frag_max_datagrams}")
        if not self.frag_timeout > 0:
            raise ValueError(f"frag_timeout must be > 0 s, got {self.frag_timeout}")
        if self.mtu_probing not in (0, 1):
            raise ValueError(f"mtu_probing must be 0 (off) or 1 (black-hole detection), "
                             f"got {self.mtu_probing!r}")
        # Segmentation offload: an IPv4 packet is at most 65535 bytes (an IPv6 payload too).
        if not 0 <= self.gso_max <= 65535:
            raise ValueError(f"gso_max must be 0 (off) or up to 65535 bytes, got {self.gso_max}")
        self._validate_congestion()
        self._validate_loss_detection()
        if self.ecn not in (0, 1, 2):
            raise ValueError(f"ecn must be 0 (off), 1 (ask and accept) or 2 (accept only), "
                             f"got {self.ecn}")
        if self.hystart is not None and not isinstance(self.hystart, bool):
            raise ValueError(f"hystart must be None (the policy's default), True or False, "
                             f"got {self.hystart!r}")
        if self.isn_secret is not None and not (isinstance(self.isn_secret, bytes)
                                                and len(self.isn_secret) == 16):
            raise ValueError(f"isn_secret must be None or 16 bytes, got {self.isn_secret!r}")
        if not self.intercept_pending_timeout > 0:
            raise ValueError(f"intercept_pending_timeout must be > 0 s, "
                             f"got {self.intercept_pending_timeout}")
        ports = self.ephemeral_ports
        if not (isinstance(ports, tuple) and len(ports) == 2 and all(map(_is_int, ports))
                and 1 <= ports[0] <= ports[1] <= 65535):
            raise ValueError(f"ephemeral_ports must be a tuple (first, last) with "
                             f"1 <= first <= last <= 65535, got {ports!r}")

    def _validate_congestion(self) -> None:
        # Imported on use, so that importing this module does not import fasttcp.tcp.
        from fasttcp.tcp.congestion import resolve
        try:
            resolve(self.congestion)
        except (TypeError, ValueError) as e:
            raise ValueError(f"congestion: {e}") from None

    def _validate_loss_detection(self) -> None:
        from fasttcp.tcp.loss import resolve_loss
        try:
            resolve_loss(self.loss_detection)
        except (TypeError, ValueError) as e:
            raise ValueError(f"loss_detection: {e}") from None

    @functools.cached_property
    def rcv_storage(self) -> int:
        """Bytes a connection's receive buffer holds: rcv_buf, plus a sixteenth with window
        scaling. A scaled window is announced in whole units and its right edge never
        moves left (RFC 7323 2.4, as Linux), so while the application does not read, each
        ACK after a segment of unaligned length may move the edge right by up to one unit
        past rcv_buf; the peer may send up to it, and it must all be taken. (Past this
        slack the announced edge does move left, by less than a unit: Tcb.advertised_window.)
        """
        if not self.rcv_wscale:
            return self.rcv_buf
        return min(self.rcv_buf + (self.rcv_buf >> 4), 1 << 30)

    @functools.cached_property
    def rcv_wscale(self) -> int:
        """Our window-scale shift: the smallest that lets rcv_buf be announced."""
        if not self.window_scaling:
            return 0
        shift = 0
        while (65535 << shift) < self.rcv_buf and shift < 14:
            shift += 1
        return shift


# Fields checked by type in validate(), from their annotations (strings under
# ``from __future__ import annotations``), so a new field gets its type check too.
_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(Settings)}
_INT_FIELDS = tuple(n for n, t in _FIELD_TYPES.items() if t == "int")
_FLOAT_FIELDS = tuple(n for n, t in _FIELD_TYPES.items() if t == "float")
_BOOL_FIELDS = tuple(n for n, t in _FIELD_TYPES.items() if t == "bool")
