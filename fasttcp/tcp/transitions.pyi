# Type stub for the compiled module fasttcp.tcp.transitions (transitions.pyx/.pxd): the
# events of the state machine and its transition table. Checked against the runtime by
# stubtest.
from enum import IntEnum
from typing import Final

from fasttcp.tcp.tcb import TcpState

COMPILED: Final[bool]

class TcpEvent(IntEnum):
    """What happens to a connection that may change its state."""

    E_ACTIVE_OPEN = 0
    E_PASSIVE_OPEN = 1
    E_COOKIE_ACK = 2
    E_SYN_ACK = 3
    E_SYN = 4
    E_ACK_OF_SYN = 5
    E_CLOSE = 6
    E_FIN_ACKED = 7
    E_FIN = 8
    E_FIN_OURS_ACKED = 9
    E_TIME_WAIT_FULL = 10
    E_2MSL_TIMEOUT = 11
    E_RST = 12
    E_ABORT = 13
    E_TIMEOUT = 14
    E_ICMP_UNREACHABLE = 15
    E_TIME_WAIT_REOPEN = 16
    EVENT_COUNT = 17

# (from states, event, to state, where the rule comes from)
TRANSITIONS: Final[tuple[tuple[tuple[TcpState, ...], TcpEvent, TcpState, str], ...]]

def lookup(state: int, event: int) -> int: ...
