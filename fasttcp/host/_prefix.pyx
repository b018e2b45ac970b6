# cython: language_level=3
"""A set of IPv4 and IPv6 prefixes (``10.99.0.0/16``, ``fd00:99::/64``) that a packet's
destination is tested against in C, with no Python object per test: the Host's
interception (Host.intercept, docs/ARCHITECTURE.md "Interception").

Validation follows ``ip route add``: a prefix with host bits set (``10.99.0.5/16``) is an
error, not silently widened, so a typo cannot intercept more (or other) addresses than
meant. An address without a length is a single-address prefix (/32 or /128)."""
import ipaddress

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uint32_t, uint64_t

COMPILED = True


cdef inline uint64_t _rd64(const unsigned char* p) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v = (v << 8) | p[i]
    return v


def _parse_prefix(text: object) -> object:
    """One prefix as an ipaddress network, with one clear line of ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"a prefix is text such as '10.99.0.0/16', got {text!r}")
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as e:
        try:
            net = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise ValueError(f"not an IPv4 or IPv6 prefix: {text!r} ({e})") from None
        raise ValueError(f"{text} has host bits set: the prefix is {net}") from None


cdef class PrefixSet:
    """IPv4 and IPv6 prefixes; ``"0.0.0.0/0"`` / ``"::/0"`` take every address of a
    family. ``address in prefixset`` (text) or :meth:`contains`."""

    def __init__(self, prefixes: object) -> None:
        # (The C fields start NULL/0; a second __init__ call starts over.)
        self._free()
        if isinstance(prefixes, str):
            prefixes = [prefixes]
        nets = [_parse_prefix(p) for p in prefixes]
        v4 = [n for n in nets if n.version == 4]
        v6 = [n for n in nets if n.version == 6]
        self.prefixes = tuple(str(n) for n in nets)
        cdef Py_ssize_t i
        cdef bytes b
        self.net4 = <uint32_t*>PyMem_Malloc(sizeof(uint32_t) * (len(v4) + 1))
        self.mask4 = <uint32_t*>PyMem_Malloc(sizeof(uint32_t) * (len(v4) + 1))
        self.net6 = <uint64_t*>PyMem_Malloc(sizeof(uint64_t) * 2 * (len(v6) + 1))
        self.mask6 = <uint64_t*>PyMem_Malloc(sizeof(uint64_t) * 2 * (len(v6) + 1))
        if not (self.net4 and self.mask4 and self.net6 and self.mask6):
            raise MemoryError()
        for i, n in enumerate(v4):
            self.net4[i] = int(n.network_address)
            self.mask4[i] = int(n.netmask)
        self.n4 = len(v4)
        for i, n in enumerate(v6):
            b = n.network_address.packed
            self.net6[2 * i] = _rd64(<const unsigned char*>b)
            self.net6[2 * i + 1] = _rd64(<const unsigned char*>b + 8)
            b = n.netmask.packed
            self.mask6[2 * i] = _rd64(<const unsigned char*>b)
            self.mask6[2 * i + 1] = _rd64(<const unsigned char*>b + 8)
        self.n6 = len(v6)

    cdef void _free(self) noexcept:
        PyMem_Free(self.net4)
        PyMem_Free(self.mask4)
        PyMem_Free(self.net6)
        PyMem_Free(self.mask6)
        self.net4 = self.mask4 = NULL
        self.net6 = self.mask6 = NULL
        self.n4 = self.n6 = 0

    def __dealloc__(self) -> None:
        self._free()

    cdef bint contains4(self, uint32_t addr) noexcept nogil:
        cdef Py_ssize_t i
        for i in range(self.n4):
            if addr & self.mask4[i] == self.net4[i]:
                return True
        return False

    cdef bint contains6(self, const unsigned char* addr) noexcept nogil:
        cdef Py_ssize_t i
        cdef uint64_t hi, lo
        if self.n6 == 0:
            return False
        hi = _rd64(addr)
        lo = _rd64(addr + 8)
        for i in range(self.n6):
            if (hi & self.mask6[2 * i] == self.net6[2 * i]
                    and lo & self.mask6[2 * i + 1] == self.net6[2 * i + 1]):
                return True
        return False

    def contains(self, address: object) -> bool:
        """Whether ``address`` (IPv4 or IPv6 text) is inside one of the prefixes."""
        cdef bytes b
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"not an IPv4 or IPv6 address: {address!r}") from None
        if ip.version == 4:
            return self.contains4(int(ip))
        b = ip.packed
        return self.contains6(<const unsigned char*>b)

    def contains_key(self, int version, object key) -> bool:
        """Whether an address in the host's key form is inside one of the prefixes:
        ``version`` 4 with its number, or 6 with its 16 bytes (for layers written in
        Python, as the UDP one; no text parsing)."""
        cdef bytes b
        if version == 4:
            return self.contains4(<uint32_t>key)
        b = key
        if len(b) != 16:
            raise ValueError("an IPv6 key is 16 bytes")
        return self.contains6(<const unsigned char*>b)

    def __contains__(self, address: object) -> bool:
        return self.contains(address)

    def __len__(self) -> int:
        return self.n4 + self.n6

    def __repr__(self) -> str:
        return f"PrefixSet({list(self.prefixes)!r})"
