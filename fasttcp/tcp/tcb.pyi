# Type stub for the compiled module fasttcp.tcp.tcb (tcb.pyx / tcb.pxd): the TCB's fields
# Python can see (`cdef public` / `cdef readonly` in tcb.pxd) and Tcb's Python methods.
# Checked against the runtime by stubtest (see .ci/stubtest-allowlist.txt).
from enum import IntEnum
from typing import Final

from typing_extensions import disjoint_base

from fasttcp.host.host import Listener
from fasttcp.host.settings import Settings
from fasttcp.tcp.congestion import CongestionControl
from fasttcp.tcp.errors import TcpError
from fasttcp.tcp.host_services import HostServices
from fasttcp.tcp._rack import RackQueue
from fasttcp.tcp.rtt import RttEstimator
from fasttcp.wire._wire import SplitPacket

COMPILED: Final[bool]

class TcpState(IntEnum):
    """The eleven states (RFC 9293 3.3.2) by number; fasttcp.tcp.states.State is the
    public enum with the same values."""

    S_CLOSED = 0
    S_LISTEN = 1
    S_SYN_SENT = 2
    S_SYN_RECEIVED = 3
    S_ESTABLISHED = 4
    S_FIN_WAIT_1 = 5
    S_FIN_WAIT_2 = 6
    S_CLOSE_WAIT = 7
    S_CLOSING = 8
    S_LAST_ACK = 9
    S_TIME_WAIT = 10
    STATE_COUNT = 11

@disjoint_base
class Tcb:
    # --- the connection and its owner ---
    host: HostServices
    settings: Settings
    @property
    def st(self) -> int: ...
    @property
    def ipver(self) -> int: ...  # 4 or 6
    lport: int
    rport: int
    key: tuple[int, int | bytes, int, int | bytes]  # IPv6: the addresses as 16 bytes
    local_address: tuple[str, int] | tuple[str, int, int, int]  # IPv6: (ip, port, 0, 0)
    remote_address: tuple[str, int] | tuple[str, int, int, int]
    passive: bool
    user_closed: bool
    listener: Listener | None  # set for passive opens until accepted
    error: TcpError | None  # what ended the connection
    soft_error: tuple[int, int] | None
    created_at: float
    # --- send sequence space (offsets from ISS) ---
    iss: int
    snd_una: int
    snd_nxt: int
    snd_max: int
    snd_wnd: int
    max_snd_wnd: int
    snd_wl1: int
    snd_wl2: int
    fin_off: int | None
    nodelay: bool
    ttl: int
    # --- receive sequence space (offsets from IRS) ---
    irs: int
    rcv_nxt: int
    rcv_adv: int
    rcv_buf: int
    rcv_slack: int
    rcv_fin_off: int | None
    delayed_ack: float
    # --- timers (deadlines in seconds, None when not armed) ---
    rtx_at: float | None
    delack_at: float | None
    timewait_at: float | None
    keepalive_at: float | None
    persist: bool
    retries: int
    keepalive_sent: int
    rtt: RttEstimator
    last_recv_at: float
    last_send_at: float
    # --- negotiated options ---
    mss: int
    mss_limit: int
    snd_wscale: int
    rcv_wscale: int
    ts_ok: bool
    ts_recent: int
    ts_recent_at: float
    ts_offset: int
    last_ack_sent: int
    sack_ok: bool
    last_ooo_off: int
    dsack_start: int
    dsack_end: int
    gso_max: int
    # --- congestion control and loss recovery ---
    cc: CongestionControl
    in_recovery: bool
    dupacks: int
    recover: int
    cwnd_bonus: int
    sacked: list[list[int]]  # [start, end) send offsets above SND.UNA
    # --- counters ---
    bytes_sent: int
    bytes_acked: int
    bytes_received: int
    segs_in: int
    segs_out: int
    retransmits: int
    # zero-window probes and orphans (persist backoff, settings.orphan_retries)
    probes_out: int
    probes_unanswered: int
    stall_at: float
    orphan: bool
    # loss detection and recovery (RACK-TLP, PRR, undo)
    rtxq: RackQueue | None
    loss: object
    prr: object
    tlp_end: int
    tlp_is_retrans: bool
    tlp_probes: int
    spurious_rtx_undone: int
    undo_marker: int
    frto: int
    delivery_rate: float
    # ECN (RFC 3168)
    ecn_ok: bool
    ce_received: int
    ece_received: int
    fp_ece: bool
    # --- per-batch accumulators of the fast path ---
    fp_acked: int
    fp_flight: int
    fp_acks: int
    fp_touched: bool
    fp_tsecr: int

    def build_syn(self, ack: bool, window: int, opts: int, now: float,
                  ecn_flags: int = 0) -> bytes: ...
    def ts_now(self, now: float) -> int: ...
    def output_data(self, now: float, out: list[bytes | SplitPacket]) -> int: ...
