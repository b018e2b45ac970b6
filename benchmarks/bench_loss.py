"""Goodput under loss: 4 MiB over a 100 Mbit/s virtual link with a 20 ms RTT and 1% or 5%
random loss in both directions, CUBIC vs NewReno, and four loss-recovery setups: SACK +
timestamps with RACK-TLP (RFC 8985, the default), with RACK but no tail-loss probes, or with
DupThresh (RFC 6675 IsLost), all with PRR (RFC 6937, always on in SACK recovery: no column
without it), and no SACK (NewReno recovery, RFC 6582). HyStart++ (RFC 9406) is the
policies' default here (on for CUBIC, off for NewReno); ``test_slow_start_overshoot`` has
it on and off. Virtual time, so the figures
are exact and repeatable (wall time is only the simulation's cost).

Run: ``pytest benchmarks/bench_loss.py``; extra_info holds the goodput, its share of the
link rate, the completion time in virtual seconds, retransmissions, RTOs, tail-loss probes,
recoveries, reductions undone as spurious and F-RTO's share of them (mean of 5 seeds).

``test_slow_start_overshoot``: HyStart++ (RFC 9406) on vs off, 4 MiB over 20 Mbit/s with a
20 ms RTT and a tail-drop queue of 150 kB (3 BDP), no random loss: the queue drops while the
first slow start lasts (until ssthresh is first set; with HyStart++ that includes CSS) and
the completion time, in virtual seconds.
"""
import pytest

from fasttcp import Host
from fasttcp.link import FaultConfig, NetSim
from fasttcp.tcp.congestion import INFINITE_SSTHRESH
from fasttcp.transfer import bulk_transfer

SEEDS = (1, 2, 3, 4, 5)


RECOVERY = {"sack+ts-rack": dict(sack=True, loss_detection="rack"),
            "sack+ts-rack-no-tlp": dict(sack=True, loss_detection="rack", tlp=False),
            "sack+ts-dupthresh": dict(sack=True, loss_detection="dupthresh"),
            "no-sack": dict(sack=False)}


@pytest.mark.parametrize("congestion", ["cubic", "newreno"])
@pytest.mark.parametrize("recovery", list(RECOVERY))
@pytest.mark.parametrize("loss", [0.01, 0.05])
def test_goodput_under_loss(benchmark, loss, recovery, congestion):
    benchmark.group = f"goodput, {loss:.0%} loss, 20 ms RTT, 100 Mbit/s"
    runs = []
    opts = RECOVERY[recovery]

    def run():
        runs.clear()
        for seed in SEEDS:
            faults = FaultConfig(loss=loss, delay=0.01, rate=100e6, seed=seed)
            r = bulk_transfer(4 << 20, faults=faults, seed=seed, timestamps=opts["sack"],
                              congestion=congestion, **opts)
            assert r.intact and r.closed
            runs.append(r)

    benchmark.pedantic(run, rounds=1, iterations=1)
    mean = lambda k: sum(getattr(r, k) for r in runs) / len(runs)   # noqa: E731
    benchmark.extra_info["Mbit/s"] = round(mean("goodput") / 1e6, 2)
    benchmark.extra_info["share of link"] = round(mean("link_share"), 3)
    benchmark.extra_info["retransmitted segments"] = round(mean("rtx"), 1)
    benchmark.extra_info["RTOs"] = round(mean("timeouts"), 1)
    benchmark.extra_info["completion (virtual s)"] = round(mean("time"), 3)
    stat = lambda k: sum(r.client_stats.get(k, 0) + r.server_stats.get(k, 0)   # noqa: E731
                         for r in runs) / len(runs)
    benchmark.extra_info["TLP probes"] = round(stat("tlp_probes"), 1)
    benchmark.extra_info["recoveries"] = round(stat("sack_recoveries")
                                               + stat("fast_retransmits"), 1)
    benchmark.extra_info["undone as spurious"] = round(stat("spurious_rtx_undone"), 1)
    benchmark.extra_info["of which F-RTO"] = round(stat("frto_spurious_rtos"), 1)


def _overshoot_run(nbytes: int, congestion: str, hystart: bool) -> dict:
    a = Host("10.0.0.1", isn_secret=bytes(16), congestion=congestion, hystart=hystart)
    b = Host("10.0.0.2", isn_secret=bytes(range(16)), congestion=congestion, hystart=hystart)
    sim = NetSim(transmit_all=True)
    pipe = FaultConfig(delay=0.01, rate=20e6, queue_bytes=150_000)
    sim.connect(a, b, pipe, pipe)
    lst = b.listen(80)
    c = a.connect(("10.0.0.2", 80))
    data = memoryview(bytes(nbytes))
    st = {"sent": 0, "got": 0, "srv": None, "ss_drops": None}

    def done() -> bool:
        if st["srv"] is None:
            st["srv"] = lst.accept()
        if st["sent"] < nbytes:
            st["sent"] += c.send(data[st["sent"]:])
        if st["srv"] is not None:
            st["got"] += len(st["srv"].recv(1 << 20))
        if st["ss_drops"] is None and c.cc.ssthresh != INFINITE_SSTHRESH:
            st["ss_drops"] = sim.stats()["queue_dropped"]
        return st["got"] == nbytes and c.in_flight == 0

    sim.run(until=120.0, stop=done, max_steps=5_000_000)
    assert st["got"] == nbytes
    return {"time": sim.now, "ss_drops": st["ss_drops"] or 0,
            "drops": sim.stats()["queue_dropped"], "rtx": c.retransmits}


@pytest.mark.parametrize("congestion", ["cubic", "newreno"])
@pytest.mark.parametrize("hystart", [True, False], ids=["hystart", "plain-ss"])
def test_slow_start_overshoot(benchmark, congestion, hystart):
    benchmark.group = "slow start, 20 Mbit/s, 20 ms RTT, 150 kB queue, 4 MiB"
    res = {}

    def run():
        res.update(_overshoot_run(4 << 20, congestion, hystart))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["hystart"] = hystart
    benchmark.extra_info["slow-start drops"] = res["ss_drops"]
    benchmark.extra_info["queue drops"] = res["drops"]
    benchmark.extra_info["retransmitted segments"] = res["rtx"]
    benchmark.extra_info["completion (virtual s)"] = round(res["time"], 4)
