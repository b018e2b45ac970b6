# The host is compiled (host.pyx): its per-segment dispatch, timers and output loop run as
# C with these fields typed. The underscore fields are the host's own (not visible from
# Python); other attributes live in the instance __dict__ (tests and users may also set
# their own there).
from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t

from fasttcp.storage._reasm cimport OooBudget, Reassembler
from fasttcp.storage._ring cimport SendRing
from fasttcp.tcp._timewait cimport TimeWait
from fasttcp.tcp.connection cimport Connection
from fasttcp.tcp.host_services cimport COUNT_KINDS, Count, HostServices
from fasttcp.tcp.tcb cimport STATE_COUNT
from fasttcp.wire._wire cimport Packet

cdef enum:
    PORT_TABLE_SIZE = 256               # RFC 6056 3.3.4's TABLE_LENGTH (a power of two)


# A Host is the HostServices its connections talk to (fasttcp/tcp/host_services.pxd):
# the methods declared there are implemented in host.pyx.
cdef class Host(HostServices):
    cdef dict __dict__
    cdef object __weakref__
    cdef public object settings
    cdef public str address             # the first of addresses
    cdef readonly tuple addresses       # every address, canonical text, in the given order
    # Addresses by family: IPv4 numbers (the first also as _addr4) and IPv6 16-byte
    # strings; text by number/bytes; the first of each family (None when it has none).
    cdef uint32_t _addr4
    cdef Py_ssize_t _n4, _n6
    cdef frozenset _set4, _set6
    cdef dict _text
    cdef dict _own                      # each own address (number or bytes) -> itself
    cdef object _first4, _first6
    # (lport, remote ip, rport, local ip) -> Connection: IPv4 addresses as numbers, IPv6
    # addresses as their 16 bytes
    cdef dict _conns
    # The same key -> TimeWait: closed connections whose TIME-WAIT is a compact record
    # (fasttcp/tcp/_timewait.pyx); never also in _conns. _tw_fifo: their expiry, in the
    # order of their deadlines (one duration for all): a record restarted by a FIN is
    # queued again and its older entries are skipped (TimeWait.queued).
    cdef dict _tw
    cdef object _tw_fifo
    cdef dict _listeners                # port -> Listener
    # Host.intercept: the Interceptors (asked in order), whether there ever was one (or an
    # intercept_udp: ICMP errors to non-own addresses then pass), and their PendingFlows in
    # the order of their deadlines (one timeout for all).
    cdef list _icpts
    cdef bint _icpt_ever
    cdef object _pending_fifo
    cdef dict _armed                    # Connection -> (deadline, seq) of its timer
    cdef dict _timer_conns              # seq of a live heap entry -> its Connection
    cdef dict _dirty                    # ordered set of connections that need output
    cdef set _ready                     # user-visible changes since the last pop_ready
    cdef object _ready_closed           # WeakSet: connections that closed since then
    cdef Py_ssize_t _closed_pending     # adds to it since then (WeakSet's len is Python code)
    cdef list _timers                   # heap of (deadline, seq)
    cdef list _out                      # packets emitted outside Connection._output
    cdef list _ring_pool, _reasm_pool
    cdef object _stats                  # Counter
    cdef object _isn, _cookies, _frags, _batch, _timer_seq
    cdef Py_ssize_t _time_wait_count
    cdef Py_ssize_t _orphans            # connections with conn.orphan set
    # Out-of-order bytes held by all the host's reassemblers (settings.ooo_budget).
    cdef readonly OooBudget ooo_budget
    # The challenge-ACK budget (RFC 5961 7): what is left of it in the second that began
    # at _challenge_second (Linux 4.7+: a random budget per second, CVE-2016-5696).
    cdef double _challenge_second
    cdef int64_t _challenge_left
    # RFC 6056 3.3.4 (Algorithm 4): the table of per-bucket port increments.
    cdef uint32_t _port_table[PORT_TABLE_SIZE]
    cdef public bint _raise_internal
    # UDP (issue 15): the layer (fasttcp/host/udp.py:UdpLayer) and its next idle-flow
    # expiry (inf: none), a C double so transmit()/poll_at() pay one compare for it.
    cdef public object _udp
    cdef public double _udp_deadline
    # None, or a callable(conn, old State, new State) told of every state change.
    cdef public object state_observer
    # Counters of the per-packet paths, kept in C and merged into stats().
    cdef readonly uint64_t packets_in, packets_out, segments_in, fast_segments_in
    cdef uint64_t state_entries[STATE_COUNT]  # entries into each state, by number
    cdef uint64_t counts[COUNT_KINDS]   # what connections counted (HostServices.count)
    # Connection -> trace sink (Host.trace_connection); weak keys, never pins a connection.
    cdef object _traces
    # _traces.data (the WeakKeyDictionary's own dict of weak references): tested as a C
    # dict on every receive/transmit (_set_tracing) instead of the mapping's __len__.
    cdef dict _trace_refs

    cdef int _set_tracing(self) except -1
    cdef int _trace(self, Connection conn, str name, dict data) except -1
    cdef int _log_drop(self, str reason, Packet pk) except -1

    cdef _tcp_input(self, Packet pk, double now)
    cdef _listen_input(self, lst, Packet pk, int flags, double now, int64_t iss=*)
    cdef _reset_for(self, Packet pk, int flags)
    cdef _arm(self, Connection conn)
    cdef _disarm(self, Connection conn)
    cdef _init_port_table(self)
    cdef int _tw_input(self, TimeWait rec, Packet pk, int flags, double now) except -1
    cdef int _tw_close(self, TimeWait rec) except -1
    cdef double _tw_head(self)
    cdef int _tw_expire(self, double now) except -1

    # HostServices
    cdef int count(self, Count what) except -1
    cdef int trace_event(self, object conn, Count what) except -1
    cdef int emit(self, object packet) except -1
    cdef int want_output(self, object conn) except -1
    cdef int wake(self, object conn) except -1
    cdef SendRing take_ring(self)
    cdef Reassembler take_reassembler(self)
    cdef bint return_ring(self, SendRing ring) except -1
    cdef bint return_reassembler(self, Reassembler reasm) except -1
    cdef uint32_t ts_offset(self, uint16_t lport, uint32_t rip, uint16_t rport) except? 0
    cdef uint32_t ts_offset6(self, uint16_t lport, bytes rip, uint16_t rport) except? 0
    cdef bint _is_ours(self, Packet pk) except -1
    cdef object _listener_for(self, Packet pk)
    cdef object _interceptor_for(self, Packet pk)
    cdef bint _intercepted(self, Packet pk) except -1
    cdef _pending_input(self, icpt, Packet pk, int flags, double now)
    cdef double _pending_head(self)
    cdef int _pending_expire(self, double now) except -1
    cdef object _new_conn(self, Packet pk, uint32_t iss, double now, bint passive)
    cdef object make_congestion(self, int mss)
    cdef bint challenge_ack_allowed(self, double now) except -1
    cdef bint time_wait_full(self) except -1
    cdef bint time_wait_compact(self, object conn) except -1
    cdef int hold_time_wait(self, object conn, object record) except -1
    cdef int drop_time_wait(self, object record) except -1
    cdef bint adopt_orphan(self, object conn) except -1
    cdef int queue_for_accept(self, object conn) except -1
    cdef int state_changed(self, object conn, int old, int new) except -1
    cdef int input_fragment(self, object packet, double now) except -1
    cdef int input_slow(self, Packet pk, double now) except -1
    cdef int count_batch(self, uint64_t packets, uint64_t fast, const uint64_t* drops) except -1
