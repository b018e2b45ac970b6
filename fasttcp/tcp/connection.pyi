# Type stub for the compiled module fasttcp.tcp.connection (connection.pyx): Connection,
# its TCP_INFO-like ConnectionInfo record, and the module's constants. The TCB fields a
# Connection has come from Tcb (tcb.pyi). Checked against the runtime by stubtest.
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from typing_extensions import Buffer, disjoint_base

from fasttcp.host.host import Host
from fasttcp.tcp._timewait import TimeWait
from fasttcp.tcp.states import State
from fasttcp.tcp.tcb import Tcb
from fasttcp.wire._wire import Packet

COMPILED: Final[bool]
MASK: Final[int]
TS_OPTION_SPACE: Final[int]
DEFAULT_PEER_MSS: Final[int]
MAX_WSCALE: Final[int]
MIN_PMTU: Final[int]
MIN_PMTU6: Final[int]
BLACK_HOLE_RETRIES: Final[int]
BASE_MSS: Final[int]
MTU_PROBE_FLOOR: Final[int]
LR_TLP: Final[int]
LR_REO: Final[int]
FRTO_WAIT: Final[int]
FRTO_NEW_SENT: Final[int]
FRTO_WATCH: Final[int]
TLP_MIN_T: Final[float]

@dataclass
class ConnectionInfo:
    """A TCP_INFO-like snapshot (sequence variables as 32-bit wire values)."""

    state: str
    snd_una: int
    snd_nxt: int
    rcv_nxt: int
    snd_wnd: int
    rcv_wnd: int
    mss: int
    srtt: float | None
    rttvar: float | None  # annotated `float` in connection.pyx, but None before a sample
    rto: float
    cwnd: int
    ssthresh: int
    retransmits: int
    bytes_sent: int
    bytes_acked: int
    bytes_received: int
    snd_wscale: int
    rcv_wscale: int
    unacked: int
    send_buffered: int
    recv_buffered: int
    reordering: int = 3
    tlp_probes: int = 0
    spurious_rtx_undone: int = 0
    delivery_rate: float = 0.0
    ecn: bool = False
    ce_received: int = 0
    ece_received: int = 0

@disjoint_base
class Connection(Tcb):
    """A TCP connection owned by a fasttcp.Host (made by Host.connect or Listener.accept)."""

    def __init__(self, host: Host, local: tuple[str, int] | tuple[str, int, int, int],
                 remote: tuple[str, int] | tuple[str, int, int, int], remote_ip: int | bytes,
                 iss: int, now: float, passive: bool,
                 local_ip: int | bytes | None = None) -> None: ...
    @property
    def state(self) -> State: ...
    @property
    def _tw(self) -> TimeWait | None: ...
    @property
    def eof(self) -> bool: ...
    @property
    def readable(self) -> int: ...
    @property
    def send_space(self) -> int: ...
    @property
    def unsent(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    def send(self, data: Buffer) -> int: ...
    def recv(self, max_bytes: int = 65536) -> bytes: ...
    def recv_into(self, buffer: Buffer) -> int: ...
    def recv_to(self, consumer: Callable[[memoryview], object], max_bytes: int = 65536) -> int: ...
    def shutdown(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def info(self) -> ConnectionInfo: ...
    # Driven by the host (sans-IO): a parsed segment, an ICMP error, the timers.
    def on_segment(self, seg: Packet, now: float) -> None: ...
    def on_icmp_error(self, icmp_type: int, code: int, mtu: int, quoted_seq: int,
                      now: float) -> None: ...
    def deadline(self) -> float | None: ...
    def on_timer(self, now: float) -> None: ...
