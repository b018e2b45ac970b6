# RFC 6298 arithmetic, compiled: the engine samples and reads the RTO per ACK batch.

cdef class RttEstimator:
    cdef public double initial_rto, min_rto, max_rto, granularity, k, alpha, beta
    cdef public double rto
    cdef public double min_rtt          # the smallest sample (RACK.min_RTT, RFC 8985 6.1)
    cdef public int backoff_count
    cdef readonly bint has_sample       # srtt / rttvar are valid
    cdef double _srtt, _rttvar

    cdef double _clamp(self, double rto) noexcept
    cpdef sample(self, double rtt)
    cpdef double backoff(self)
    cpdef double on_syn_timeout_fallback(self)
