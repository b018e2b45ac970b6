# The host is compiled (host.pyx): its per-segment dispatch, timers and output loop run as
# C with these fields typed. Other attributes live in the instance __dict__ (tests and
# users may also set their own there).
from libc.stdint cimport uint32_t, uint64_t

from fasttcp.tcp.connection cimport Connection
from fasttcp.wire._wire cimport Packet


cdef class Host:
    cdef dict __dict__
    cdef object __weakref__
    cdef public object settings
    cdef public str address
    cdef public uint32_t _address_int
    cdef public dict _conns             # (lport, remote ip int, rport) -> Connection
    cdef public dict _listeners         # port -> Listener
    cdef public dict _armed             # Connection -> (deadline, seq) of its timer
    cdef public dict _timer_conns       # seq of a live heap entry -> its Connection
    cdef public dict _dirty             # ordered set of connections that need output
    cdef public set _ready              # user-visible changes since the last pop_ready
    cdef public object _ready_closed    # WeakSet: connections that closed since then
    cdef Py_ssize_t _closed_pending     # adds to it since then (WeakSet's len is Python code)
    cdef public list _timers            # heap of (deadline, seq)
    cdef public list _out               # packets emitted outside Connection._output
    cdef public list _ring_pool, _reasm_pool
    cdef public object _stats           # Counter
    cdef public object _isn, _cookies, _frags, _batch, _timer_seq, _challenge_times
    cdef public Py_ssize_t _time_wait_count
    cdef public int _next_port
    cdef public double now
    cdef public bint _raise_internal
    # Counters of the per-packet paths, kept in C and merged into stats().
    cdef public uint64_t packets_in, packets_out, segments_in, fast_segments_in
    cdef uint64_t state_entries[11]     # entries into each state, by state number

    cdef _tcp_input(self, Packet pk, double now)
    cdef _listen_input(self, lst, Packet pk, int flags, double now)
    cdef _reset_for(self, Packet pk, int flags)
    cdef _arm(self, Connection conn)
    cdef _disarm(self, Connection conn)
