"""Batched, non-blocking reads and writes on a TUN file descriptor.

One ``recv_batch`` call reads frames with read() in a C loop, with the GIL released, until
the queue is empty (EAGAIN) or the batch (count, or bytes) is full; one ``send_batch`` call
writes a whole list with writev() the same way - or, with the writer thread
(``start_tx_thread``), copies it into that thread's ring and returns. Python objects are
made only before and after the loops.
Device setup (TUNSETIFF, offload flags, addresses) lives in ``tun.py``; this module only
moves bytes.

With ``vnet=True`` (IFF_VNET_HDR) every frame carries a 10-byte virtio_net_hdr (see
_tunio.pxd). What the kernel may send us then, and what we do with it:

- ``NEEDS_CSUM``: a locally generated packet whose TCP checksum field holds only the
  pseudo-header sum (CHECKSUM_PARTIAL). It never crossed a wire, so it is delivered as is,
  flagged ``RX_CSUM_PARTIAL`` - or its checksum is filled in when ``complete_checksums``.
- ``DATA_VALID``: the kernel verified the checksum; flagged ``RX_CSUM_VALID``.
- neither: e.g. a forwarded TCP packet; the link verifies its TCP checksum itself (and
  drops it, counting ``rx_csum_errors``, when wrong), so that in vnet mode *every* TCP
  packet handed up may be parsed with ``PARSE_NO_TCP_CSUM``. The same for UDP (the kernel
  marks a local UDP datagram NEEDS_CSUM as it does TCP), which that flag covers too.
- ``gso_type != NONE``: a TSO super-packet of up to 64 KiB, delivered whole as one packet,
  flagged ``RX_GSO``.
"""
from cpython.buffer cimport PyBuffer_FillInfo, PyBuffer_Release
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.unistd cimport read

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX

from fasttcp.wire._wire cimport SplitPacket, get_buffer

import os

COMPILED = True

cdef extern from "<errno.h>" nogil:
    int EWOULDBLOCK

cdef extern from *:
    """
    /* The writer thread polls the ring's head for a moment before it sleeps. */
    static inline void ft_cpu_relax(void) {
    #if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
    #elif defined(__aarch64__)
        __asm__ __volatile__("yield");
    #endif
    }
    static inline size_t ft_load_acquire(const size_t* p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void ft_store_release(size_t* p, size_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    """
    void ft_cpu_relax() noexcept nogil
    size_t ft_load_acquire(const size_t* p) noexcept nogil
    void ft_store_release(size_t* p, size_t v) noexcept nogil

cdef extern from "<sys/uio.h>" nogil:
    cdef struct iovec:
        void* iov_base
        size_t iov_len
    ssize_t writev(int fd, const iovec* iov, int iovcnt)


# Public constants for Python callers.
HDR_LEN = VNET_HDR_LEN
RX_FLAG_CSUM_PARTIAL = RX_CSUM_PARTIAL
RX_FLAG_CSUM_VALID = RX_CSUM_VALID
RX_FLAG_GSO = RX_GSO

# ============================================================================================
# Internet checksum (RFC 1071)
# ============================================================================================
# The wire layer's C checksum (AVX2 / add-with-carry / portable, picked at import), included
# by path so this module needs no extra include directory. Sums are in native byte order:
# the folded result stored natively is the network-order field (RFC 1071 section 2(B)).

cdef extern from "../wire/_csum.h" nogil:
    uint64_t ft_csum_partial(const unsigned char* p, size_t n, uint64_t acc)
    uint16_t ft_csum_fold(uint64_t s)
    void ft_csum_select(int force)

ft_csum_select(0)


cdef inline uint64_t csum_add(const unsigned char* p, Py_ssize_t n, uint64_t acc) noexcept nogil:
    return ft_csum_partial(p, <size_t>n, acc)


cdef inline uint16_t csum_fold(uint64_t acc) noexcept nogil:
    return ft_csum_fold(acc)


cdef inline uint64_t pseudo_sum(const unsigned char* ip, uint32_t l4_len) noexcept nogil:
    """Sum of the IPv4 pseudo-header (RFC 9293 section 3.1) of the packet at ``ip``."""
    cdef unsigned char tail[4]
    cdef uint32_t w
    cdef uint64_t acc = csum_add(ip + 12, 8, 0)     # source and destination address
    tail[0] = 0
    tail[1] = ip[9]                                # protocol
    tail[2] = (l4_len >> 8) & 0xFF
    tail[3] = l4_len & 0xFF
    memcpy(&w, tail, 4)
    return acc + w


cdef inline uint64_t pseudo_sum6(const unsigned char* ip, uint32_t l4_len,
                                 uint8_t nh) noexcept nogil:
    """Sum of the IPv6 pseudo-header (RFC 8200 section 8.1) of the packet at ``ip``:
    source and destination address, the upper-layer length, three zero bytes and the
    upper-layer protocol ``nh``."""
    cdef unsigned char tail[8]
    cdef uint64_t w
    cdef uint64_t acc = csum_add(ip + 8, 32, 0)     # source and destination address
    tail[0] = (l4_len >> 24) & 0xFF
    tail[1] = (l4_len >> 16) & 0xFF
    tail[2] = (l4_len >> 8) & 0xFF
    tail[3] = l4_len & 0xFF
    tail[4] = 0
    tail[5] = 0
    tail[6] = 0
    tail[7] = nh
    memcpy(&w, tail, 8)
    return csum_add(tail, 8, acc)


cdef inline uint16_t le16(const unsigned char* p) noexcept nogil:
    return <uint16_t>(p[0] | (p[1] << 8))


cdef inline void put_le16(unsigned char* p, uint16_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = v >> 8


cdef inline bint tcp_span(const unsigned char* pkt, Py_ssize_t plen, Py_ssize_t* ihl,
                          Py_ssize_t* tot) noexcept nogil:
    """True for an unfragmented IPv4/TCP packet whose headers fit: the same conditions
    the wire parser needs before it looks at the TCP checksum."""
    if plen < 20 or (pkt[0] >> 4) != 4 or pkt[9] != 6:
        return False
    ihl[0] = (pkt[0] & 0x0F) * 4
    tot[0] = (pkt[2] << 8) | pkt[3]
    if ihl[0] < 20 or tot[0] > plen or tot[0] < ihl[0] + 20:
        return False
    if ((pkt[6] & 0x3F) << 8 | pkt[7]) != 0:       # MF set or a fragment offset
        return False
    return True


cdef inline int udp_check(const unsigned char* pkt, const unsigned char* u, Py_ssize_t room,
                          bint v6) noexcept nogil:
    """A UDP datagram the kernel did not vouch for (RFC 768): 1 when its checksum is
    wrong, else 0. `room` is the IP payload length; a UDP length outside 8..room, and an
    IPv4 checksum of 0 (none sent) or an IPv6 one of 0 (invalid, RFC 8200 8.1), are left
    to the wire parser, which checks them under any parse flags."""
    cdef Py_ssize_t ulen
    if room < 8:
        return 0
    ulen = (u[4] << 8) | u[5]
    if ulen < 8 or ulen > room or (u[6] == 0 and u[7] == 0):
        return 0
    if v6:
        return csum_fold(csum_add(u, ulen, pseudo_sum6(pkt, <uint32_t>ulen, 17))) != 0xFFFF
    return csum_fold(csum_add(u, ulen, pseudo_sum(pkt, <uint32_t>ulen))) != 0xFFFF


cdef inline bint tcp_span6(const unsigned char* pkt, Py_ssize_t plen,
                           Py_ssize_t* tot) noexcept nogil:
    """True for an IPv6/TCP packet with no extension headers (the TCP header at offset
    40, as every IPv6 segment fasttcp builds) whose headers fit; ``tot`` = 40 + the
    payload length."""
    if plen < 60 or (pkt[0] >> 4) != 6 or pkt[6] != 6:
        return False
    tot[0] = 40 + ((pkt[4] << 8) | pkt[5])
    return tot[0] <= plen and tot[0] >= 60


cdef enum:
    # ip6_upper's results
    L6_UPPER = 0       # `off`/`nh` name the upper-layer header (TCP, UDP, ICMPv6, ...)
    L6_FRAGMENT = 1    # a fragment: left to reassembly, which verifies the whole
    # truncated, over-long chain, payload-length lie, or a routing header still in
    # transit: nothing a host takes (RFC 8200 4.4)
    L6_BAD = 2
    # The longest extension-header chain walked: the same bound as the wire parser's
    # (IPV6_MAX_EXT_HEADERS), so a chain one drops the other drops too.
    IP6_MAX_EXT = 8


cdef int ip6_upper(const unsigned char* pkt, Py_ssize_t plen, Py_ssize_t* off,
                   Py_ssize_t* tot, uint8_t* nh) noexcept nogil:
    """Walk an IPv6 packet's extension headers (RFC 8200 4.1: hop-by-hop, routing,
    destination options, and AH, RFC 4302 2.2) to its upper-layer header."""
    cdef Py_ssize_t o = 40, n
    cdef int hops = 0
    cdef uint8_t h
    if plen < 40:
        return L6_BAD
    tot[0] = 40 + ((pkt[4] << 8) | pkt[5])
    if tot[0] > plen:
        return L6_BAD
    h = pkt[6]
    while h == 0 or h == 43 or h == 60 or h == 51 or h == 44:
        if h == 44:
            return L6_FRAGMENT
        hops += 1
        if hops > IP6_MAX_EXT or o + 8 > tot[0]:
            return L6_BAD
        if h == 51:
            n = (<Py_ssize_t>pkt[o + 1] + 2) * 4
        else:
            n = (<Py_ssize_t>pkt[o + 1] + 1) * 8
        if h == 43 and pkt[o + 3] != 0:
            return L6_BAD                 # segments left: a router's job, not a host's
        if o + n > tot[0]:
            return L6_BAD
        h = pkt[o]
        o += n
    off[0] = o
    nh[0] = h
    return L6_UPPER


# ============================================================================================
# Writing one packet (send_batch's loop and the writer thread share it)
# ============================================================================================

cdef enum:
    TX_SENT = 0
    TX_FULL = 1        # EAGAIN: the device queue is full
    TX_REFUSED = 2     # the kernel refused this packet (counted in errors)


cdef inline int set_iov(iovec* iov, int i, const void* p, Py_ssize_t n) noexcept nogil:
    """iov[i] = (p, n); returns i + 1."""
    iov[i].iov_base = <void*>p
    iov[i].iov_len = <size_t>n
    return i + 1


cdef int tx_write_one(int fd, bint vnet, const unsigned char* p, Py_ssize_t plen,
                      const unsigned char* p1, Py_ssize_t n1, const unsigned char* p2,
                      Py_ssize_t n2, int gso, TxStats* st) noexcept nogil:
    """write() one IP packet (with its virtio header on a vnet fd); see send_batch.
    The packet is `p` followed by the pieces p1/n1 and p2/n2 (n = 0: none), which hold
    payload only (a SplitPacket: `p` has all the headers)."""
    cdef unsigned char hdr[VNET_HDR_LEN]
    cdef unsigned char head[128]      # IPv4 (<= 60) + TCP (<= 60) headers of a GSO packet
    cdef iovec iov[5]
    cdef Py_ssize_t ihl, tot, hl, g
    cdef Py_ssize_t total = plen + n1 + n2
    cdef ssize_t r
    cdef int cnt = 0, e
    cdef uint16_t ps
    cdef bint is_gso = False, v6 = False
    if vnet:
        memset(hdr, 0, VNET_HDR_LEN)
        if gso != 0 and plen >= 20:
            if (p[0] >> 4) == 4:
                is_gso = tcp_span(p, total, &ihl, &tot) and tot == total
            elif plen >= 60:
                # IPv6: fasttcp's segments carry no extension headers (TCP at 40)
                v6 = tcp_span6(p, total, &tot) and tot == total
                is_gso = v6
                ihl = 40
        if is_gso:
            is_gso = False
            hl = ihl + (p[ihl + 12] >> 4) * 4
            # gso < 0: segments fill an MTU of -gso bytes whatever the headers are
            g = gso if gso > 0 else -gso - hl
            if hl >= ihl + 20 and hl <= tot and hl <= plen and g > 0 and tot - hl > g:
                is_gso = True
        if is_gso:
            # A TCP super-segment for the kernel to cut into `gso`-byte segments (or take
            # whole, for local delivery). The checksum is left to the kernel: the field
            # must hold the pseudo-header sum (CHECKSUM_PARTIAL), and csum_start is the
            # TCP header (20+ for IPv4, 40 for IPv6: virtio 1.0 5.1.6.2).
            hdr[0] = VNET_F_NEEDS_CSUM
            hdr[1] = VNET_GSO_TCPV6 if v6 else VNET_GSO_TCPV4
            if p[ihl + 13] & 0x80:
                # CWR on a super-segment (RFC 3168 6.1.2): as Linux's tcp_ecn_send
                # (SKB_GSO_TCP_ECN, virtio's GSO_ECN), so that segmentation puts CWR on
                # the first segment only and hardware without TSO_ECN does not get it.
                hdr[1] |= VNET_GSO_ECN
            put_le16(hdr + 2, <uint16_t>hl)
            put_le16(hdr + 4, <uint16_t>g)
            put_le16(hdr + 6, <uint16_t>ihl)
            put_le16(hdr + 8, 16)
            memcpy(head, p, hl)
            if v6:
                ps = csum_fold(pseudo_sum6(head, tot - 40, 6))
            else:
                ps = csum_fold(pseudo_sum(head, tot - ihl))
            memcpy(head + ihl + 16, &ps, 2)
        cnt = set_iov(iov, 0, hdr, VNET_HDR_LEN)
    if is_gso:
        # the patched headers, then whatever of `p` follows them (none for a SplitPacket)
        cnt = set_iov(iov, cnt, head, hl)
        if plen > hl:
            cnt = set_iov(iov, cnt, p + hl, plen - hl)
    else:
        cnt = set_iov(iov, cnt, p, plen)
    if n1 > 0:
        cnt = set_iov(iov, cnt, p1, n1)
    if n2 > 0:
        cnt = set_iov(iov, cnt, p2, n2)
    while True:
        r = writev(fd, iov, cnt)
        if r >= 0 or errno != EINTR:
            break
    if r < 0:
        e = errno
        if e == EAGAIN or e == EWOULDBLOCK:
            return TX_FULL
        # Refused (malformed packet, device gone): drop this one.
        st.last_errno = e
        st.errors += 1
        st.dropped += 1
        return TX_REFUSED
    st.packets += 1
    st.bytes += total
    if is_gso:
        st.gso_packets += 1
    return TX_SENT


cdef void tx_stats_add(TxStats* into, const TxStats* more) noexcept nogil:
    into.packets += more.packets
    into.bytes += more.bytes
    into.gso_packets += more.gso_packets
    into.dropped += more.dropped
    into.errors += more.errors
    into.blocked += more.blocked
    if more.last_errno:
        into.last_errno = more.last_errno


cdef inline int64_t mono_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef void tx_spin(TxQueue* q, size_t seen) noexcept nogil:
    """Poll (without the lock) until the head moves or q.spin_ns pass."""
    cdef int64_t end = mono_ns() + q.spin_ns
    cdef int _spin
    while ft_load_acquire(&q.head) == seen:
        for _spin in range(64):
            ft_cpu_relax()
        if mono_ns() > end:
            return


cdef void* tx_thread_main(void* arg) noexcept nogil:
    """The writer thread: write the records between tail and head, in order, outside the
    lock; sleep on `wake` when there are none; end on `stop` once everything is written."""
    cdef TxQueue* q = <TxQueue*>arg
    cdef size_t h, pos, off
    cdef TxRecord rec
    cdef bint full
    pthread_mutex_lock(&q.lock)
    while True:
        while q.head == q.tail and not q.stop:
            q.waiting = 1
            pthread_cond_wait(&q.wake, &q.lock)
        q.waiting = 0
        if q.head == q.tail:
            break                                    # stop, and nothing left
        h = q.head
        pthread_mutex_unlock(&q.lock)
        pos = q.tail                                 # only this thread moves tail
        full = False
        while pos != h:
            off = pos % q.size
            memcpy(&rec, q.mem + off, sizeof(TxRecord))
            if rec.length == TX_SKIP:
                pos += q.size - off
                continue
            if full:
                q.st.dropped += 1                    # the device queue was full: drop
            elif tx_write_one(q.fd, q.vnet, q.mem + off + sizeof(TxRecord), rec.length,
                              NULL, 0, NULL, 0, rec.gso, &q.st) == TX_FULL:
                full = True
                q.st.blocked += 1
                q.st.dropped += 1
            pos += sizeof(TxRecord) + ((<size_t>rec.length + 7) & ~(<size_t>7))
        pthread_mutex_lock(&q.lock)
        q.tail = h
        if q.tail == q.head:
            pthread_cond_broadcast(&q.idle)
            if q.spin_ns > 0 and not q.stop:
                # Busy traffic sends the next batch soon: poll for it a moment rather
                # than sleep, so the event loop seldom pays for a futex wake-up.
                pthread_mutex_unlock(&q.lock)
                tx_spin(q, h)
                pthread_mutex_lock(&q.lock)
    pthread_cond_broadcast(&q.idle)
    pthread_mutex_unlock(&q.lock)
    return NULL


# A forked child has the queue's memory but not its thread (and perhaps a lock held at the
# fork): there the link forgets the queue and writes inline again.
cdef unsigned long _fork_generation = 0


cdef void _after_fork_in_child() noexcept nogil:
    global _fork_generation
    _fork_generation += 1


pthread_atfork(NULL, NULL, _after_fork_in_child)


cdef void* grow(void* p, size_t size) except NULL:
    """realloc, or MemoryError (the old block stays valid and owned by the caller)."""
    cdef void* q = realloc(p, size)
    if q == NULL:
        raise MemoryError()
    return q


cdef class _Arena:
    """A fixed block of memory that exports itself as a writable buffer."""
    cdef unsigned char* mem
    cdef Py_ssize_t size

    def __cinit__(self, Py_ssize_t size):
        self.mem = <unsigned char*>malloc(size)
        if self.mem == NULL:
            raise MemoryError()
        self.size = size

    def __dealloc__(self):
        free(self.mem)

    def __getbuffer__(self, Py_buffer* view, int flags):
        PyBuffer_FillInfo(view, self, self.mem, self.size, 0, flags)

    def __releasebuffer__(self, Py_buffer* view):
        pass


# ============================================================================================
# TunIO
# ============================================================================================

cdef class TunIO:
    """Batched I/O on an open, non-blocking TUN fd (the caller owns and closes the fd).

    ``recv_batch(max)`` returns a list of IP packets (IPv4 or IPv6); per-packet ``RX_*``
    flags of the last batch are in :attr:`last_rx_flags`, and :attr:`parse_flags` says how
    the batch may be parsed. ``send_batch(packets, gso=0)`` writes a list and returns how many
    packets were written; the rest were dropped (``tx_dropped``). With the writer thread it
    queues them instead (see :meth:`start_tx_thread`).

    One thread at a time: calls are not synchronised with each other. Call
    :meth:`detach` (which ends the writer thread) before closing the fd.
    """

    def __cinit__(self, int fd, bint vnet, Py_ssize_t batch=64, bint complete_checksums=False):
        if fd < 0:
            raise ValueError("fd must be an open file descriptor")
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.fd = fd
        self.vnet = vnet
        self.batch = batch
        self.complete_checksums = complete_checksums
        self.frame = TUN_MAX_FRAME
        # Frames are packed back to back (64-byte aligned), so a batch of small packets
        # touches little memory; the arena still holds `batch` frames of the largest size.
        self.buf_size = batch * TUN_MAX_FRAME
        self.arena = _Arena(self.buf_size)
        self.buf = (<_Arena>self.arena).mem
        self.arena_view = memoryview(self.arena)
        self.offs = <Py_ssize_t*>malloc(batch * sizeof(Py_ssize_t))
        self.lens = <Py_ssize_t*>malloc(batch * sizeof(Py_ssize_t))
        self.rflags = <uint8_t*>malloc(batch)
        if self.offs == NULL or self.lens == NULL or self.rflags == NULL:
            raise MemoryError()
        self._reserve_tx(batch)

    def __dealloc__(self):
        self._stop_thread()          # it holds no reference to us, only to its queue
        free(self.offs)
        free(self.lens)
        free(self.rflags)
        free(self.tx_ptr)
        free(self.tx_len)
        free(self.tx_views)
        free(self.tx_held)
        free(self.tx_p1)
        free(self.tx_n1)
        free(self.tx_p2)
        free(self.tx_n2)

    cdef int _reserve_tx(self, Py_ssize_t n) except -1:
        """Grow the per-packet send scratch arrays to n entries."""
        cdef size_t np = n * sizeof(unsigned char*), nl = n * sizeof(Py_ssize_t)
        if n <= self.tx_cap:
            return 0
        self.tx_ptr = <const unsigned char**>grow(<void*>self.tx_ptr, np)
        self.tx_len = <Py_ssize_t*>grow(self.tx_len, nl)
        self.tx_views = <Py_buffer*>grow(self.tx_views, n * sizeof(Py_buffer))
        self.tx_held = <uint8_t*>grow(self.tx_held, n)
        self.tx_p1 = <const unsigned char**>grow(<void*>self.tx_p1, np)
        self.tx_p2 = <const unsigned char**>grow(<void*>self.tx_p2, np)
        self.tx_n1 = <Py_ssize_t*>grow(self.tx_n1, nl)
        self.tx_n2 = <Py_ssize_t*>grow(self.tx_n2, nl)
        memset(self.tx_held, 0, n)
        self.tx_cap = n
        return 0

    # ----------------------------------------------------------------------------------
    # receive
    # ----------------------------------------------------------------------------------

    @property
    def vnet_hdr(self) -> bool:
        """Whether every frame carries a virtio_net_hdr (IFF_VNET_HDR)."""
        return self.vnet

    @property
    def parse_flags(self) -> int:
        """Flags for ``SegmentBatch.parse`` valid for every batch from this link:
        ``PARSE_NO_TCP_CSUM`` in vnet mode (each TCP packet was verified by the kernel or
        by the link, or is a kernel-made partial-checksum packet), else 0."""
        return PARSE_NO_TCP_CSUM if self.vnet else 0

    @property
    def last_rx_flags(self) -> bytes:
        """One byte of ``RX_*`` flags per packet of the last ``recv_batch`` result."""
        return PyBytes_FromStringAndSize(<char*>self.rflags, self.last_count)

    cdef bint _accept_frame(self, unsigned char* pkt, Py_ssize_t plen,
                            const unsigned char* hdr, uint8_t* fl) noexcept nogil:
        """Classify one received packet; False to drop it (counted)."""
        cdef Py_ssize_t cs, co, ihl, tot
        cdef uint16_t r
        cdef uint8_t nh
        cdef int v = pkt[0] >> 4 if plen > 0 else 0
        fl[0] = 0
        if (v != 4 or plen < 20) and (v != 6 or plen < 40):
            self.rx_non_ip += 1                  # neither IPv4 nor IPv6
            return False
        if hdr == NULL:
            return True
        if hdr[1] != VNET_GSO_NONE:
            fl[0] |= RX_GSO
            self.rx_gso_packets += 1
        if hdr[0] & VNET_F_NEEDS_CSUM:
            cs = le16(hdr + 6)
            co = le16(hdr + 8)
            if cs + co + 2 > plen:
                self.rx_errors += 1
                return False
            if self.complete_checksums:
                # What the NIC would do (CHECKSUM_PARTIAL): sum from csum_start to the
                # end, over the pseudo-header sum already in the field, and store it.
                r = ~csum_fold(csum_add(pkt + cs, plen - cs, 0))
                memcpy(pkt + cs + co, &r, 2)
                fl[0] |= RX_CSUM_VALID
            else:
                fl[0] |= RX_CSUM_PARTIAL
        elif hdr[0] & VNET_F_DATA_VALID:
            fl[0] |= RX_CSUM_VALID
        elif v == 4:
            ihl = (pkt[0] & 0x0F) * 4
            tot = (pkt[2] << 8) | pkt[3]
            if (pkt[9] == 17 and ihl >= 20 and tot <= plen and tot >= ihl
                    and ((pkt[6] & 0x3F) << 8 | pkt[7]) == 0):
                # UDP (issue 15): the same promise as for TCP under PARSE_NO_TCP_CSUM.
                if udp_check(pkt, pkt + ihl, tot - ihl, False):
                    self.rx_csum_errors += 1
                    return False
            elif tcp_span(pkt, plen, &ihl, &tot):
                # Not vouched for by the kernel: verify here, so the whole batch can skip
                # it.
                if csum_fold(csum_add(pkt + ihl, tot - ihl,
                                      pseudo_sum(pkt, tot - ihl))) != 0xFFFF:
                    self.rx_csum_errors += 1
                    return False
                fl[0] |= RX_CSUM_VALID
        else:
            # IPv6: the same, past the extension headers. A chain the wire parser would
            # drop as well (the same bound) is dropped here: no TCP segment goes up
            # unverified under PARSE_NO_TCP_CSUM.
            co = ip6_upper(pkt, plen, &cs, &tot, &nh)
            if co == L6_BAD:
                self.rx_errors += 1
                return False
            if co == L6_UPPER and nh == 6:
                if tot - cs < 20:
                    self.rx_errors += 1
                    return False
                if csum_fold(csum_add(pkt + cs, tot - cs,
                                      pseudo_sum6(pkt, tot - cs, 6))) != 0xFFFF:
                    self.rx_csum_errors += 1
                    return False
                fl[0] |= RX_CSUM_VALID
            elif co == L6_UPPER and nh == 17:
                if udp_check(pkt, pkt + cs, tot - cs, True):
                    self.rx_csum_errors += 1
                    return False
        return True

    cdef Py_ssize_t _read_loop(self, Py_ssize_t maxn, Py_ssize_t max_bytes) noexcept nogil:
        cdef Py_ssize_t off = 0, cnt = 0, hl = VNET_HDR_LEN if self.vnet else 0
        cdef Py_ssize_t n, got = 0
        cdef unsigned char* frame
        cdef int e
        self.rx_errno = 0
        while cnt < maxn and got < max_bytes and self.buf_size - off >= TUN_MAX_FRAME:
            frame = self.buf + off
            n = read(self.fd, frame, TUN_MAX_FRAME)
            if n < 0:
                e = errno
                if e == EINTR:
                    continue
                if e != EAGAIN and e != EWOULDBLOCK:
                    self.rx_errno = e
                break
            if n == 0:
                break                     # end of file: not a TUN fd (tests use sockets)
            if n < hl:
                self.rx_errors += 1
                continue
            if not self._accept_frame(frame + hl, n - hl, frame if hl else NULL,
                                      &self.rflags[cnt]):
                continue
            self.offs[cnt] = off + hl
            self.lens[cnt] = n - hl
            self.rx_bytes += n - hl
            got += n - hl
            cnt += 1
            off += (n + 63) & ~(<Py_ssize_t>63)
        self.rx_packets += cnt
        return cnt

    def recv_batch(self, Py_ssize_t max=-1, bint copy=True,
                   Py_ssize_t max_bytes=-1) -> list:   # noqa: A002
        """Read up to ``max`` (default and at most ``batch``) packets without blocking,
        and stop once they hold ``max_bytes`` (the packet that crosses it is kept; 0 or
        less: no byte limit).

        Returns ``bytes`` objects, or with ``copy=False`` memoryviews into the link's
        receive arena that stay valid only until the next ``recv_batch`` call. An empty
        list means nothing was waiting. Raises ``OSError`` for a read error (other than
        EAGAIN) when no packet came before it.
        """
        cdef Py_ssize_t cnt, i, maxn = self.batch if max < 0 or max > self.batch else max
        cdef list out
        cdef object item
        if self.fd < 0:
            raise ValueError("recv_batch on a closed TUN link")
        if max_bytes <= 0:
            max_bytes = PY_SSIZE_T_MAX
        with nogil:
            cnt = self._read_loop(maxn, max_bytes)
        self.last_count = cnt
        self.rx_calls += 1
        if cnt == 0 and self.rx_errno:
            e = self.rx_errno
            raise OSError(e, os.strerror(e))
        out = PyList_New(cnt)
        for i in range(cnt):
            if copy:
                item = PyBytes_FromStringAndSize(<char*>self.buf + self.offs[i], self.lens[i])
            else:
                item = self.arena_view[self.offs[i]:self.offs[i] + self.lens[i]]
            Py_INCREF(item)
            PyList_SET_ITEM(out, i, item)
        return out

    # ----------------------------------------------------------------------------------
    # send
    # ----------------------------------------------------------------------------------

    cdef Py_ssize_t _write_loop(self, Py_ssize_t n, int gso) noexcept nogil:
        cdef Py_ssize_t i, written = 0
        cdef int r
        for i in range(n):
            r = tx_write_one(self.fd, self.vnet, self.tx_ptr[i], self.tx_len[i], self.tx_p1[i],
                             self.tx_n1[i], self.tx_p2[i], self.tx_n2[i], gso, &self.tx)
            if r == TX_FULL:
                # Full: the rest of the batch is dropped; TCP will retransmit.
                self.tx.blocked += 1
                self.tx.dropped += n - i
                break
            if r == TX_SENT:
                written += 1
        return written

    cdef TxQueue* _live_txq(self) noexcept nogil:
        """The writer thread's queue; NULL without one, or in a forked child."""
        if self.txq != NULL and self.txq.generation != _fork_generation:
            self.txq = NULL                  # the parent's: left alone, never freed here
        return self.txq

    cdef Py_ssize_t _enqueue(self, Py_ssize_t n, int gso) noexcept nogil:
        """Copy the pinned packets into the writer thread's ring, in order; from the first
        one that does not fit, the rest are dropped (counted). Returns n: every packet was
        taken, queued or dropped, as a full device queue drops - a caller that retried
        the rest would only find the ring still full."""
        cdef TxQueue* q = self.txq
        cdef Py_ssize_t i, queued = 0, total
        cdef size_t need, off, room, skip
        cdef unsigned char* dst
        cdef TxRecord rec
        pthread_mutex_lock(&q.lock)
        for i in range(n):
            total = self.tx_len[i] + self.tx_n1[i] + self.tx_n2[i]
            need = sizeof(TxRecord) + ((<size_t>total + 7) & ~(<size_t>7))
            off = q.head % q.size
            room = q.size - off
            skip = room if room < need else 0     # a record never wraps: skip to the start
            if q.head - q.tail + skip + need > q.size:
                self.tx_queue_drops += n - i      # full, as a device queue: TCP recovers
                break
            if skip:
                rec.length = TX_SKIP
                rec.gso = 0
                memcpy(q.mem + off, &rec, sizeof(TxRecord))
                off = 0
            rec.length = <uint32_t>total
            rec.gso = gso
            memcpy(q.mem + off, &rec, sizeof(TxRecord))
            dst = q.mem + off + sizeof(TxRecord)
            memcpy(dst, self.tx_ptr[i], self.tx_len[i])
            if self.tx_n1[i]:
                memcpy(dst + self.tx_len[i], self.tx_p1[i], self.tx_n1[i])
            if self.tx_n2[i]:
                memcpy(dst + self.tx_len[i] + self.tx_n1[i], self.tx_p2[i], self.tx_n2[i])
            # published with release order: the spinning thread reads it without the lock
            ft_store_release(&q.head, q.head + skip + need)
            queued += 1
        if queued and q.waiting:
            pthread_cond_signal(&q.wake)
        pthread_mutex_unlock(&q.lock)
        return n

    # ----------------------------------------------------------------------------------
    # the writer thread
    # ----------------------------------------------------------------------------------

    def start_tx_thread(self, Py_ssize_t queue_bytes=8 << 20, double spin=0.0002) -> None:
        """Hand writes to a C thread of this link: ``send_batch`` copies the packets into
        a ring of ``queue_bytes`` and returns; the thread write()s them in order.

        Why: the kernel runs whatever a written packet sets off inside that write() -
        for an ACK to a kernel sender, the sender's next transmit burst (segmentation,
        checksums, queueing to us). On the event loop's thread that work competes with
        reading; on a second core it overlaps with it. Once a packet finds the ring full,
        it and the rest of its batch are dropped (``tx_queue_drops``), as a full device
        queue drops them; ``send_batch`` still returns the whole count (nothing to retry).
        A write the kernel refuses with EAGAIN drops the rest of what the thread had
        taken (``tx_blocked``, ``tx_dropped``), as the inline path drops the rest of its
        batch.

        Having written everything, the thread polls for more for ``spin`` seconds before
        it sleeps (as SO_BUSY_POLL does): waking a sleeping thread costs the event loop
        a futex call and the other CPU an interrupt per batch. An idle link costs nothing.
        """
        cdef TxQueue* q
        if self.fd < 0:
            raise ValueError("start_tx_thread on a closed TUN link")
        if self._live_txq() != NULL:
            return
        if queue_bytes < 2 * TUN_MAX_FRAME:
            raise ValueError(f"queue_bytes must be at least {2 * TUN_MAX_FRAME}")
        q = <TxQueue*>malloc(sizeof(TxQueue))
        if q == NULL:
            raise MemoryError()
        memset(q, 0, sizeof(TxQueue))
        q.size = <size_t>((queue_bytes + 7) & ~7)
        q.mem = <unsigned char*>malloc(q.size)
        if q.mem == NULL:
            free(q)
            raise MemoryError()
        q.fd = self.fd
        q.vnet = self.vnet
        q.generation = _fork_generation
        q.spin_ns = <int64_t>(spin * 1e9) if spin > 0 else 0
        pthread_mutex_init(&q.lock, NULL)
        pthread_cond_init(&q.wake, NULL)
        pthread_cond_init(&q.idle, NULL)
        e = pthread_create(&q.thread, NULL, tx_thread_main, q)
        if e != 0:
            pthread_cond_destroy(&q.idle)
            pthread_cond_destroy(&q.wake)
            pthread_mutex_destroy(&q.lock)
            free(q.mem)
            free(q)
            raise OSError(e, os.strerror(e))
        self.txq = q

    def stop_tx_thread(self) -> None:
        """Write what is queued, then end the writer thread (no-op without one)."""
        with nogil:
            self._stop_thread()

    cdef void _stop_thread(self) noexcept nogil:
        cdef TxQueue* q = self._live_txq()
        if q == NULL:
            return
        pthread_mutex_lock(&q.lock)
        q.stop = 1
        pthread_cond_signal(&q.wake)
        pthread_mutex_unlock(&q.lock)
        pthread_join(q.thread, NULL)
        tx_stats_add(&self.tx, &q.st)         # its counters stay in the totals
        pthread_cond_destroy(&q.idle)
        pthread_cond_destroy(&q.wake)
        pthread_mutex_destroy(&q.lock)
        free(q.mem)
        free(q)
        self.txq = NULL

    def flush(self) -> None:
        """Wait until the writer thread has written everything queued (no-op without one)."""
        cdef TxQueue* q = self._live_txq()
        if q == NULL:
            return
        with nogil:
            pthread_mutex_lock(&q.lock)
            while q.tail != q.head:
                pthread_cond_wait(&q.idle, &q.lock)
            pthread_mutex_unlock(&q.lock)

    @property
    def tx_thread(self) -> bool:
        """Whether writes go through the writer thread (:meth:`start_tx_thread`)."""
        return self._live_txq() != NULL

    @property
    def tx_queued(self) -> int:
        """Bytes waiting in the writer thread's ring (records included)."""
        cdef TxQueue* q = self._live_txq()
        cdef size_t n
        if q == NULL:
            return 0
        with nogil:
            pthread_mutex_lock(&q.lock)
            n = q.head - q.tail
            pthread_mutex_unlock(&q.lock)
        return n

    def send_batch(self, packets, int gso=0) -> int:
        """Write every packet (bytes-like IPv4 or IPv6, or a SplitPacket written with
        scatter I/O); returns how many were written. With a writer thread they are queued for it
        and the whole count is returned: ones that did not fit its ring are dropped
        (``tx_queue_drops``), as a full device queue drops them.

        Packets not written (queue full: EAGAIN; or refused by the kernel) are counted in
        ``tx_dropped``. With ``gso`` > 0 on a vnet link, a TCP packet carrying more than
        ``gso`` payload bytes goes out as one TSO super-segment (``gso_type=TCPV4``,
        ``gso_size=gso``) that the kernel segments or delivers whole; its TCP checksum
        need not be valid (the link stores the pseudo-header sum the kernel expects). An
        IPv6 one (no extension headers: TCP at offset 40) goes out as ``gso_type=TCPV6``.
        """
        cdef Py_ssize_t n, i, written
        cdef object obj
        cdef SplitPacket sp
        if self.fd < 0:
            raise ValueError("send_batch on a closed TUN link")
        if not -65535 <= gso <= 65535:
            raise ValueError("gso must be -65535..65535")
        if gso and not self.vnet:
            raise ValueError("gso needs a link opened with offloads (IFF_VNET_HDR)")
        if type(packets) is not list:
            packets = list(packets)
        n = PyList_GET_SIZE(packets)
        if n == 0:
            return 0
        self._reserve_tx(n)
        self.tx_calls += 1
        try:
            for i in range(n):
                obj = <object>PyList_GET_ITEM(packets, i)
                if type(obj) is SplitPacket and (<SplitPacket>obj).flat is None:
                    # Headers, then views of the engine's send ring: one writev, no copy.
                    # The list keeps it (and the ring) alive through the call.
                    sp = <SplitPacket>obj
                    self.tx_ptr[i] = <const unsigned char*>PyBytes_AS_STRING(sp.head)
                    self.tx_len[i] = PyBytes_GET_SIZE(sp.head)
                    self.tx_p1[i] = sp.p1
                    self.tx_n1[i] = sp.n1
                    self.tx_p2[i] = sp.p2
                    self.tx_n2[i] = sp.n2
                    self.tx_held[i] = 0
                    continue
                self.tx_n1[i] = 0
                self.tx_n2[i] = 0
                # pinned: the write loop reads the bytes without the GIL
                self.tx_held[i] = get_buffer(obj, &self.tx_views[i], &self.tx_ptr[i],
                                             &self.tx_len[i], True)
            with nogil:
                if self._live_txq() != NULL:
                    written = self._enqueue(n, gso)
                else:
                    written = self._write_loop(n, gso)
        finally:
            for i in range(n):
                if self.tx_held[i]:
                    PyBuffer_Release(&self.tx_views[i])
                    self.tx_held[i] = 0
        return written

    # ----------------------------------------------------------------------------------

    def fileno(self) -> int:
        if self.fd < 0:
            raise ValueError("closed TUN link")
        return self.fd

    def detach(self) -> int:
        """Forget the fd (the caller closes it); later calls raise ValueError. A writer
        thread first writes what is queued and ends."""
        with nogil:
            self._stop_thread()
        fd, self.fd = self.fd, -1
        return fd

    def stats(self) -> dict:
        cdef TxStats t = self.tx
        if self._live_txq() != NULL:
            tx_stats_add(&t, &self.txq.st)      # a racy read of the thread's counters
        return {
            "rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes,
            "rx_gso_packets": self.rx_gso_packets, "rx_non_ip": self.rx_non_ip,
            "rx_errors": self.rx_errors, "rx_csum_errors": self.rx_csum_errors,
            "rx_calls": self.rx_calls,
            "tx_packets": t.packets, "tx_bytes": t.bytes,
            "tx_gso_packets": t.gso_packets, "tx_dropped": t.dropped,
            "tx_errors": t.errors, "tx_blocked": t.blocked,
            "tx_calls": self.tx_calls, "tx_queue_drops": self.tx_queue_drops,
            "tx_thread": self.txq != NULL,
        }

    @property
    def last_tx_errno(self) -> int:
        """errno of the last write the kernel refused (0: none)."""
        if self._live_txq() != NULL and self.txq.st.last_errno:
            return self.txq.st.last_errno
        return self.tx.last_errno
