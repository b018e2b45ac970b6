"""A bulk transfer between two fasttcp hosts in one process, with no link in between.

Both hosts are driven in lock step: whatever one transmits the other receives at the same
virtual instant, and virtual time jumps to the next timer only when the wire is idle. Used
by ``fasttcp demo`` (without TUN) and the engine benchmarks; the work measured is all of both
stacks' work per segment.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from fasttcp.cli.servers import generated_body
from fasttcp.host.host import Host
from fasttcp.tcp.connection import ConnectionInfo
from fasttcp.tcp.states import State


@dataclass
class TransferResult:
    nbytes: int
    intact: bool
    wall_seconds: float
    virtual_seconds: float
    packets: int
    client_info: ConnectionInfo
    server_info: ConnectionInfo
    client_stats: dict
    server_stats: dict
    events: List[str] = field(default_factory=list)

    @property
    def gbit_per_s(self) -> float:
        return self.nbytes * 8 / self.wall_seconds / 1e9


def bulk_transfer(nbytes: int, mtu: int = 1500, *, log: Optional[Callable[[str], None]] = None,
                  max_steps: int = 10_000_000, **settings) -> TransferResult:
    """Send ``nbytes`` from a client to a server host, close both ways, and check the bytes."""
    settings.setdefault("isn_secret", bytes(range(16)))
    client = Host("10.0.0.1", mtu=mtu, **settings)
    server = Host("10.0.0.2", mtu=mtu, **settings)
    listener = server.listen(80)
    conn = client.connect(("10.0.0.2", 80))
    data = generated_body(nbytes)
    view = memoryview(data)
    sink = bytearray(nbytes)                  # the receiving app's buffer (recv_into)
    sink_view = memoryview(sink)
    received = 0
    sent = 0
    srv = None
    now = 0.0
    packets = 0
    events: List[str] = []
    seen_states = set()

    def note(msg: str) -> None:
        events.append(msg)
        if log is not None:
            log(msg)

    t0 = time.perf_counter()
    for _ in range(max_steps):
        out_c = client.transmit(now)
        out_s = server.transmit(now)
        packets += len(out_c) + len(out_s)
        if out_c:
            server.receive(out_c, now)
        if out_s:
            client.receive(out_s, now)
        if srv is None:
            srv = listener.accept()
            if srv is not None:
                note(f"handshake done at t={now * 1000:.1f} ms: {conn.local_address} -> "
                     f"{conn.remote_address}, MSS {conn.mss}, window scale "
                     f"{conn.info().snd_wscale}/{conn.info().rcv_wscale}")
        if sent < nbytes:
            sent += conn.send(view[sent:sent + (1 << 20)])
        elif conn.fin_off is None:
            conn.close()
        if srv is not None:
            while received < nbytes:
                got = srv.recv_into(sink_view[received:])
                if not got:
                    break
                received += got
            if srv.eof and srv.state == State.CLOSE_WAIT:
                srv.close()
            for c in (conn, srv):
                if (id(c), c.state) not in seen_states:
                    seen_states.add((id(c), c.state))
                    if c.state in (State.FIN_WAIT_1, State.CLOSE_WAIT, State.LAST_ACK,
                                   State.TIME_WAIT, State.CLOSED):
                        side = "client" if c is conn else "server"
                        note(f"{side} -> {c.state.rfc_name} at t={now * 1000:.1f} ms")
        if not out_c and not out_s:
            if srv is not None and srv.state == State.CLOSED and conn.state in (
                    State.TIME_WAIT, State.CLOSED):
                break
            due = [t for t in (client.poll_at(), server.poll_at()) if t is not None]
            if not due:
                break
            now = max(now, min(due))
    else:
        raise RuntimeError("transfer did not finish within max_steps")
    wall = time.perf_counter() - t0
    intact = received == nbytes and sink == data
    return TransferResult(nbytes, intact, wall, now, packets, conn.info(), srv.info(),
                          client.stats(), server.stats(), events)
