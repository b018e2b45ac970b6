"""Stream storage: the send ring and the receive-side out-of-order assembler.

Both are compiled (``_ring.pyx``, ``_reasm.pyx``) and address bytes by absolute uint64
stream offsets; the TCP engine maps sequence numbers to offsets. Cython code can
``cimport`` the classes from ``fasttcp.storage._ring`` / ``fasttcp.storage._reasm`` and
call their C-level methods (``copy_out``, ``add_c``, ``read_into``...) directly.
"""
from fasttcp.storage._reasm import OooBudget, Reassembler
from fasttcp.storage._ring import SendRing

__all__ = ["OooBudget", "Reassembler", "SendRing"]
