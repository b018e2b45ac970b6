# Type stub for the compiled module fasttcp.tcp.host_services (host_services.pyx/.pxd).
# The interface's methods are C-only (cdef): Python sees the class, its two readonly
# fields, the tracing flag and the Count enum. Checked against the runtime by stubtest.
from enum import IntEnum
from typing import Final

from typing_extensions import disjoint_base

COMPILED: Final[bool]
# Counter names for Host.stats(), by Count value (the names without COUNT_, lower case).
COUNT_NAMES: Final[tuple[str, ...]]

class Count(IntEnum):
    """The events a connection counts in Host.stats()."""

    COUNT_DROP_BAD_ACK = 0
    COUNT_DROP_MISSING_TIMESTAMP = 1
    COUNT_DROP_PAWS = 2
    COUNT_DROP_OUT_OF_WINDOW = 3
    COUNT_DROP_ACK_UNSENT = 4
    COUNT_DROP_ACK_TOO_OLD = 5
    COUNT_DROP_OOO_HOLE_LIMIT = 6
    COUNT_SYNS_OUT = 7
    COUNT_SYN_ACKS_OUT = 8
    COUNT_FINS_OUT = 9
    COUNT_RSTS_OUT = 10
    COUNT_PURE_ACKS_OUT = 11
    COUNT_RETRANSMITTED_SEGMENTS = 12
    COUNT_KEEPALIVE_PROBES = 13
    COUNT_WINDOW_PROBES = 14
    COUNT_CHALLENGE_ACKS_OUT = 15
    COUNT_CHALLENGE_ACKS_SUPPRESSED = 16
    COUNT_INVALID_ACKS_SUPPRESSED = 17
    COUNT_RST_IN = 18
    COUNT_OOO_SEGMENTS_IN = 19
    COUNT_HOLE_FILLS_IN = 20
    COUNT_TRIMMED_TO_WINDOW = 21
    COUNT_TS_RECENT_EXPIRED = 22
    COUNT_FAST_RETRANSMITS = 23
    COUNT_SACK_RECOVERIES = 24
    COUNT_TIMEOUTS = 25
    COUNT_FIN_WAIT_2_ORPHANS = 26
    COUNT_TIME_WAIT_OVERFLOW = 27
    COUNT_ICMP_IGNORED_SEQ = 28
    COUNT_ICMP_SOFT_ERRORS = 29
    COUNT_PMTU_UPDATES = 30
    COUNT_PMTU_BLACK_HOLES = 31
    COUNT_PERSIST_TIMEOUTS = 32
    COUNT_ORPHAN_PROBE_ABORTS = 33
    COUNT_ORPHAN_RETRY_ABORTS = 34
    COUNT_ORPHANS_RESET = 35
    COUNT_USER_TIMEOUTS = 36
    COUNT_OOO_PRUNES = 37
    COUNT_DROP_OOO_BUDGET = 38
    COUNT_SEGMENTS_MARKED_LOST = 39
    COUNT_REORDERING = 40
    COUNT_TLP_PROBES = 41
    COUNT_TLP_LOSSES_REPAIRED = 42
    COUNT_SPURIOUS_RTX_UNDONE = 43
    COUNT_TIME_WAIT_REOPENED = 44
    COUNT_ECN_NEGOTIATED = 45
    COUNT_ECN_CE_RECEIVED = 46
    COUNT_ECN_ECE_RECEIVED = 47
    COUNT_ECN_REDUCTIONS = 48
    COUNT_ECN_CWR_OUT = 49
    COUNT_FRTO_SPURIOUS_RTOS = 50
    COUNT_INTERCEPTED_PACKETS = 51
    COUNT_INTERCEPT_PENDING = 52
    COUNT_INTERCEPT_PENDING_OVERFLOW = 53
    COUNT_INTERCEPT_SYN_ABSORBED = 54
    COUNT_INTERCEPT_PENDING_EXPIRED = 55
    COUNT_INTERCEPT_PENDING_RESET = 56
    COUNT_INTERCEPT_ACCEPTED = 57
    COUNT_INTERCEPT_REFUSED = 58
    COUNT_INTERCEPT_DROPPED = 59
    COUNT_INTERCEPT_ECHO_REPLIES = 60
    COUNT_ACK_AT_WINDOW_EDGE = 61
    COUNT_KINDS = 62

@disjoint_base
class HostServices:
    """What a connection may ask of its host; implemented by fasttcp.host.host.Host."""

    @property
    def now(self) -> float: ...
    @property
    def address_int(self) -> int: ...
    tracing: bool
