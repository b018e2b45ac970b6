"""A bulk transfer between two sans-IO hosts in virtual time.

The caller is the network: it moves each host's packets to the other and advances the
clock to the next timer when both are quiet. Prints the bytes received, the sender's
connection info and a few of the host's counters. Run: python examples/two_host_transfer.py
"""
from __future__ import annotations

import fasttcp

SIZE = 4 << 20                  # bytes to send
RTT = 0.002                     # one "hop" each way takes RTT / 2


def main() -> None:
    client = fasttcp.Host("10.0.0.1", nodelay=True)
    server = fasttcp.Host("10.0.0.2", rcv_buf=256 << 10)
    listener = server.listen(5001)
    conn = client.connect(("10.0.0.2", 5001))

    data = bytes(range(256)) * (SIZE // 256)
    sent = 0
    received = bytearray()
    peer: fasttcp.Connection | None = None
    now = 0.0
    while len(received) < SIZE and now < 60.0:
        if sent < SIZE and conn.state is fasttcp.State.ESTABLISHED:
            sent += conn.send(memoryview(data)[sent:])
        to_server = client.transmit(now)
        to_client = server.transmit(now)
        now += RTT / 2
        if to_server:
            server.receive(to_server, now)
        if to_client:
            client.receive(to_client, now)
        if peer is None:
            peer = listener.accept()
        if peer is not None:
            received += peer.recv(1 << 20)
        if not to_server and not to_client:
            # Both quiet: jump to the next timer (delayed ACK, retransmission...).
            due = [t for t in (client.poll_at(), server.poll_at()) if t is not None]
            now = max(now, min(due)) if due else now + RTT

    assert bytes(received) == data, "the stream arrived damaged"
    for _ in range(4):                              # deliver the last ACKs
        server.receive(client.transmit(now), now)
        client.receive(server.transmit(now), now)
    info: fasttcp.ConnectionInfo = conn.info()
    stats: dict[str, int] = client.stats()
    print(f"received {len(received)} bytes in {now:.3f} s of virtual time")
    print(f"sender: state={info.state} mss={info.mss} cwnd={info.cwnd} "
          f"retransmits={info.retransmits} bytes_acked={info.bytes_acked}")
    print(f"client packets out: {stats['packets_out']}")
    conn.close()
    if peer is not None:
        peer.close()


if __name__ == "__main__":
    main()
