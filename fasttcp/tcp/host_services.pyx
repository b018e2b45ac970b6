# cython: language_level=3
"""The interface a connection uses to reach its host (declared in host_services.pxd).

This class only names the operations: :class:`fasttcp.host.host.Host` implements them.
"""
COMPILED = True

# Counter names for Host.stats(), by Count value: the enum's names without the prefix.
COUNT_NAMES = tuple(c.name[len("COUNT_"):].lower() for c in Count if c != COUNT_KINDS)
if len(COUNT_NAMES) != COUNT_KINDS:
    raise ImportError("fasttcp.tcp.host_services: Count values are not 0..COUNT_KINDS-1")


cdef class HostServices:
    """What a connection may ask of its host; implemented by fasttcp.host.host.Host."""

    cdef int count(self, Count what) except -1:
        raise NotImplementedError

    cdef int trace_event(self, object conn, Count what) except -1:
        return 0

    cdef int emit(self, object packet) except -1:
        raise NotImplementedError

    cdef int want_output(self, object conn) except -1:
        raise NotImplementedError

    cdef int wake(self, object conn) except -1:
        raise NotImplementedError

    cdef SendRing take_ring(self):
        raise NotImplementedError

    cdef Reassembler take_reassembler(self):
        raise NotImplementedError

    cdef bint return_ring(self, SendRing ring) except -1:
        raise NotImplementedError

    cdef bint return_reassembler(self, Reassembler reasm) except -1:
        raise NotImplementedError

    cdef uint32_t ts_offset(self, uint16_t lport, uint32_t rip, uint16_t rport) except? 0:
        raise NotImplementedError

    cdef uint32_t ts_offset6(self, uint16_t lport, bytes rip, uint16_t rport) except? 0:
        raise NotImplementedError

    cdef object make_congestion(self, int mss):
        raise NotImplementedError

    cdef bint challenge_ack_allowed(self, double now) except -1:
        raise NotImplementedError

    cdef bint time_wait_full(self) except -1:
        raise NotImplementedError

    cdef bint time_wait_compact(self, object conn) except -1:
        raise NotImplementedError

    cdef int hold_time_wait(self, object conn, object record) except -1:
        raise NotImplementedError

    cdef int drop_time_wait(self, object record) except -1:
        raise NotImplementedError

    cdef bint adopt_orphan(self, object conn) except -1:
        raise NotImplementedError

    cdef int queue_for_accept(self, object conn) except -1:
        raise NotImplementedError

    cdef int state_changed(self, object conn, int old, int new) except -1:
        raise NotImplementedError

    cdef int input_fragment(self, object packet, double now) except -1:
        raise NotImplementedError

    cdef int input_slow(self, Packet pk, double now) except -1:
        raise NotImplementedError

    cdef int count_batch(self, uint64_t packets, uint64_t fast,
                         const uint64_t* drops) except -1:
        raise NotImplementedError
