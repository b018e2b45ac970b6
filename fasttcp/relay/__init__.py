"""tun2socks in Python: relay every TCP and UDP flow a fasttcp stack intercepts to its
original destination, through the kernel's sockets or a SOCKS5 proxy.

::

    link = TunLink("ftun0", addresses=["198.18.0.2/24"], netns="client")
    host = Host(link.addresses[0], mtu=link.mtu, gso_max=65000)
    async with FastTcpStack(host, link) as stack:
        async with Relay(stack, ["10.99.0.0/16"]) as relay:
            ...                                   # relay.flows(), relay.stats()

Per flow, ``upstream(flow)`` (sync or async) picks where it goes: :class:`Direct` (the
default: a kernel socket to ``flow.destination``), :class:`Socks5` (SOCKS5 CONNECT
through ``python-socks`` for TCP, UDP ASSOCIATE for UDP), :class:`Refuse`, or an
*opener*: an async callable taking a protocol factory and returning ``(transport,
protocol)`` the way ``loop.create_connection`` / ``loop.create_datagram_endpoint`` do
(for a UDP flow: a datagram transport whose ``sendto(data)`` reaches the destination).

What the relay keeps between the two sides of a TCP flow (the fasttcp
:class:`~fasttcp.aio.TcpTransport` towards the client and the upstream transport):

- **Flow control end to end.** Each side's protocol pauses reading on the other side when
  its own write buffer passes the high-water mark, and resumes below the low-water mark
  (asyncio's ``pause_writing`` / ``resume_writing``): a slow reader on either side closes
  the other side's TCP window. No buffer grows without bound.
- **Half-close both ways.** An EOF on one side becomes ``write_eof()`` (FIN,
  ``shutdown(SHUT_WR)``) on the other; the other direction stays open, and the flow
  closes once both directions have ended (RFC 9293 3.6: a half-closed connection keeps
  carrying data the other way).
- **Resets both ways.** A reset or error on one side aborts the other: RST to the
  client from fasttcp, and a close with ``SO_LINGER`` 0 upstream, which makes the kernel
  send RST (Linux ``tcp_disconnect``) instead of FIN.
- **Refusal.** The upstream connection is made before the client's handshake completes;
  if it is refused, unreachable or times out, the client gets RST (``flow.refuse()``), so
  ``curl`` says "Connection refused".
- **Limits.** At most ``max_flows`` TCP flows and ``max_connecting`` at once still
  connecting upstream. A SYN beyond ``max_connecting`` is dropped (the client retransmits
  it a second later, when a slot may be free: the same backpressure as a full SYN queue,
  Linux ``tcp_conn_request``); a flow beyond ``max_flows`` is refused (RST: a lasting
  condition, so the client learns it at once rather than retrying for a minute).

UDP: each intercepted flow (``stack.intercept_udp``, ``udp_timeout`` idle timeout,
``max_flows`` flows) gets a connected kernel UDP socket to its destination; replies go
back through the flow, and an ICMP port unreachable from upstream (the connected socket's
ECONNREFUSED) becomes an ICMP (ICMPv6) port unreachable to the client (RFC 1122 4.1.3.1:
UDP passes ICMP errors up; RFC 792 code 3, RFC 4443 3.1 code 4). The other way, the
client's own port unreachable about a reply ends its flow and the upstream socket at once
(``udp_client_unreachable``). With :class:`Socks5`, each UDP flow gets its own UDP
association (RFC 1928 7: a TCP control connection and a UDP socket to the proxy's relay
address, each datagram with the destination in a header; written here, as python-socks
implements only CONNECT); SOCKS5 carries no ICMP errors, and fragmented SOCKS5 datagrams
(FRAG != 0) are dropped, which the RFC allows.
Datagrams that arrive while a flow's upstream is being opened are held (up to
``UDP_PENDING_BYTES``); what a datagram upstream cannot take at once beyond
``UDP_QUEUE_BYTES`` is dropped, as a router drops (both counted as ``udp_dropped``).
"""
from fasttcp.relay.pump import (HIGH_WATER, LOW_WATER, READ_SIZE, UDP_PENDING_BYTES,
                                 UDP_QUEUE_BYTES, Flow)
from fasttcp.relay.relay import Relay
from fasttcp.relay.socks5 import check_socks5
from fasttcp.relay.upstream import Direct, Opener, Refuse, Socks5, UpstreamChoice

__all__ = ["HIGH_WATER", "LOW_WATER", "READ_SIZE", "UDP_PENDING_BYTES", "UDP_QUEUE_BYTES",
           "Direct", "Flow", "Opener", "Refuse", "Relay", "Socks5", "UpstreamChoice",
           "check_socks5"]
