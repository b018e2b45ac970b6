# cython: language_level=3
"""Every state transition of a TCP connection, in one table (RFC 9293 3.3.2, figure 5).

A connection changes state only through ``Connection._transition(event)``, which looks up
(current state, event) here: the table below is the whole state diagram. Side effects
(timers, the FIN, the error reported to the user) stay with the code that raises the
event; this module knows only which state comes next. A Listener is not a connection: the
LISTEN state is the listener's, and a TCB it creates starts in CLOSED.
"""
from libc.string cimport memset

from fasttcp.tcp.tcb cimport (S_CLOSE_WAIT, S_CLOSED, S_CLOSING, S_ESTABLISHED, S_FIN_WAIT_1,
                              S_FIN_WAIT_2, S_LAST_ACK, S_SYN_RECEIVED, S_SYN_SENT,
                              S_TIME_WAIT, STATE_COUNT)

COMPILED = True

# Every state a connection can leave by an abortive event.
_OPEN = (S_SYN_SENT, S_SYN_RECEIVED, S_ESTABLISHED, S_FIN_WAIT_1, S_FIN_WAIT_2, S_CLOSE_WAIT,
         S_CLOSING, S_LAST_ACK, S_TIME_WAIT)

# (from states, event, to state, where the rule comes from); sections are RFC 9293's.
TRANSITIONS = (
    # --- opening ---
    ((S_CLOSED,), E_ACTIVE_OPEN, S_SYN_SENT, "3.10.1 OPEN, active: send SYN"),
    ((S_CLOSED,), E_PASSIVE_OPEN, S_SYN_RECEIVED, "3.10.7.2 LISTEN, fourth: a SYN"),
    ((S_CLOSED,), E_COOKIE_ACK, S_ESTABLISHED, "RFC 4987 3.6: the cookie is our SYN, acked"),
    ((S_SYN_SENT,), E_SYN_ACK, S_ESTABLISHED, "3.10.7.3 fourth: our SYN is acknowledged"),
    ((S_SYN_SENT,), E_SYN, S_SYN_RECEIVED, "3.10.7.3 fourth: simultaneous open (figure 8)"),
    ((S_SYN_RECEIVED,), E_ACK_OF_SYN, S_ESTABLISHED, "3.10.7.4 fifth, SYN-RECEIVED"),
    # --- closing: ours first (active close) ---
    ((S_SYN_SENT,), E_CLOSE, S_CLOSED, "3.10.4 CLOSE, SYN-SENT: delete the TCB"),
    ((S_SYN_RECEIVED, S_ESTABLISHED), E_CLOSE, S_FIN_WAIT_1, "3.10.4 CLOSE: queue a FIN"),
    ((S_FIN_WAIT_1,), E_FIN_ACKED, S_FIN_WAIT_2, "3.10.7.4 fifth, FIN-WAIT-1"),
    ((S_FIN_WAIT_1,), E_FIN, S_CLOSING, "3.10.7.4 eighth, FIN-WAIT-1: ours not yet acked"),
    ((S_FIN_WAIT_1,), E_FIN_OURS_ACKED, S_TIME_WAIT, "3.10.7.4 eighth, FIN-WAIT-1"),
    ((S_FIN_WAIT_2,), E_FIN, S_TIME_WAIT, "3.10.7.4 eighth, FIN-WAIT-2"),
    ((S_CLOSING,), E_FIN_ACKED, S_TIME_WAIT, "3.10.7.4 fifth, CLOSING"),
    ((S_TIME_WAIT,), E_2MSL_TIMEOUT, S_CLOSED, "3.10.8 time-wait timeout"),
    # A new SYN for the 4-tuple, beyond the old incarnation (a higher sequence number, or a
    # newer timestamp): the TIME-WAIT TCB is deleted and a listener opens the new
    # incarnation (as Linux's tcp_timewait_state_process, TCP_TW_SYN).
    ((S_TIME_WAIT,), E_TIME_WAIT_REOPEN, S_CLOSED, "RFC 1122 4.2.2.13, RFC 6191 2"),
    # A fully closed connection waits for the peer's FIN for 2*MSL at most (as Linux's
    # tcp_fin_timeout): nobody could read or close it any more.
    ((S_FIN_WAIT_2,), E_2MSL_TIMEOUT, S_CLOSED, "orphaned FIN-WAIT-2 timeout"),
    # Instead of TIME-WAIT when settings.max_time_wait connections are in it already (as
    # Linux's tcp_max_tw_buckets); the peer's FIN is still acknowledged.
    ((S_FIN_WAIT_1, S_FIN_WAIT_2, S_CLOSING), E_TIME_WAIT_FULL, S_CLOSED, "max_time_wait"),
    # --- closing: the peer's first (passive close) ---
    ((S_SYN_RECEIVED, S_ESTABLISHED), E_FIN, S_CLOSE_WAIT, "3.10.7.4 eighth"),
    ((S_CLOSE_WAIT,), E_CLOSE, S_LAST_ACK, "3.10.4 CLOSE, CLOSE-WAIT: queue a FIN"),
    ((S_LAST_ACK,), E_FIN_ACKED, S_CLOSED, "3.10.7.4 fifth, LAST-ACK: delete the TCB"),
    # --- aborting: from any state ---
    (_OPEN, E_RST, S_CLOSED, "3.10.7.3 / 3.10.7.4 second, with RFC 5961 3.2's checks"),
    (_OPEN, E_ABORT, S_CLOSED, "3.10.5 ABORT; RFC 1122 4.2.2.13: data after close"),
    (_OPEN, E_TIMEOUT, S_CLOSED, "3.8.3 R2; RFC 1122 4.2.3.5, 4.2.3.6 keepalive"),
    ((S_SYN_SENT,), E_ICMP_UNREACHABLE, S_CLOSED, "RFC 1122 4.2.3.9, RFC 5927 4.1"),
)

# The table as C: _next[state][event] is the next state or -1.
cdef signed char _next[STATE_COUNT][EVENT_COUNT]
memset(_next, -1, sizeof(_next))
for _from, _event, _to, _rule in TRANSITIONS:
    for _state in _from:
        if _next[_state][_event] != -1:
            raise ImportError(f"fasttcp.tcp.transitions: two rules for {_state}, {_event}")
        _next[_state][_event] = _to


cdef int next_state(int state, int event) noexcept:
    if not (0 <= state < STATE_COUNT and 0 <= event < EVENT_COUNT):
        return -1
    return _next[state][event]


def lookup(state: int, event: int) -> int:
    """The state `event` leads to from `state`, or -1 (for tests and tools)."""
    return next_state(state, event)
