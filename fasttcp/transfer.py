"""One bulk transfer between two fasttcp hosts in one process, over a :class:`NetSim`.

The canonical in-process run: two :class:`~fasttcp.Host` s joined by NetSim's pipes, in
virtual time. Without faults the pipes are perfect and instant, so the hosts run in lock
step (whatever one transmits the other receives at the same virtual instant; time jumps to
the next timer when the wire is idle) and the wall time is all of both stacks' work per
segment: ``fasttcp demo`` without TUN and the engine benchmarks. With a
:class:`~fasttcp.link.FaultConfig` (loss, delay, rate, MTU...) the same run measures what a
configuration reaches against the link rate (tests, loss benchmarks). Pass a
:class:`~fasttcp.link.PcapWriter` to capture it.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple

from fasttcp.host.host import Host
from fasttcp.link.faults import FaultConfig
from fasttcp.link.netsim import NetSim
from fasttcp.link.pcap import PcapWriter
from fasttcp.tcp.connection import ConnectionInfo
from fasttcp.tcp.states import State

__all__ = ["TransferResult", "bulk_transfer"]

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"
CLIENT6, SERVER6 = "fd00::1", "fd00::2"


@dataclass
class TransferResult:
    """What :func:`bulk_transfer` measured. Times are virtual seconds unless named wall."""

    nbytes: int
    intact: bool                    # every byte arrived, in order, unchanged
    closed: bool                    # both ends closed (server CLOSED, client TIME_WAIT/CLOSED)
    wall_seconds: float             # real time spent running both stacks
    virtual_seconds: float          # virtual time at the end (both ends closed)
    time: Optional[float]           # virtual time when the last byte was read
    packets: int                    # packets both hosts sent
    lost: int                       # packets the pipes dropped (loss, MTU, queue)
    errors: Tuple[Any, Any]         # (client, server) connection errors
    client_info: ConnectionInfo
    server_info: Optional[ConnectionInfo]
    client_stats: dict
    server_stats: dict
    rate: Optional[float] = None    # the pipes' bit rate, if limited
    events: List[str] = field(default_factory=list)

    @property
    def gbit_per_s(self) -> float:
        """Goodput against wall time (the stacks' speed)."""
        return self.nbytes * 8 / self.wall_seconds / 1e9

    @property
    def goodput(self) -> float:
        """Bits per virtual second until the last byte was read (the protocol's speed)."""
        return self.nbytes * 8 / self.time if self.time else 0.0

    @property
    def link_share(self) -> float:
        """Goodput as a share of the pipes' rate (0 without a rate)."""
        return self.goodput / self.rate if self.rate else 0.0

    @property
    def internal_errors(self) -> int:
        return (self.client_stats.get("drop_internal_error", 0)
                + self.server_stats.get("drop_internal_error", 0))

    @property
    def rtx(self) -> int:
        return self.client_stats.get("retransmitted_segments", 0)

    @property
    def timeouts(self) -> int:
        return self.client_stats.get("timeouts", 0)

    @property
    def recoveries(self) -> int:
        cs = self.client_stats
        return cs.get("sack_recoveries", 0) + cs.get("fast_retransmits", 0)

    @property
    def segments(self) -> int:
        return self.client_stats.get("packets_out", 0)


def bulk_transfer(nbytes: int, mtu: int = 1500, *, faults: Optional[FaultConfig] = None,
                  seed: int = 1, log: Optional[Callable[[str], None]] = None,
                  pcap: Optional[PcapWriter] = None, until: float = 600.0,
                  max_steps: int = 10_000_000, ipv6: bool = False,
                  **settings: Any) -> TransferResult:
    """Send ``nbytes`` (seeded random bytes) from a client host to a server host's port
    80 through a NetSim with ``faults`` in both directions (None: perfect and instant);
    both close at the end. ``settings`` go to both Hosts; ``log`` gets a line per event
    (handshake, state changes); ``ipv6``: the hosts talk over IPv6 (fd00::1, fd00::2).
    Raises SimulationDidNotConverge after ``max_steps``."""
    settings.setdefault("msl", 0.25)               # TIME_WAIT is not what is measured
    secret = settings.pop("isn_secret", None)      # default: a different one per host
    client_ip, server_ip = (CLIENT6, SERVER6) if ipv6 else (CLIENT, SERVER)
    client = Host(client_ip, mtu=mtu, isn_secret=secret or bytes(16), **settings)
    server = Host(server_ip, mtu=mtu, isn_secret=secret or bytes(range(16)), **settings)
    sim = NetSim(transmit_all=True)                # the apps act between steps
    cfg = faults if faults is not None else FaultConfig()
    sim.connect(client, server, cfg, cfg)
    if pcap is not None:
        pcap.tap(sim)
    data = random.Random(seed).randbytes(nbytes)
    view = memoryview(data)
    sink = bytearray(nbytes)                       # the receiving app's buffer (recv_into)
    sink_view = memoryview(sink)
    listener = server.listen(80)
    conn = client.connect((server_ip, 80))
    events: List[str] = []
    seen_states: set = set()
    st: dict = {"sent": 0, "got": 0, "srv": None, "t_done": None}

    def note(msg: str) -> None:
        events.append(msg)
        if log is not None:
            log(msg)

    def done() -> bool:
        now = sim.now
        srv = st["srv"]
        if srv is None:
            srv = st["srv"] = listener.accept()
            if srv is not None:
                note(f"handshake done at t={now * 1000:.1f} ms: {conn.local_address} -> "
                     f"{conn.remote_address}, MSS {conn.mss}, window scale "
                     f"{conn.info().snd_wscale}/{conn.info().rcv_wscale}")
        if st["sent"] < nbytes:
            st["sent"] += conn.send(view[st["sent"]:st["sent"] + (1 << 20)])
        elif conn.state == State.ESTABLISHED:
            conn.close()
        if srv is None:
            return False
        got = st["got"]
        while got < nbytes:
            n = srv.recv_into(sink_view[got:])
            if not n:
                break
            got += n
        st["got"] = got
        if got == nbytes and st["t_done"] is None:
            st["t_done"] = now
        if srv.eof and srv.state == State.CLOSE_WAIT:
            srv.close()
        for c, side in ((conn, "client"), (srv, "server")):
            if (side, c.state) not in seen_states:
                seen_states.add((side, c.state))
                if c.state in (State.FIN_WAIT_1, State.CLOSE_WAIT, State.LAST_ACK,
                               State.TIME_WAIT, State.CLOSED):
                    note(f"{side} -> {c.state.rfc_name} at t={now * 1000:.1f} ms")
        return closed()

    def closed() -> bool:
        srv = st["srv"]
        return (srv is not None and srv.state == State.CLOSED
                and conn.state in (State.TIME_WAIT, State.CLOSED))

    t0 = time.perf_counter()
    sim.run(until=until, stop=done, max_steps=max_steps)
    wall = time.perf_counter() - t0
    srv = st["srv"]
    return TransferResult(
        nbytes=nbytes, intact=st["got"] == nbytes and sink == data,
        closed=closed(), wall_seconds=wall, virtual_seconds=sim.now, time=st["t_done"],
        packets=sim.packets_sent, lost=sim.stats()["lost"],
        errors=(conn.error, srv.error if srv is not None else None),
        client_info=conn.info(), server_info=srv.info() if srv is not None else None,
        client_stats=client.stats(), server_stats=server.stats(), rate=cfg.rate,
        events=events)
