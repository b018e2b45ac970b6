"""The eleven TCP states (RFC 9293 section 3.3.2)."""
import enum


class State(enum.IntEnum):
    CLOSED = 0
    LISTEN = 1
    SYN_SENT = 2
    SYN_RECEIVED = 3
    ESTABLISHED = 4
    FIN_WAIT_1 = 5
    FIN_WAIT_2 = 6
    CLOSE_WAIT = 7
    CLOSING = 8
    LAST_ACK = 9
    TIME_WAIT = 10

    @property
    def rfc_name(self) -> str:
        return self.name.replace("_", "-")

    @property
    def synchronized(self) -> bool:
        return self >= State.ESTABLISHED or self == State.SYN_RECEIVED
