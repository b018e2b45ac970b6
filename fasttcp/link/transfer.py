"""One bulk transfer through a virtual-time network with seeded faults: the goodput a
configuration reaches against the link rate (benchmarks, tests, experiments)."""
from __future__ import annotations

import hashlib
import random
from typing import Any, Dict

from fasttcp.host.host import Host
from fasttcp.link.faults import FaultConfig
from fasttcp.link.netsim import NetSim
from fasttcp.tcp.states import State


def netsim_transfer(size: int, *, loss: float = 0.0, delay: float = 0.01, rate: float = 100e6,
                    seed: int = 1, until: float = 600.0, **settings: Any) -> Dict[str, Any]:
    """Send ``size`` bytes from 10.0.0.1 to 10.0.0.2 over a link with ``loss`` in both
    directions, one-way ``delay`` (RTT = 2 * delay) and ``rate`` bits/s; both close at the
    end. Returns virtual time to deliver everything, goodput, retransmissions, losses."""
    settings.setdefault("msl", 0.25)
    client = Host("10.0.0.1", isn_secret=bytes(16), **settings)
    server = Host("10.0.0.2", isn_secret=bytes(range(16)), **settings)
    sim = NetSim(transmit_all=True)                # the apps act between steps
    cfg = FaultConfig(loss=loss, delay=delay, rate=rate, seed=seed)
    sim.connect(client, server, cfg, cfg)
    data = random.Random(seed).randbytes(size)
    listener = server.listen(80)
    conn = client.connect(("10.0.0.2", 80))
    digest = hashlib.sha256()
    st: Dict[str, Any] = {"sent": 0, "got": 0, "srv": None, "closed": False, "t_done": None}

    def done() -> bool:
        if st["srv"] is None:
            st["srv"] = listener.accept()
        if st["sent"] < size:
            st["sent"] += conn.send(memoryview(data)[st["sent"]:st["sent"] + (1 << 20)])
        elif not st["closed"] and conn.state == State.ESTABLISHED:
            conn.close()
            st["closed"] = True
        srv = st["srv"]
        if srv is not None:
            for _ in range(64):
                chunk = srv.recv(1 << 20)
                if not chunk:
                    break
                digest.update(chunk)
                st["got"] += len(chunk)
            if st["got"] == size and st["t_done"] is None:
                st["t_done"] = sim.now
            if srv.eof and srv.state == State.CLOSE_WAIT:
                srv.close()
        return (srv is not None and srv.state == State.CLOSED
                and conn.state in (State.TIME_WAIT, State.CLOSED))

    sim.run(until=until, stop=done, max_steps=5_000_000)
    cs, ss = client.stats(), server.stats()
    t = st["t_done"]
    return dict(
        intact=st["got"] == size and digest.digest() == hashlib.sha256(data).digest(),
        closed=(st["srv"] is not None and st["srv"].state == State.CLOSED
                and conn.state in (State.TIME_WAIT, State.CLOSED)),
        errors=(conn.error, st["srv"].error if st["srv"] is not None else None),
        internal_errors=cs.get("drop_internal_error", 0) + ss.get("drop_internal_error", 0),
        time=t, goodput=(size * 8 / t if t else 0.0), link_share=(size * 8 / t / rate if t else 0.0),
        rtx=cs.get("retransmitted_segments", 0), timeouts=cs.get("timeouts", 0),
        recoveries=cs.get("sack_recoveries", 0) + cs.get("fast_retransmits", 0),
        lost=sim.stats()["lost"], segments=cs.get("packets_out", 0))
