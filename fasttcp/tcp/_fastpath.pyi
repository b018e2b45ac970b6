# Type stub for the compiled module fasttcp.tcp._fastpath (_fastpath.pyx): header
# prediction over a whole received batch. Checked against the runtime by stubtest.
from typing import Final, TypeVar

from typing_extensions import Buffer

from fasttcp.storage._reasm import Reassembler
from fasttcp.tcp.connection import Connection
from fasttcp.tcp.host_services import HostServices
from fasttcp.wire._wire import SegmentBatch

_P = TypeVar("_P", bound=Buffer)

COMPILED: Final[bool]

def receive_batch(host: HostServices, batch: SegmentBatch, packets: list[_P], now: float,
                  parse_flags: int, conns: dict[tuple[int, int | bytes, int], Connection],
                  deferred: list[Reassembler] | None = None) -> None: ...
