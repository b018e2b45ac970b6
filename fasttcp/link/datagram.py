"""DatagramSocketLink: a batch link over a non-blocking datagram socket.

One IPv4 packet per datagram, over a UDP socket or an ``AF_UNIX`` socketpair; an event
loop watches ``fileno()`` as it would a TUN device. See
:mod:`fasttcp.link.capabilities` for the link contract.
"""
from __future__ import annotations

import errno
import socket
from typing import Any, List, Optional, Tuple, Union

from fasttcp.link.capabilities import LinkCapabilities

__all__ = ["DatagramSocketLink"]

Packet = Union[bytes, bytearray, memoryview]


class DatagramSocketLink:
    """A link (``recv_batch`` / ``send_batch`` / ``fileno``) over a datagram socket.

    One packet per datagram. The socket is made non-blocking; ``recv_batch`` reads until
    the socket is empty or ``max`` packets were read, ``send_batch`` writes until the socket
    would block and returns how many packets it wrote (the driver keeps the rest and waits
    for the fd to be writable). ``peer`` is the destination for an unconnected socket.
    """

    #: A datagram is written (copied by the kernel) or refused on the spot: nothing is
    #: kept. It takes plain packets only (no scatter writes of SplitPackets).
    capabilities = LinkCapabilities(keeps_packets=False)

    def __init__(self, sock: socket.socket, peer: Optional[Any] = None,
                 bufsize: int = 65535) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.peer = peer
        self.bufsize = bufsize
        self.rx_packets = 0
        self.tx_packets = 0

    @classmethod
    def pair(cls) -> Tuple["DatagramSocketLink", "DatagramSocketLink"]:
        """Two links joined by an ``AF_UNIX`` datagram socketpair."""
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        return cls(a), cls(b)

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_batch(self, max: int = 64) -> List[bytes]:  # noqa: A002 - the link interface
        out: List[bytes] = []
        recv = self.sock.recv
        size = self.bufsize
        for _ in range(max):
            try:
                out.append(recv(size))
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:      # a UDP peer not there yet: nothing to read
                continue
        self.rx_packets += len(out)
        return out

    def send_batch(self, packets: List[Packet]) -> int:
        sock = self.sock
        peer = self.peer
        n = 0
        for p in packets:
            try:
                if peer is None:
                    sock.send(p)
                else:
                    sock.sendto(p, peer)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno in (errno.ENOBUFS, errno.EAGAIN):
                    break
                if e.errno in (errno.ECONNREFUSED, errno.EMSGSIZE):
                    n += 1                   # lost on the wire; TCP will retransmit
                    continue
                raise
            n += 1
        self.tx_packets += n
        return n

    def close(self) -> None:
        self.sock.close()
