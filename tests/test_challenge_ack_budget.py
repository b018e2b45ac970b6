"""The host-wide challenge-ACK budget leaks nothing (CVE-2016-5696, RFC 5961 section 7).

With a fixed budget per second an off-path attacker holding as many connections as the
budget counts the challenge ACKs they draw: one fewer when its spoofed in-window RST hit a
victim's 4-tuple (whose challenge ACK spent one). As Linux since 4.7, each second's budget
is random in [limit / 2, 3 * limit / 2), so the counts of "hit" and "miss" seconds come
from distributions that differ by one step in a hundred: the attacker learns (next to)
nothing. Each second draws a fresh budget from the host's keyed hash (deterministic under
its secret, so this test is exact).
"""
from __future__ import annotations

import random
from typing import List, Tuple

from fasttcp import Host
from fasttcp.wire import TcpFlags, build_tcp, parse

MASK = 0xFFFFFFFF
SERVER, VICTIM, ATTACKER = "10.0.0.1", "10.0.0.2", "10.0.0.3"
LIMIT = 100                    # budget per second: the attacker holds LIMIT connections
R, A = int(TcpFlags.RST), int(TcpFlags.ACK)


def _open(host: Host, ip: str, ports: List[int], now: float) -> List[int]:
    """Open connections from (ip, port) to the host's :80; returns each one's peer ISN."""
    irs = [(1000 * p) & MASK for p in ports]
    host.receive([build_tcp(ip, SERVER, p, 80, i, 0, int(TcpFlags.SYN), 65535)
                  for p, i in zip(ports, irs)], now)
    synacks = {parse(raw).dport: parse(raw).seq for raw in host.transmit(now)}
    host.receive([build_tcp(ip, SERVER, p, 80, (i + 1) & MASK, (synacks[p] + 1) & MASK, A,
                            65535) for p, i in zip(ports, irs)], now + 0.01)
    assert host.transmit(now + 0.01) == []
    return irs


def _challenges(out: List[bytes], ip: str) -> int:
    n = 0
    for raw in out:
        p = parse(raw)
        if p.is_tcp and p.dst == ip and p.flag_bits == A:
            n += 1
    return n


def _run_trials(secret: bytes, seconds: int) -> Tuple[List[int], List[int], List[int]]:
    """Every second: a spoofed in-window RST at the victim's tuple ("hit", even seconds)
    or at a port the victim does not use ("miss"), then one in-window RST on each of the
    attacker's connections; the attacker counts the challenge ACKs it gets back."""
    host = Host(SERVER, isn_secret=secret, challenge_ack_limit=LIMIT, timestamps=False,
                invalid_ack_interval=0.5, max_connections=1000)
    lst = host.listen(80)
    host.receive([], 0.0)
    victim_irs, = _open(host, VICTIM, [40000], 0.0)
    attacker_ports = list(range(1000, 1000 + LIMIT))
    attacker_irs = _open(host, ATTACKER, attacker_ports, 0.1)
    assert len(lst) == LIMIT + 1
    hits, misses, victim_acks = [], [], []
    for k in range(1, seconds + 1):
        hit = k % 2 == 0
        t = k + 0.3
        sport = 40000 if hit else 40001
        host.receive([build_tcp(VICTIM, SERVER, sport, 80, (victim_irs + 5000) & MASK, 0, R,
                                0)], t)
        victim_acks.append(_challenges(host.transmit(t), VICTIM))
        host.receive([build_tcp(ATTACKER, SERVER, p, 80, (i + 5000) & MASK, 0, R, 0)
                      for p, i in zip(attacker_ports, attacker_irs)], t + 0.1)
        (hits if hit else misses).append(_challenges(host.transmit(t + 0.1), ATTACKER))
    return hits, misses, victim_acks


def _ks_statistic(a: List[int], b: List[int]) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical
    CDFs, i.e. how much better than a coin the best threshold on the count guesses."""
    d = 0.0
    for x in sorted(set(a) | set(b)):
        fa = sum(1 for v in a if v <= x) / len(a)
        fb = sum(1 for v in b if v <= x) / len(b)
        d = max(d, abs(fa - fb))
    return d


def test_hit_and_miss_counts_are_indistinguishable():
    """400 seconds (200 hits, 200 misses): the two count distributions overlap; the KS
    statistic stays below its 0.1 % critical value for 200 + 200 samples (1.95 *
    sqrt(2 / 200) = 0.195), where a fixed budget gives 1.0 (every miss counts 100, every
    hit 99). The victim still got its challenge ACK every time it was hit."""
    hits, misses, victim_acks = _run_trials(bytes(range(16)), 400)
    assert len(hits) == len(misses) == 200
    d = _ks_statistic(hits, misses)
    assert d < 0.195, (d, sorted(hits)[:10], sorted(misses)[:10])
    # The budget really varies: about half of the seconds hold fewer than LIMIT, in either
    # kind of trial, and the counts spread over the range.
    for counts in (hits, misses):
        below = sum(1 for n in counts if n < LIMIT) / len(counts)
        assert 0.35 < below < 0.65, below
        assert min(counts) < LIMIT // 2 + 10 and max(counts) == LIMIT
    # RFC 5961 behaviour kept: the victim (one connection) got its challenge ACK each time.
    assert victim_acks[1::2] == [1] * 200 and victim_acks[0::2] == [0] * 200


def test_budgets_differ_between_hosts():
    """Two hosts with different secrets draw different budgets for the same seconds."""
    a = _run_trials(bytes(16), 20)[1]
    b = _run_trials(bytes(range(16)), 20)[1]
    assert a != b
    rng = random.Random(1)
    c = _run_trials(bytes(rng.randrange(256) for _ in range(16)), 20)[1]
    assert c != a and c != b
