# Type stub for the compiled module fasttcp.tcp.rtt (rtt.pyx / rtt.pxd). Checked against the
# runtime by stubtest.
from typing import Final

from typing_extensions import disjoint_base

__all__ = ["RttEstimator", "SYN_FALLBACK_RTO"]

COMPILED: Final[bool]
SYN_FALLBACK_RTO: Final[float]

@disjoint_base
class RttEstimator:
    """SRTT / RTTVAR / RTO of one connection (RFC 6298 sections 2 and 5), in seconds."""

    initial_rto: float
    min_rto: float
    max_rto: float
    granularity: float
    k: float
    alpha: float
    beta: float
    rto: float
    backoff_count: int
    min_rtt: float
    @property
    def has_sample(self) -> bool: ...
    def __init__(self, initial_rto: float = 1.0, min_rto: float = 0.2, max_rto: float = 60.0,
                 granularity: float = 0.001, k: float = 4, alpha: float = 0.125,
                 beta: float = 0.25) -> None: ...
    @property
    def srtt(self) -> float | None: ...
    @property
    def rttvar(self) -> float | None: ...
    def sample(self, rtt: float) -> None: ...
    def backoff(self) -> float: ...
    def on_syn_timeout_fallback(self) -> float: ...
