# What a connection may ask of its host, as C calls: the whole dependency of fasttcp.tcp on
# fasttcp.host (see docs/ARCHITECTURE.md). fasttcp.host.host.Host subclasses HostServices
# and implements every method; a Connection holds its host typed as HostServices, so each
# call below is a C vtable call, not a Python attribute lookup.
from libc.stdint cimport uint16_t, uint32_t, uint64_t

from fasttcp.storage._reasm cimport Reassembler
from fasttcp.storage._ring cimport SendRing
from fasttcp.wire._wire cimport Packet


# The events a connection counts in Host.stats(). Each counter's name there is the
# member's name without "COUNT_", in lower case (COUNT_DROP_PAWS -> "drop_paws").
cpdef enum Count:
    # segments dropped by the state machine
    COUNT_DROP_BAD_ACK                  # SYN-SENT: an ACK of something we never sent
    COUNT_DROP_MISSING_TIMESTAMP        # RFC 7323 3.2
    COUNT_DROP_PAWS                     # RFC 7323 5.3 R1
    COUNT_DROP_OUT_OF_WINDOW            # RFC 9293 3.10.7.4 first check
    COUNT_DROP_ACK_UNSENT               # RFC 5961 5.2
    COUNT_DROP_ACK_TOO_OLD              # RFC 5961 5.2
    COUNT_DROP_OOO_HOLE_LIMIT           # more holes than settings.max_ooo_holes
    # segments out
    COUNT_SYNS_OUT
    COUNT_SYN_ACKS_OUT
    COUNT_FINS_OUT
    COUNT_RSTS_OUT
    COUNT_PURE_ACKS_OUT
    COUNT_RETRANSMITTED_SEGMENTS
    COUNT_KEEPALIVE_PROBES
    COUNT_WINDOW_PROBES
    # RFC 5961 challenge ACKs and the rate limit of invalid-segment answers
    COUNT_CHALLENGE_ACKS_OUT
    COUNT_CHALLENGE_ACKS_SUPPRESSED
    COUNT_INVALID_ACKS_SUPPRESSED
    # segments in
    COUNT_RST_IN
    COUNT_OOO_SEGMENTS_IN
    COUNT_HOLE_FILLS_IN
    COUNT_TRIMMED_TO_WINDOW
    COUNT_TS_RECENT_EXPIRED             # RFC 7323 5.5
    # loss recovery and timers
    COUNT_FAST_RETRANSMITS
    COUNT_SACK_RECOVERIES
    COUNT_TIMEOUTS
    COUNT_FIN_WAIT_2_ORPHANS
    COUNT_TIME_WAIT_OVERFLOW
    # ICMP
    COUNT_ICMP_IGNORED_SEQ
    COUNT_ICMP_SOFT_ERRORS
    COUNT_PMTU_UPDATES
    # path MTU: segment sizes and black-hole detection (RFC 4821, Linux tcp_mtu_probing)
    COUNT_PMTU_BLACK_HOLES              # MSS lowered after repeated timeouts
    # zero windows, orphans, user timeout (RFC 1122 4.2.2.17, RFC 5482) and the host-wide
    # out-of-order budget (settings.ooo_budget)
    COUNT_PERSIST_TIMEOUTS              # max_retries zero-window probes went unanswered
    COUNT_ORPHAN_PROBE_ABORTS           # an orphan gave up after orphan_retries probes
    COUNT_ORPHAN_RETRY_ABORTS           # an orphan gave up after orphan_retries RTOs
    COUNT_ORPHANS_RESET                 # closed with max_orphans held: reset at once
    COUNT_USER_TIMEOUTS                 # data unacknowledged for user_timeout
    COUNT_OOO_PRUNES                    # out-of-order data dropped to stay in the budget
    COUNT_DROP_OOO_BUDGET               # a segment refused: the budget was still full
    # RACK-TLP and PRR loss recovery (RFC 8985, RFC 6937)
    COUNT_SEGMENTS_MARKED_LOST          # by the loss-detection policy (RACK or DupThresh)
    COUNT_REORDERING                    # segments delivered below a later-sent one
    COUNT_TLP_PROBES                    # tail-loss probes sent (RFC 8985 7.3)
    COUNT_TLP_LOSSES_REPAIRED           # probes whose ACK shows they repaired a loss
    COUNT_SPURIOUS_RTX_UNDONE           # reductions undone as spurious
    # SYN in TIME-WAIT, challenge-ACK budget, ephemeral ports
    COUNT_TIME_WAIT_REOPENED            # a new SYN reopened a TIME-WAIT 4-tuple (RFC 6191)
    # ECN (RFC 3168)
    COUNT_ECN_NEGOTIATED                # connections that agreed on ECN in the handshake
    COUNT_ECN_CE_RECEIVED               # segments that arrived marked CE
    COUNT_ECN_ECE_RECEIVED              # segments that arrived with ECE (once negotiated)
    COUNT_ECN_REDUCTIONS                # cwnd reductions for ECE (one per window, 6.1.2)
    COUNT_ECN_CWR_OUT                   # segments sent with CWR
    # F-RTO (RFC 5682)
    COUNT_FRTO_SPURIOUS_RTOS            # timeouts F-RTO showed spurious (Linux TCPSpuriousRTOs)
    # interception (Host.intercept)
    COUNT_INTERCEPTED_PACKETS           # slow-path packets to an intercepted address
    COUNT_INTERCEPT_PENDING             # SYNs that became a PendingFlow (decide=True)
    COUNT_INTERCEPT_PENDING_OVERFLOW    # ... dropped: `backlog` flows already pending
    COUNT_INTERCEPT_SYN_ABSORBED        # retransmitted SYNs of a pending flow
    COUNT_INTERCEPT_PENDING_EXPIRED     # pending flows nobody decided in time
    COUNT_INTERCEPT_PENDING_RESET       # pending flows the client reset
    COUNT_INTERCEPT_ACCEPTED            # PendingFlow.accept()
    COUNT_INTERCEPT_REFUSED             # PendingFlow.refuse() (RST to the client)
    COUNT_INTERCEPT_DROPPED             # PendingFlow.drop()
    COUNT_INTERCEPT_ECHO_REPLIES        # echo requests answered from an intercepted address
    # receive window edge (RFC 9293 3.10.7.4, Linux tcp_sequence)
    COUNT_ACK_AT_WINDOW_EDGE            # taken for its ACK at RCV.NXT + RCV.WND
    COUNT_KINDS                         # how many there are (not a counter)


cdef class HostServices:
    # The time of the host's latest receive/transmit/connect (read by the connection
    # where no `now` is passed in); only the host moves it.
    cdef readonly double now
    cdef readonly uint32_t address_int  # the host's IPv4 address, as a number
    # True while events must reach trace_event (DEBUG logging on "fasttcp.tcp", or a
    # connection traced by Host.trace_connection); the host sets it once per batch, so a
    # counted event costs one test of this flag when tracing is off.
    cdef public bint tracing

    # --- asked by a connection ---
    cdef int count(self, Count what) except -1
    # `conn` counted `what`, with tracing on: log it and write it to the connection's trace.
    cdef int trace_event(self, object conn, Count what) except -1
    # A packet made outside Connection._output (RST, keepalive, an immediate duplicate
    # ACK) for the host's next transmit().
    cdef int emit(self, object packet) except -1
    # `conn` has output to send at the next transmit() ...
    cdef int want_output(self, object conn) except -1
    # ... and a change its user must be told of (Host.pop_ready).
    cdef int wake(self, object conn) except -1
    # Buffers, created on first use and given back when the connection closes; return_*
    # is True when the host kept the buffer (then the connection must drop it).
    cdef SendRing take_ring(self)
    cdef Reassembler take_reassembler(self)
    cdef bint return_ring(self, SendRing ring) except -1
    cdef bint return_reassembler(self, Reassembler reasm) except -1
    # The per-connection random offset of the timestamp clock (RFC 7323 5.4), from the
    # host's ISN secret.
    cdef uint32_t ts_offset(self, uint16_t lport, uint32_t rip, uint16_t rport) except? 0
    # ... for an IPv6 peer (its 16 address bytes)
    cdef uint32_t ts_offset6(self, uint16_t lport, bytes rip, uint16_t rport) except? 0
    # A fresh congestion controller (settings.congestion) for this MSS.
    cdef object make_congestion(self, int mss)
    # The host-wide challenge-ACK budget (RFC 5961 7): True when one may go out now.
    cdef bint challenge_ack_allowed(self, double now) except -1
    # TIME-WAIT accounting: True when settings.max_time_wait connections are in it.
    cdef bint time_wait_full(self) except -1
    # A connection the application closed enters TIME-WAIT: True when the host may keep
    # it as a compact record (fasttcp/tcp/_timewait.pyx) instead; then hold_time_wait
    # swaps the connection for `record` (a TimeWait) in its table and timers.
    cdef bint time_wait_compact(self, object conn) except -1
    cdef int hold_time_wait(self, object conn, object record) except -1
    # The application aborted a connection whose TIME-WAIT is a record: drop the record
    # (the connection's own state change to CLOSED does the accounting).
    cdef int drop_time_wait(self, object record) except -1
    # The application closed `conn` before it reached CLOSED or TIME-WAIT: True when the
    # host takes it as an orphan (and sets conn.orphan; state_changed lets it go), False
    # when settings.max_orphans are held already (Linux tcp_too_many_orphans).
    cdef bint adopt_orphan(self, object conn) except -1
    # A passive open completed: `conn` goes to its listener's accept queue.
    cdef int queue_for_accept(self, object conn) except -1
    # `conn` moved from state `old` to `new` (fasttcp.tcp.tcb state numbers).
    cdef int state_changed(self, object conn, int old, int new) except -1

    # --- asked by the fast path's batch loop (fasttcp.tcp._fastpath.receive_batch) ---
    # An IPv4 or IPv6 fragment, and a packet the fast path did not take.
    cdef int input_fragment(self, object packet, double now) except -1
    cdef int input_slow(self, Packet pk, double now) except -1
    # The batch's totals: packets seen, segments the fast path took, and the packets the
    # parser dropped, by fasttcp.wire DropReason (an array of DROP_REASON_COUNT).
    cdef int count_batch(self, uint64_t packets, uint64_t fast, const uint64_t* drops) except -1
