# C-level layout of the batched TUN reader/writer (see _tunio.pyx).
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from cpython.buffer cimport Py_buffer


cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    int pthread_create(pthread_t* thread, const void* attr, void* (*start)(void*) noexcept nogil,
                       void* arg)
    int pthread_join(pthread_t thread, void** retval)
    int pthread_mutex_init(pthread_mutex_t* m, const void* attr)
    int pthread_mutex_destroy(pthread_mutex_t* m)
    int pthread_mutex_lock(pthread_mutex_t* m)
    int pthread_mutex_unlock(pthread_mutex_t* m)
    int pthread_cond_init(pthread_cond_t* c, const void* attr)
    int pthread_cond_destroy(pthread_cond_t* c)
    int pthread_cond_wait(pthread_cond_t* c, pthread_mutex_t* m)
    int pthread_cond_signal(pthread_cond_t* c)
    int pthread_cond_broadcast(pthread_cond_t* c)
    int pthread_atfork(void (*prepare)() noexcept nogil, void (*parent)() noexcept nogil,
                       void (*child)() noexcept nogil)


# Write counters. Without a writer thread the caller's thread owns them; with one, that
# thread does (the Python side only reads them).
ctypedef struct TxStats:
    uint64_t packets, bytes, gso_packets, dropped, errors, blocked
    int last_errno


# The writer thread's queue: a byte ring of records (TxRecord + packet, 8-byte aligned)
# between the event loop (producer, under `lock`) and one C thread (consumer) that
# write()s them. `head` and `tail` count bytes ever queued / written, so head - tail is
# the fill. The thread never touches Python objects, so it never needs the GIL.
ctypedef struct TxRecord:
    uint32_t length         # packet bytes that follow; TX_SKIP: the rest of the ring is unused
    int32_t gso             # as send_batch's gso argument


ctypedef struct TxQueue:
    pthread_mutex_t lock
    pthread_cond_t wake     # signalled when records arrive or on stop (thread waits)
    pthread_cond_t idle     # broadcast when the thread has written everything queued
    unsigned char* mem
    size_t size
    size_t head, tail
    int waiting             # the thread sleeps on `wake`
    int stop
    int fd
    int vnet
    int64_t spin_ns         # poll this long for more before sleeping
    unsigned long generation  # _fork_generation when started (a forked child differs)
    pthread_t thread
    TxStats st


# The 10-byte header that precedes every frame on an IFF_VNET_HDR fd (virtio 1.0 spec,
# section 5.1.6 "struct virtio_net_hdr"; little-endian once TUNSETVNETLE is set).
ctypedef struct VnetHdr:
    uint8_t flags           # VNET_F_*
    uint8_t gso_type        # VNET_GSO_*
    uint16_t hdr_len        # headers to copy when segmenting (not to be trusted on input)
    uint16_t gso_size       # payload bytes per segment (the MSS)
    uint16_t csum_start     # where checksumming starts (the TCP header)
    uint16_t csum_offset    # where the result goes, from csum_start


cdef enum:
    VNET_HDR_LEN = 10
    VNET_F_NEEDS_CSUM = 1   # checksum field holds the pseudo-header sum only
    VNET_F_DATA_VALID = 2   # the kernel verified the checksum
    VNET_GSO_NONE = 0
    VNET_GSO_TCPV4 = 1
    VNET_GSO_TCPV6 = 4
    VNET_GSO_ECN = 0x80

    # per-packet receive flags (TunIO.last_rx_flags)
    RX_CSUM_PARTIAL = 1     # kernel-made, TCP checksum field = pseudo-header sum only
    RX_CSUM_VALID = 2       # transport checksum verified (by the kernel or by the link)
    RX_GSO = 4              # a super-packet: several MSS-sized segments in one

    PARSE_NO_TCP_CSUM = 1   # as in fasttcp.wire: SegmentBatch.parse flag

    # The largest frame one TUN read returns: an skb is at most 64 KiB (the IPv4 total
    # length and the IPv6 payload length are 16 bits: 40 + 65535 fits too) plus the
    # virtio header; rounded up to keep frames 64-byte aligned.
    TUN_MAX_FRAME = 65536 + 64

    TX_SKIP = 0xFFFFFFFF


cdef class TunIO:
    cdef int fd
    cdef bint vnet                  # every read/write carries a VnetHdr
    cdef readonly Py_ssize_t batch  # default and largest recv_batch(max)
    cdef readonly Py_ssize_t frame  # the largest frame one read() may return
    cdef public bint complete_checksums
    cdef object arena               # _Arena: the receive buffer (kept alive by views)
    cdef unsigned char* buf         # arena memory
    cdef Py_ssize_t buf_size
    cdef object arena_view          # memoryview over the arena, for copy=False
    cdef Py_ssize_t* offs           # per received packet: offset, length, RX_* flags
    cdef Py_ssize_t* lens
    cdef uint8_t* rflags
    cdef Py_ssize_t last_count
    # send side scratch, grown to the largest batch seen
    cdef const unsigned char** tx_ptr
    cdef Py_ssize_t* tx_len
    # a SplitPacket's payload pieces (n = 0 for a plain packet)
    cdef const unsigned char** tx_p1
    cdef Py_ssize_t* tx_n1
    cdef const unsigned char** tx_p2
    cdef Py_ssize_t* tx_n2
    cdef Py_buffer* tx_views
    cdef uint8_t* tx_held
    cdef Py_ssize_t tx_cap
    cdef int rx_errno
    # counters
    cdef readonly uint64_t rx_packets, rx_bytes, rx_gso_packets, rx_non_ip, rx_errors
    cdef readonly uint64_t rx_csum_errors, rx_calls
    cdef TxStats tx                 # writes done by send_batch itself (no writer thread)
    cdef TxQueue* txq               # the writer thread, when started
    cdef readonly uint64_t tx_calls, tx_queue_drops

    cdef Py_ssize_t _read_loop(self, Py_ssize_t maxn, Py_ssize_t max_bytes) noexcept nogil
    cdef bint _accept_frame(self, unsigned char* pkt, Py_ssize_t plen,
                            const unsigned char* hdr, uint8_t* fl) noexcept nogil
    cdef Py_ssize_t _write_loop(self, Py_ssize_t n, int gso) noexcept nogil
    cdef TxQueue* _live_txq(self) noexcept nogil
    cdef Py_ssize_t _enqueue(self, Py_ssize_t n, int gso) noexcept nogil
    cdef void _stop_thread(self) noexcept nogil
    cdef int _reserve_tx(self, Py_ssize_t n) except -1
