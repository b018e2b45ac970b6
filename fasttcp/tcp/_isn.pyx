# cython: language_level=3, annotation_typing=False
"""Initial sequence numbers per RFC 6528, keyed by SipHash-2-4.

RFC 6528 section 3:  ISN = M + F(localip, localport, remoteip, remoteport, secretkey)
  - M is a timer that ticks every 4 microseconds: M = int(now * 250000) mod 2**32. The time
    is passed in (the stack is sans-IO and reads no clock), so tests and replays are exact.
  - F is SipHash-2-4 (``_siphash.h``), keyed by a 128-bit secret, over the 12-byte 4-tuple in
    network byte order (local address, local port, remote address, remote port); its low 32
    bits are used. For IPv6 the 4-tuple is 36 bytes (16-byte addresses): the IPv4 path
    hashes what it always did.
The secret must be unknown to off-path attackers (RFC 6528 section 3), so a fresh
IsnGenerator draws it from os.urandom; pass a secret to get reproducible numbers (tests,
replays) or to keep ISNs monotonic across a restart of the host.
"""
import os

from cpython.buffer cimport PyBuffer_Release
from libc.math cimport fmod, isfinite
from libc.string cimport memcpy
from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t

from fasttcp.wire._wire cimport get_buffer, wr16, wr32

cdef extern from "_siphash.h" nogil:
    uint64_t ft_siphash24(uint64_t k0, uint64_t k1, const unsigned char* p, size_t n)
    uint64_t ft_sip_load64le(const unsigned char* p)

COMPILED = True

# Domain-separation labels for the MAC key: the MAC key is F'(secret) of these, never the
# secret itself, so a SYN cookie (which shows MAC bits to the peer) reveals nothing about F.
_MAC_KEY_LABELS = (b"fasttcp mac key 0", b"fasttcp mac key 1")

# RFC 6528 section 3: "M is the 4 microsecond timer".
cdef double TICKS_PER_SECOND = 250000.0
cdef double TWO_32 = 4294967296.0


cdef inline void _load_key(const unsigned char* key, uint64_t* k0, uint64_t* k1) noexcept nogil:
    k0[0] = ft_sip_load64le(key)
    k1[0] = ft_sip_load64le(key + 8)


cdef uint64_t _hash_obj(uint64_t k0, uint64_t k1, object data) except? 0:
    """SipHash-2-4 of any bytes-like object."""
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t n
    cdef uint64_t h
    cdef int held = get_buffer(data, &view, &p, &n, True)     # hashed without the GIL
    try:
        with nogil:
            h = ft_siphash24(k0, k1, p, <size_t>n)
    finally:
        if held:
            PyBuffer_Release(&view)
    return h


cdef bytes _check_key(object key):
    cdef bytes k = bytes(memoryview(key))  # memoryview: bytes(16) would be 16 zeros
    if len(k) != 16:
        raise ValueError(f"a SipHash key is 16 bytes, got {len(k)}")
    return k


def siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 (64-bit output) of ``data`` under the 16-byte ``key``.

    The result is the 64-bit output as an integer; its little-endian bytes are the 8 bytes the
    SipHash paper prints (``siphash24(key, data).to_bytes(8, "little")``).
    """
    cdef bytes k = _check_key(key)
    cdef uint64_t k0, k1
    _load_key(<const unsigned char*>k, &k0, &k1)
    return _hash_obj(k0, k1, data)


cdef class IsnGenerator:
    """RFC 6528 ISN generator; also a keyed MAC for SYN cookies.

    ``IsnGenerator()`` draws a random 16-byte secret; ``IsnGenerator(secret)`` uses the given
    one (deterministic output for a given secret, 4-tuple and time).
    """

    def __init__(self, secret: bytes | None = None) -> None:
        cdef bytes k = _check_key(os.urandom(16) if secret is None else secret)
        _load_key(<const unsigned char*>k, &self.k0, &self.k1)
        self.mk0 = _hash_obj(self.k0, self.k1, _MAC_KEY_LABELS[0])
        self.mk1 = _hash_obj(self.k0, self.k1, _MAC_KEY_LABELS[1])

    cdef uint32_t isn_c(self, uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport,
                        double now) noexcept nogil:
        cdef unsigned char t[12]
        cdef double ticks
        cdef uint32_t m = 0
        wr32(t, lip)
        wr16(t + 4, lport)
        wr32(t + 6, rip)
        wr16(t + 10, rport)
        if isfinite(now):
            # int(now * 250000) mod 2**32, as Python computes it, for any finite now: fmod is
            # exact and keeps the sign, so truncating its result keeps the residue.
            ticks = fmod(now * TICKS_PER_SECOND, TWO_32)
            m = <uint32_t><int64_t>ticks
        return m + <uint32_t>ft_siphash24(self.k0, self.k1, t, 12)

    cdef uint32_t isn6_c(self, const unsigned char* lip, uint16_t lport,
                         const unsigned char* rip, uint16_t rport, double now) noexcept nogil:
        cdef unsigned char t[36]
        cdef double ticks
        cdef uint32_t m = 0
        memcpy(t, lip, 16)
        wr16(t + 16, lport)
        memcpy(t + 18, rip, 16)
        wr16(t + 34, rport)
        if isfinite(now):
            ticks = fmod(now * TICKS_PER_SECOND, TWO_32)
            m = <uint32_t><int64_t>ticks
        return m + <uint32_t>ft_siphash24(self.k0, self.k1, t, 36)

    cdef uint64_t mac_c(self, const unsigned char* p, size_t n) noexcept nogil:
        return ft_siphash24(self.mk0, self.mk1, p, n)

    def isn(self, uint32_t local_ip, uint16_t local_port, uint32_t remote_ip,
            uint16_t remote_port, double now) -> int:
        """The ISN for a connection (addresses as 32-bit integers, ``now`` in seconds)."""
        if not isfinite(now):
            raise ValueError("now must be a finite number of seconds")
        return self.isn_c(local_ip, local_port, remote_ip, remote_port, now)

    def isn6(self, bytes local_ip, uint16_t local_port, bytes remote_ip, uint16_t remote_port,
             double now) -> int:
        """The ISN for an IPv6 connection (addresses as their 16 bytes)."""
        if len(local_ip) != 16 or len(remote_ip) != 16:
            raise ValueError("IPv6 addresses are 16 bytes")
        if not isfinite(now):
            raise ValueError("now must be a finite number of seconds")
        return self.isn6_c(<const unsigned char*>local_ip, local_port,
                           <const unsigned char*>remote_ip, remote_port, now)

    def ts_offset6(self, uint16_t lport, bytes rip, uint16_t rport) -> int:
        """ts_offset for an IPv6 peer (its 16 address bytes)."""
        cdef unsigned char t[28]
        if len(rip) != 16:
            raise ValueError("an IPv6 address is 16 bytes")
        memcpy(t, b"tsoffset", 8)
        wr16(t + 8, lport)
        memcpy(t + 10, <const unsigned char*>rip, 16)
        wr16(t + 26, rport)
        return <uint32_t>self.mac_c(t, 28)

    def ts_offset(self, uint16_t lport, uint32_t rip, uint16_t rport) -> int:
        """A connection's timestamp clock offset (RFC 7323 5.4): the low 32 bits of the MAC
        of b"tsoffset" + lport + remote ip + rport (network order), keyed apart from
        the ISN so that TSval reveals nothing about it."""
        cdef unsigned char t[16]
        memcpy(t, b"tsoffset", 8)
        wr16(t + 8, lport)
        wr32(t + 10, rip)
        wr16(t + 14, rport)
        return <uint32_t>self.mac_c(t, 16)

    def mac(self, data) -> int:
        """64-bit keyed MAC (SipHash-2-4 under a key derived from the secret) of ``data``."""
        return _hash_obj(self.mk0, self.mk1, data)
