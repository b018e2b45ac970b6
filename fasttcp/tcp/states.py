"""The eleven TCP states (RFC 9293 section 3.3.2).

The numbers are defined once, by the C enum the engine compares (``TcpState`` in
``fasttcp/tcp/tcb.pxd``); this Python enum takes them from there.
"""
import enum

from fasttcp.tcp.tcb import TcpState as _C


class State(enum.IntEnum):
    CLOSED = int(_C.S_CLOSED)
    LISTEN = int(_C.S_LISTEN)
    SYN_SENT = int(_C.S_SYN_SENT)
    SYN_RECEIVED = int(_C.S_SYN_RECEIVED)
    ESTABLISHED = int(_C.S_ESTABLISHED)
    FIN_WAIT_1 = int(_C.S_FIN_WAIT_1)
    FIN_WAIT_2 = int(_C.S_FIN_WAIT_2)
    CLOSE_WAIT = int(_C.S_CLOSE_WAIT)
    CLOSING = int(_C.S_CLOSING)
    LAST_ACK = int(_C.S_LAST_ACK)
    TIME_WAIT = int(_C.S_TIME_WAIT)

    @property
    def rfc_name(self) -> str:
        return self.name.replace("_", "-")

    @property
    def synchronized(self) -> bool:
        return self >= State.ESTABLISHED or self == State.SYN_RECEIVED


# Every C state has its Python name and number, and they are 0..10 in order (so that
# tuple(State)[n] is state n).
if ([(s.name, s.value) for s in State] != [(c.name[2:], c.value) for c in _C][:-1]
        or [s.value for s in State] != list(range(_C.STATE_COUNT))):
    raise ImportError("fasttcp.tcp.states: State out of step with tcb.pxd's TcpState")
