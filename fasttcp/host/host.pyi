# Type stub for the compiled module fasttcp.host.host (host.pyx / host.pxd): the sans-IO
# Host and its Listener. Checked against the runtime by stubtest.
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any, Final, TypedDict, type_check_only

from typing_extensions import Buffer, Unpack, disjoint_base

from fasttcp.host._prefix import PrefixSet
from fasttcp.host.settings import Settings
from fasttcp.host.udp import UdpEndpoint, UdpInterceptor
from fasttcp.storage._reasm import OooBudget
from fasttcp.tcp._timewait import TimeWait
from fasttcp.tcp.connection import Connection
from fasttcp.tcp.host_services import COUNT_NAMES as COUNT_NAMES
from fasttcp.tcp.host_services import HostServices
from fasttcp.tcp.states import State
from fasttcp.wire._wire import SplitPacket

COMPILED: Final[bool]
MASK: Final[int]
POOL_MAX: Final[int]
# DEBUG: connection lifecycle events (Host.trace_event).
log: Final[logging.Logger]
OPT_MASK: Final[int]
CLOSED: Final[State]

# The keyword settings of Host(): Settings' fields (fasttcp/host/settings.py), so that an
# unknown name or a wrongly typed value is a type error as it is a runtime error.
# tests/test_typing.py checks that the names match Settings' fields.
@type_check_only
class _SettingsKwargs(TypedDict, total=False):
    mtu: int
    mss: int | None
    initial_rto: float
    min_rto: float
    max_rto: float
    msl: float
    rcv_buf: int
    snd_buf: int
    send_ref_min: int
    nodelay: bool
    delayed_ack: float
    quick_acks: int
    min_mss: int
    keepalive: float | None
    keepalive_interval: float
    keepalive_probes: int
    max_retries: int
    syn_retries: int
    backlog: int
    syn_backlog: int
    max_connections: int
    max_time_wait: int
    max_ooo_holes: int
    ooo_budget: int
    orphan_retries: int
    max_orphans: int
    user_timeout: float | None
    window_scaling: bool
    timestamps: bool
    sack: bool
    dsack: bool
    syn_cookies: bool | str
    frag_max_bytes: int
    frag_max_datagrams: int
    frag_timeout: float
    challenge_ack_limit: int
    invalid_ack_interval: float
    gso_max: int
    mtu_probing: int
    ttl: int
    congestion: str | type[Any]
    loss_detection: str | type[Any]
    tlp: bool
    frto: bool
    ecn: int
    hystart: bool | None
    isn_secret: bytes | None
    ephemeral_ports: tuple[int, int]
    intercept_pending_timeout: float
    intercept_echo: bool
    udp_rcvbuf: int
    max_udp_flows: int
    udp_idle_timeout: float
    icmp_error_rate: int

class Listener:
    """A listening port: a queue of half-open connections and a backlog of accepted ones."""

    host: Host
    port: int
    backlog: int
    address: str | None  # None: every address of the host
    syn_queue: set[Connection]
    accept_queue: deque[Connection]
    closed: bool
    cookies_until: float
    decide: bool  # an Interceptor's (False for a Listener)
    def __init__(self, host: Host, port: int, backlog: int,
                 address: str | None = None) -> None: ...
    def accept(self) -> Connection | None: ...
    def close(self) -> None: ...
    def __len__(self) -> int: ...

class Interceptor(Listener):
    """TCP to non-own addresses inside prefixes, any port (Host.intercept)."""

    def __init__(self, host: Host, prefixes: PrefixSet, decide: bool,
                 backlog: int) -> None: ...
    @property
    def prefixes(self) -> tuple[str, ...]: ...
    def pop_pending(self) -> list[PendingFlow]: ...

class PendingFlow:
    """A SYN to an intercepted destination waiting for accept(), refuse() or drop()."""

    interceptor: Interceptor
    key: tuple[Any, ...]
    local_address: tuple[str, int] | tuple[str, int, int, int]
    remote_address: tuple[str, int] | tuple[str, int, int, int]
    deadline: float
    state: str
    def __init__(self, interceptor: Interceptor, key: Any, syn: bytes,
                 local: tuple[Any, ...], remote: tuple[Any, ...], deadline: float) -> None: ...
    @property
    def pending(self) -> bool: ...
    def accept(self) -> Connection: ...
    def refuse(self) -> None: ...
    def drop(self) -> None: ...

@disjoint_base
class Host(HostServices):
    """A user-space TCP/IP host with one or more IPv4 and IPv6 addresses, driven by
    receive / transmit / poll_at (sans-IO)."""

    settings: Settings
    address: str  # the first of addresses
    @property
    def addresses(self) -> tuple[str, ...]: ...
    # None, or a callable(conn, old State, new State) told of every state change.
    state_observer: Callable[[Connection, State, State], object] | None
    @property
    def packets_in(self) -> int: ...
    @property
    def packets_out(self) -> int: ...
    @property
    def segments_in(self) -> int: ...
    @property
    def fast_segments_in(self) -> int: ...
    # Instance attributes (the instance __dict__).
    split_tx: bool
    ooo_budget: OooBudget
    address_int: int  # the first IPv4 address as a number (0: none)
    def __init__(self, address: str | Sequence[str],
                 **settings: Unpack[_SettingsKwargs]) -> None: ...
    def advance_clock(self, now: float) -> None: ...
    def receive(self, packets: Iterable[Buffer], now: float, parse_flags: int = 0,
                defer_copy: bool = False) -> None: ...
    def settle(self) -> None: ...
    def transmit(self, now: float) -> list[bytes | SplitPacket]: ...
    def poll_at(self) -> float | None: ...
    def listen(self, port: int, backlog: int | None = None,
               address: str | None = None) -> Listener: ...
    def connect(self, remote: tuple[str, int] | tuple[str, int, int, int],
                local_port: int | None = None,
                now: float | None = None) -> Connection: ...
    def udp_bind(self, port: int = 0, address: str | None = None) -> UdpEndpoint: ...
    def intercept_udp(self, prefixes: str | Iterable[str], *, idle_timeout: float | None = None,
                      max_flows: int | None = None) -> UdpInterceptor: ...
    def connections(self) -> list[Connection | TimeWait]: ...
    def stats(self) -> dict[str, int]: ...
    def trace_connection(self, conn: Connection,
                         sink: IO[str] | Callable[[str], object] | None) -> None: ...
    def pop_ready(self) -> set[Connection | Listener]: ...
    def intercept(self, prefixes: str | Iterable[str], *, decide: bool = False,
                  backlog: int | None = None) -> Interceptor: ...
