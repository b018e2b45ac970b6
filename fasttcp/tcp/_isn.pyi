# Type stub for the compiled module fasttcp.tcp._isn (_isn.pyx): RFC 6528 ISNs and the keyed
# MAC under the host's secret. Checked against the runtime by stubtest.
from typing import Final

from typing_extensions import Buffer, disjoint_base

COMPILED: Final[bool]

def siphash24(key: Buffer, data: Buffer) -> int: ...

@disjoint_base
class IsnGenerator:
    """RFC 6528 ISN generator; also a keyed MAC for SYN cookies."""

    def __init__(self, secret: bytes | None = None) -> None: ...
    def isn(self, local_ip: int, local_port: int, remote_ip: int, remote_port: int,
            now: float) -> int: ...
    def ts_offset(self, lport: int, rip: int, rport: int) -> int: ...
    def mac(self, data: Buffer) -> int: ...
