# A compact TIME-WAIT record (as Linux's inet_timewait_sock): what a closed connection
# needs for its 2*MSL, in C fields only, so Python's cyclic GC does not track it (see
# _timewait.pyx and docs/ARCHITECTURE.md, "TIME-WAIT").
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t

from fasttcp.tcp.host_services cimport HostServices
from fasttcp.tcp.tcb cimport Tcb
from fasttcp.wire._wire cimport Packet


cdef class TimeWait:
    cdef readonly uint8_t ipver
    cdef uint32_t lip, rip              # IPv4 addresses as numbers
    cdef unsigned char lip6[16]         # IPv6 addresses (ipver 6)
    cdef unsigned char rip6[16]
    cdef readonly uint16_t lport, rport
    cdef uint32_t snd_nxt               # SND.NXT (everything we sent is acknowledged)
    cdef uint32_t rcv_nxt               # RCV.NXT (past the peer's FIN)
    cdef int64_t rcv_wnd                # RCV.WND: what the acceptability test uses
    cdef uint16_t window                # the window field of our ACKs
    cdef int snd_wscale
    cdef int64_t max_snd_wnd            # RFC 5961 5.2's MAX.SND.WND
    cdef uint32_t snd_wl1, snd_wl2
    cdef bint ts_ok
    cdef uint32_t ts_recent, ts_offset
    cdef double ts_recent_at
    cdef bint sack_ok
    cdef bint dsack                     # a D-SACK block is due on the next ACK
    cdef uint32_t dsack_start, dsack_end
    cdef uint32_t irs                   # the peer's ISN (a D-SACK block ends above it)
    cdef bint ece                       # RFC 3168 6.1.3: ECE still owed on our ACKs
    cdef int ttl
    cdef double invalid_ack_at
    cdef readonly double deadline       # the end of 2*MSL
    cdef readonly bint live             # still in the host's table
    cdef int queued                     # entries in the host's expiry FIFO

    cdef bytes ack_packet(self, double now)
    cdef int _ack(self, HostServices host) except -1
    cdef bint _answered_recently(self, double interval, double now)
    cdef int _invalid_ack(self, HostServices host, int64_t seg_len, double now) except -1
    cdef int _challenge_ack(self, HostServices host, double now) except -1
    cdef int segment(self, HostServices host, Packet seg, double now) except -1
    cdef int64_t reopen_iss(self, HostServices host, Packet seg) except -2


cdef TimeWait make_time_wait(Tcb c, uint16_t window, double deadline)
