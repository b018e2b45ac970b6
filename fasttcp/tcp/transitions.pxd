# The TCP state machine's transitions: the events that change a connection's state, and
# the one function that says where each leads. transitions.pyx lists every transition,
# each with the rule it comes from; Connection._transition (connection.pyx) is the only
# caller, so no state changes anywhere else.

# What happens to a connection that may change its state.
cpdef enum TcpEvent:
    E_ACTIVE_OPEN           # the user opened a connection (Host.connect)
    E_PASSIVE_OPEN          # a SYN reached a listener, which made this TCB for it
    E_COOKIE_ACK            # a valid SYN cookie's ACK reached a listener (RFC 4987 3.6)
    E_SYN_ACK               # SYN-SENT: a SYN that acknowledges ours
    E_SYN                   # SYN-SENT: a SYN without ACK (simultaneous open)
    E_ACK_OF_SYN            # SYN-RECEIVED: our SYN acknowledged
    E_CLOSE                 # the user closed its sending side (close, shutdown)
    E_FIN_ACKED             # the peer acknowledged our FIN
    E_FIN                   # the peer's FIN, with every byte before it received
    E_FIN_OURS_ACKED        # ... arriving when our FIN is already acknowledged
    E_TIME_WAIT_FULL        # TIME-WAIT refused: settings.max_time_wait reached
    E_2MSL_TIMEOUT          # the 2*MSL timer (TIME-WAIT, orphaned FIN-WAIT-2) expired
    E_RST                   # an acceptable RST arrived
    E_ABORT                 # the connection is reset from this side
    E_TIMEOUT               # retransmissions or keepalive probes went unanswered
    E_ICMP_UNREACHABLE      # a hard ICMP error answered our SYN
    E_TIME_WAIT_REOPEN      # TIME-WAIT: a new SYN for the 4-tuple is taken by a listener
    EVENT_COUNT             # how many there are (not an event)

# The state `event` leads to from `state`, or -1 when it is no transition there.
cdef int next_state(int state, int event) noexcept
