"""Goodput under loss: 4 MiB over a 100 Mbit/s virtual link with a 20 ms RTT and 1% or 5%
random loss in both directions, CUBIC vs NewReno, and three loss-recovery setups: SACK +
timestamps with RACK-TLP (RFC 8985, the default) or with DupThresh (RFC 6675 IsLost), both
with PRR (RFC 6937), and no SACK (NewReno recovery, RFC 6582). Virtual time, so the figures
are exact and repeatable (wall time is only the simulation's cost).

Run: ``pytest benchmarks/bench_loss.py``; extra_info holds the goodput, its share of the
link rate, the completion time in virtual seconds, retransmissions, RTOs, tail-loss probes
and recoveries (mean of 5 seeds).
"""
import pytest

from fasttcp.link import FaultConfig
from fasttcp.transfer import bulk_transfer

SEEDS = (1, 2, 3, 4, 5)


RECOVERY = {"sack+ts-rack": dict(sack=True, loss_detection="rack"),
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
