"""fasttcp.transfer.bulk_transfer: the canonical in-process run (two hosts over NetSim)."""
from __future__ import annotations

import io

from fasttcp.link import FaultConfig, PcapWriter, read_pcap
from fasttcp.transfer import bulk_transfer


def test_lock_step_transfer_is_intact_and_closes() -> None:
    r = bulk_transfer(1 << 20, mtu=9000)
    assert r.intact and r.closed and r.errors == (None, None)
    assert r.lost == 0 and r.rtx == 0 and r.internal_errors == 0
    assert r.client_info.mss == 9000 - 52          # MSS less 12 bytes of timestamps
    assert any(e.startswith("handshake done") for e in r.events)


def test_faulty_path_with_capture() -> None:
    """Delay, loss and an MTU on both pipes, captured to pcap: every packet a host sent
    is in the file, in time order, none longer than the path MTU."""
    buf = io.BytesIO()
    writer = PcapWriter(buf)
    faults = FaultConfig(loss=0.02, delay=0.005, rate=50e6, mtu=1500, seed=3)
    r = bulk_transfer(512 << 10, faults=faults, pcap=writer, seed=3)
    assert r.intact and r.closed and r.lost > 0 and r.rtx > 0
    assert r.time is not None and 0.01 < r.time <= r.virtual_seconds
    assert 0 < r.link_share < 1
    buf.seek(0)
    _, packets = read_pcap(buf)
    assert len(packets) == writer.count == r.packets
    times = [t for t, _ in packets]
    assert times == sorted(times)
    assert max(len(p) for _, p in packets) <= 1500
