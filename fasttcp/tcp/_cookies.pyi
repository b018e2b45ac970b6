# Type stub for the compiled module fasttcp.tcp._cookies (_cookies.pyx): SYN cookies
# (RFC 4987). Checked against the runtime by stubtest.
from typing import Final

from typing_extensions import Self, disjoint_base

from fasttcp.tcp._isn import IsnGenerator

COMPILED: Final[bool]
PERIOD: Final[float]
MSS_VALUES: Final[list[int]]
OPT_WSCALE_NONE: Final[int]
OPT_SACK_BIT: Final[int]
OPT_ECN_BIT: Final[int]
OPT_MASK: Final[int]

@disjoint_base
class SynCookies:
    """Make and check SYN cookies under an IsnGenerator's secret."""

    @property
    def period(self) -> float: ...
    def __new__(cls, gen: IsnGenerator, period: float = 64.0) -> Self: ...
    def make(self, lip: int, lport: int, rip: int, rport: int, client_isn: int, mss: int,
             now: float) -> tuple[int, int]: ...
    def check(self, lip: int, lport: int, rip: int, rport: int, client_isn: int, cookie: int,
              now: float) -> int: ...
    def make6(self, lip: bytes, lport: int, rip: bytes, rport: int, client_isn: int, mss: int,
              now: float) -> tuple[int, int]: ...
    def check6(self, lip: bytes, lport: int, rip: bytes, rport: int, client_isn: int,
               cookie: int, now: float) -> int: ...
    def bench_check(self, n: int, now: float) -> int: ...

def encode_options(wscale: int, sack: bool, ecn: bool = False) -> int: ...
def cookie_ecn_ok(tsecr: int) -> bool: ...
def decode_options(tsecr: int) -> tuple[int, bool]: ...
