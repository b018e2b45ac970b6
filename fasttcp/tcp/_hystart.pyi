# Type stub for the compiled module fasttcp.tcp._hystart (_hystart.pyx / _hystart.pxd):
# HyStart++ (RFC 9406 4.2) round bookkeeping. Checked against the runtime by stubtest.
from typing import Final

from typing_extensions import final

COMPILED: Final[bool]
ENTER_CSS: Final[int]
LEAVE_CSS: Final[int]
CSS_DONE: Final[int]

@final
class HyStartRounds:
    """RFC 9406 section 4.2 state of one connection's initial slow start."""

    window_end: int
    last_round_min_rtt: float
    current_round_min_rtt: float
    rtt_sample_count: int
    css_baseline_min_rtt: float
    css_rounds: int
    done: bool
    @property
    def min_rtt_thresh(self) -> float: ...
    @property
    def max_rtt_thresh(self) -> float: ...
    @property
    def min_rtt_divisor(self) -> int: ...
    @property
    def n_rtt_sample(self) -> int: ...
    @property
    def css_rounds_max(self) -> int: ...
    def __init__(self, n_rtt_sample: int = 8, min_rtt_thresh: float = 0.004,
                 max_rtt_thresh: float = 0.016, min_rtt_divisor: int = 8,
                 css_rounds: int = 5) -> None: ...
    def take(self, ack: int, snd_nxt: int, rtt: float, samples: int) -> int: ...
    def end(self) -> None: ...
    @property
    def in_css(self) -> bool: ...
