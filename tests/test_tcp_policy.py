"""TCP policy pieces: SipHash-2-4 and RFC 6528 ISNs, the RFC 6298 RTO estimator, NewReno.

Every expected number is worked by hand from the RFC formulas (shown next to it) or comes
from the SipHash authors' published test vectors.
"""
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fasttcp.tcp import _isn
from fasttcp.tcp._isn import IsnGenerator, siphash24
from fasttcp.tcp.congestion import (ALGORITHMS, INFINITE_SSTHRESH, CongestionControl, NewReno,
                                    resolve, rfc6928_initial_window)
from fasttcp.tcp.rtt import SYN_FALLBACK_RTO, RttEstimator

# ============================================================================================
# SipHash-2-4
# ============================================================================================

# The reference implementation's vectors (SipHash repository, vectors.h, vectors_sip64): key
# 00 01 .. 0f, message i = bytes 00 01 .. (i-1) for i = 0..63; each output as the 8 bytes the
# authors print, least significant first.
SIP64_VECTORS = """
310e0edd47db6f72 fd67dc93c539f874 5a4fa9d909806c0d 2d7efbd796666785
b7877127e09427cf 8da699cd64557618 cee3fe586e46c9cb 37d1018bf50002ab
6224939a79f5f593 b0e4a90bdf82009e f3b9dd94c5bb5d7a a7ad6b22462fb3f4
fbe50e86bc8f1e75 903d84c02756ea14 eef27a8e90ca23f7 e545be4961ca29a1
db9bc2577fcc2a3f 9447be2cf5e99a69 9cd38d96f0b3c14b bd6179a71dc96dbb
98eea21af25cd6be c7673b2eb0cbf2d0 883ea3e395675393 c8ce5ccd8c030ca8
94af49f6c650adb8 eab8858ade92e1bc f315bb5bb835d817 adcf6b0763612e2f
a5c91da7acaa4dde 716595876650a2a6 28ef495c53a387ad 42c341d8fa92d832
ce7cf2722f512771 e37859f94623f3a7 381205bb1ab0e012 ae97a10fd434e015
b4a31508beff4d31 81396229f0907902 4d0cf49ee5d4dcca 5c73336a76d8bf9a
d0a704536ba93e0e 925958fcd6420cad a915c29bc8067318 952b79f3bc0aa6d4
f21df2e41d4535f9 87577519048f53a9 10a56cf5dfcd9adb eb75095ccd986cd0
51a9cb9ecba312e6 96afadfc2ce666c7 72fe52975a4364ee 5a1645b276d592a1
b274cb8ebf87870a 6f9bb4203de7b381 eaecb2a30b22a87f 9924a43cc1315724
bd838d3aafbf8db7 0b1a2a3265d51aea 135079a3231ce660 932b2846e4d70666
e1915f5cb1eca46c f325965ca16d629f 575ff28e60381be5 724506eb4c328a95
"""
_SIP64_BYTES = [bytes.fromhex(h) for h in SIP64_VECTORS.split()]
KEY = bytes(range(16))


def test_vector_table_is_complete():
    assert len(_SIP64_BYTES) == 64 and all(len(b) == 8 for b in _SIP64_BYTES)


@pytest.mark.parametrize("i", range(64))
def test_siphash24_reference_vectors(i):
    expected = int.from_bytes(_SIP64_BYTES[i], "little")
    assert siphash24(KEY, bytes(range(i))) == expected


def test_siphash24_vectors_quoted_in_the_paper():
    # Appendix A of the paper: key 00..0f, 15-byte message 00..0e -> a129ca6149be45e5.
    assert siphash24(KEY, bytes(range(15))) == 0xA129CA6149BE45E5
    # Empty message: 31 0e 0e dd 47 db 6f 72 printed little-endian.
    assert siphash24(KEY, b"") == 0x726FDB47DD0E0E31
    assert siphash24(KEY, b"").to_bytes(8, "little") == bytes.fromhex("310e0edd47db6f72")


def test_siphash24_accepts_any_buffer_and_checks_the_key():
    data = bytes(range(20))
    h = siphash24(KEY, data)
    assert siphash24(bytearray(KEY), bytearray(data)) == h
    assert siphash24(KEY, memoryview(data)) == h
    with pytest.raises(ValueError):
        siphash24(b"short", data)
    with pytest.raises(ValueError):
        siphash24(bytes(17), data)
    with pytest.raises(TypeError):
        siphash24(16, data)  # not bytes(16)


def test_siphash24_output_fills_64_bits():
    # Not truncated to 32 bits or sign-extended: vector 63 has its top bit set.
    assert siphash24(KEY, bytes(range(63))) == 0x958A324CEB064572
    assert siphash24(KEY, bytes(range(63))) >> 63 == 1


# ============================================================================================
# ISN (RFC 6528)
# ============================================================================================

SECRET = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
TUPLE = (0x0A000001, 40000, 0x0A000002, 80)  # 10.0.0.1:40000 -> 10.0.0.2:80


def rfc6528_isn(secret, lip, lport, rip, rport, now):
    """Reference model: M + F, M = 4 us ticks, F = low 32 bits of SipHash-2-4 over the
    4-tuple in network byte order."""
    m = int(now * 250000) % 2**32
    f = siphash24(secret, struct.pack("!IHIH", lip, lport, rip, rport)) & 0xFFFFFFFF
    return (m + f) % 2**32


def test_module_is_compiled():
    assert _isn.__file__.endswith(".so") and _isn.COMPILED is True


def test_isn_matches_the_rfc6528_formula():
    g = IsnGenerator(SECRET)
    for now in (0.0, 1.0, 0.123456, 12345.678, 1.7e9, 4.5e9):
        assert g.isn(*TUPLE, now) == rfc6528_isn(SECRET, *TUPLE, now)


def test_isn_at_time_zero_is_the_hash_of_the_tuple():
    g = IsnGenerator(SECRET)
    f = siphash24(SECRET, bytes.fromhex("0a000001" "9c40" "0a000002" "0050")) & 0xFFFFFFFF
    assert g.isn(*TUPLE, 0.0) == f


def test_isn_is_deterministic_for_a_secret_and_time():
    a, b = IsnGenerator(SECRET), IsnGenerator(SECRET)
    assert a.isn(*TUPLE, 5.5) == b.isn(*TUPLE, 5.5) == a.isn(*TUPLE, 5.5)


def test_isn_changes_with_each_field_of_the_tuple():
    g = IsnGenerator(SECRET)
    base = g.isn(*TUPLE, 1.0)
    for i, delta in ((0, 1), (1, 1), (2, 1), (3, 1), (0, 1 << 31), (1, 256), (3, 256)):
        t = list(TUPLE)
        t[i] = (t[i] + delta) % (2**32 if i in (0, 2) else 2**16)
        assert g.isn(*t, 1.0) != base, (i, delta)
    # Swapping the ends is a different connection (the order of the tuple matters).
    assert g.isn(TUPLE[2], TUPLE[3], TUPLE[0], TUPLE[1], 1.0) != base


def test_isn_advances_250000_per_second():
    g = IsnGenerator(SECRET)
    isn0 = g.isn(*TUPLE, 100.0)
    for seconds in (1, 2, 10, 3600):
        assert g.isn(*TUPLE, 100.0 + seconds) == (isn0 + 250000 * seconds) % 2**32
    # 4 microseconds is one tick.
    assert g.isn(*TUPLE, 100.000004) == (isn0 + 1) % 2**32


def test_isn_timer_wraps_modulo_2_32():
    g = IsnGenerator(SECRET)
    f = g.isn(*TUPLE, 0.0)
    # M wraps after 2**32 ticks of 4 us = 17179.869184 s (about 4.77 hours).
    period = 2**32 / 250000
    assert g.isn(*TUPLE, period) == f
    assert g.isn(*TUPLE, period + 1) == (f + 250000) % 2**32
    assert g.isn(*TUPLE, 10 * period + 2) == (f + 500000) % 2**32


def test_isn_for_negative_time_follows_python_arithmetic():
    g = IsnGenerator(SECRET)
    for now in (-0.5, -1e-6, -12345.25):
        assert g.isn(*TUPLE, now) == rfc6528_isn(SECRET, *TUPLE, now)


def test_different_secrets_give_different_isns():
    a = IsnGenerator(SECRET)
    b = IsnGenerator(bytes(16))
    assert a.isn(*TUPLE, 1.0) != b.isn(*TUPLE, 1.0)
    # Random secrets by default: two generators disagree (a 2**-32 chance of a false failure
    # per comparison; three comparisons).
    r1, r2 = IsnGenerator(), IsnGenerator()
    assert any(r1.isn(*TUPLE, t) != r2.isn(*TUPLE, t) for t in (0.0, 1.0, 2.0))


def test_isn_rejects_bad_arguments():
    with pytest.raises(ValueError):
        IsnGenerator(b"0123456789")
    g = IsnGenerator(SECRET)
    with pytest.raises(OverflowError):
        g.isn(1, 65536, 2, 80, 0.0)
    with pytest.raises(OverflowError):
        g.isn(2**32, 1, 2, 80, 0.0)
    with pytest.raises(OverflowError):
        g.isn(1, -1, 2, 80, 0.0)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            g.isn(*TUPLE, bad)


@settings(max_examples=200, deadline=None)
@given(lip=st.integers(0, 2**32 - 1), lport=st.integers(0, 2**16 - 1),
       rip=st.integers(0, 2**32 - 1), rport=st.integers(0, 2**16 - 1),
       now=st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
       secret=st.binary(min_size=16, max_size=16))
def test_isn_model(lip, lport, rip, rport, now, secret):
    assert IsnGenerator(secret).isn(lip, lport, rip, rport, now) == \
        rfc6528_isn(secret, lip, lport, rip, rport, now)


def test_mac_is_keyed_by_a_key_derived_from_the_secret():
    g = IsnGenerator(SECRET)
    data = b"cookie input"
    labels = _isn._MAC_KEY_LABELS
    derived = (siphash24(SECRET, labels[0]).to_bytes(8, "little")
               + siphash24(SECRET, labels[1]).to_bytes(8, "little"))
    assert g.mac(data) == siphash24(derived, data)
    assert g.mac(data) == IsnGenerator(SECRET).mac(data)
    assert g.mac(data) != IsnGenerator(bytes(16)).mac(data)
    # Domain separation: the MAC of a 4-tuple is not the ISN's F.
    packed = struct.pack("!IHIH", *TUPLE)
    assert g.mac(packed) & 0xFFFFFFFF != g.isn(*TUPLE, 0.0)
    assert g.mac(packed) != siphash24(SECRET, packed)


# ============================================================================================
# RTO (RFC 6298)
# ============================================================================================

def test_rto_before_any_sample():
    r = RttEstimator()
    # 2.1: RTO <- 1 second; SRTT and RTTVAR undefined.
    assert r.rto == 1.0 and r.srtt is None and r.rttvar is None and r.backoff_count == 0
    # The initial value is clamped like any RTO.
    assert RttEstimator(initial_rto=0.05).rto == 0.2
    assert RttEstimator(initial_rto=100.0).rto == 60.0


def test_rto_hand_computed_sequence():
    # Dyadic numbers so every step is exact in binary floating point. K=4, G=1 ms,
    # alpha=1/8, beta=1/4.
    r = RttEstimator()
    # 2.2, R=0.5: SRTT=0.5, RTTVAR=0.25, RTO=0.5+max(0.001, 4*0.25)=1.5
    r.sample(0.5)
    assert (r.srtt, r.rttvar, r.rto) == (0.5, 0.25, 1.5)
    # 2.3, R=1.0: RTTVAR=3/4*0.25+1/4*|0.5-1.0|=0.3125; SRTT=7/8*0.5+1/8*1.0=0.5625;
    # RTO=0.5625+4*0.3125=1.8125
    r.sample(1.0)
    assert (r.srtt, r.rttvar, r.rto) == (0.5625, 0.3125, 1.8125)
    # R=0.5: RTTVAR=3/4*0.3125+1/4*|0.5625-0.5|=0.25; SRTT=7/8*0.5625+1/8*0.5=0.5546875;
    # RTO=0.5546875+1.0=1.5546875
    r.sample(0.5)
    assert (r.srtt, r.rttvar, r.rto) == (0.5546875, 0.25, 1.5546875)
    # R=0.25 (RTTVAR uses the old SRTT): RTTVAR=3/4*0.25+1/4*|0.5546875-0.25|=0.26367187...
    r.sample(0.25)
    assert r.rttvar == pytest.approx(0.1875 + 0.0761718750)
    assert r.srtt == pytest.approx(0.875 * 0.5546875 + 0.03125)
    assert r.rto == pytest.approx(r.srtt + 4 * r.rttvar)


def test_rto_uses_the_clock_granularity_when_rttvar_is_tiny():
    # RTO = SRTT + max(G, K*RTTVAR): with steady samples RTTVAR decays by 3/4 each time,
    # 0.05*(3/4)**29 * 4 < 0.001, so G decides.
    r = RttEstimator(min_rto=0.01, granularity=0.001)
    for _ in range(30):
        r.sample(0.1)
    assert r.srtt == pytest.approx(0.1)
    assert r.rttvar == pytest.approx(0.05 * 0.75**29)
    assert r.rto == pytest.approx(0.1 + 0.001)


def test_rto_clamps():
    r = RttEstimator()
    r.sample(0.01)  # 0.01 + 4*0.005 = 0.03 -> min_rto 0.2 (Linux; RFC 6298 2.4 says 1 s)
    assert r.rto == 0.2
    r = RttEstimator(min_rto=1.0)  # the RFC's floor
    r.sample(0.01)
    assert r.rto == 1.0
    r = RttEstimator()
    r.sample(100.0)  # 100 + 200 = 300 -> max_rto 60 (2.5)
    assert r.rto == 60.0


def test_backoff_doubles_up_to_the_cap_and_a_sample_clears_it():
    r = RttEstimator()
    r.sample(0.5)  # RTO 1.5
    seen = [r.backoff() for _ in range(7)]
    # 5.5: RTO <- RTO*2, capped at 60 s.
    assert seen == [3.0, 6.0, 12.0, 24.0, 48.0, 60.0, 60.0]
    assert r.backoff_count == 7 and r.rto == 60.0
    # A new sample: 2.3 again, backoff gone. RTTVAR=3/4*0.25+1/4*0=0.1875, SRTT=0.5,
    # RTO=0.5+0.75=1.25
    r.sample(0.5)
    assert r.backoff_count == 0 and r.rto == 1.25


def test_backoff_before_any_sample():
    r = RttEstimator()
    assert [r.backoff() for _ in range(3)] == [2.0, 4.0, 8.0]


def test_syn_timeout_fallback_to_three_seconds():
    # 5.7: SYN timed out (RTO 1 s -> 2 s), handshake then completes without a sample:
    # the RTO becomes 3 s when data starts.
    r = RttEstimator()
    r.backoff()
    assert r.on_syn_timeout_fallback() == SYN_FALLBACK_RTO == 3.0
    assert r.rto == 3.0 and r.backoff_count == 0
    # A larger backed-off RTO is re-initialized to 3 s too.
    r = RttEstimator()
    for _ in range(4):
        r.backoff()  # 16 s
    assert r.on_syn_timeout_fallback() == 3.0
    # With a sample (timestamps), the measured RTO stands.
    r = RttEstimator()
    r.sample(0.5)
    assert r.on_syn_timeout_fallback() == 1.5
    # An initial RTO already >= 3 s is kept.
    assert RttEstimator(initial_rto=5.0).on_syn_timeout_fallback() == 5.0


def test_rtt_sample_validation():
    r = RttEstimator()
    for bad in (-0.001, math.nan):
        with pytest.raises(ValueError):
            r.sample(bad)
    r.sample(0.0)  # a zero RTT is possible with a coarse virtual clock
    assert r.rto == 0.2
    with pytest.raises(ValueError):
        RttEstimator(min_rto=2.0, max_rto=1.0)


# ============================================================================================
# NewReno (RFC 5681, RFC 6582, RFC 3465, RFC 6928)
# ============================================================================================

MSS = 1000


def test_initial_window_rfc6928():
    # IW = min(10*MSS, max(2*MSS, 14600))
    assert rfc6928_initial_window(1460) == 14600
    assert rfc6928_initial_window(536) == 5360
    assert rfc6928_initial_window(1000) == 10000
    assert rfc6928_initial_window(4000) == 14600
    assert rfc6928_initial_window(9000) == 18000
    cc = NewReno(1460)
    assert cc.cwnd == cc.initial_window == 14600 and cc.ssthresh == INFINITE_SSTHRESH
    assert NewReno(1460, initial_window=2920).cwnd == 2920
    with pytest.raises(ValueError):
        NewReno(1460, initial_window=1000)
    with pytest.raises(ValueError):
        NewReno(0)


def test_slow_start_byte_counting_rfc3465():
    cc = NewReno(MSS)  # cwnd 10000
    assert cc.in_slow_start
    cc.on_ack(1000, 10000, 0.0, None)   # min(1000, 2*1000)
    assert cc.cwnd == 11000
    cc.on_ack(500, 10000, 0.0, None)    # a partial segment counts its bytes: +500
    assert cc.cwnd == 11500
    cc.on_ack(3000, 10000, 0.0, None)   # a stretch ACK: min(3000, L=2*SMSS) = 2000
    assert cc.cwnd == 13500
    cc.on_ack(3000, 10000, 0.0, None, acks=2)  # two coalesced ACKs: min(3000, 2*2000)
    assert cc.cwnd == 16500
    cc.on_ack(0, 10000, 0.0, None)      # nothing new acknowledged: no change
    assert cc.cwnd == 16500


def test_slow_start_doubles_per_round_trip_with_an_ack_per_segment():
    cc = NewReno(MSS)
    for _ in range(3):  # three RTTs, every segment of the window acknowledged
        for _ in range(cc.cwnd // MSS):
            cc.on_ack(MSS, cc.cwnd, 0.0, None)
    assert cc.cwnd == 10000 * 2**3


def test_slow_start_with_delayed_acks_also_doubles_thanks_to_l2():
    # Every other segment ACKed (2*SMSS per ACK): with L=2*SMSS the window still doubles per
    # RTT (RFC 3465 section 2.3's motivation).
    cc = NewReno(MSS)
    for _ in range(cc.cwnd // (2 * MSS)):
        cc.on_ack(2 * MSS, cc.cwnd, 0.0, None)
    assert cc.cwnd == 20000


def test_slow_start_stops_at_ssthresh_and_carries_the_rest():
    cc = NewReno(MSS)
    cc.ssthresh = 11000
    cc.on_ack(2000, 10000, 0.0, None)
    # +2000 would pass ssthresh: cwnd = 11000, the other 1000 go to congestion avoidance.
    assert cc.cwnd == 11000 and cc.bytes_acked == 1000
    assert not cc.in_slow_start


def test_congestion_avoidance_grows_one_smss_per_window():
    cc = NewReno(MSS)
    cc.cwnd, cc.ssthresh = 20000, 10000
    # RFC 3465 2.1: bytes_acked reaches cwnd after 20 segments; then cwnd += SMSS.
    for _i in range(19):
        cc.on_ack(MSS, 20000, 0.0, 0.1)
        assert cc.cwnd == 20000
    cc.on_ack(MSS, 20000, 0.0, 0.1)
    assert cc.cwnd == 21000 and cc.bytes_acked == 0
    # Several RTTs: one SMSS each, whatever the ACK pattern (here: two segments per ACK).
    for _rtt in range(5):
        start = cc.cwnd
        for _ in range(start // (2 * MSS)):
            cc.on_ack(2 * MSS, start, 0.0, 0.1)
        leftover = start % (2 * MSS)
        if leftover:
            cc.on_ack(leftover, start, 0.0, 0.1)
        assert cc.cwnd == start + MSS


def test_congestion_avoidance_matches_equation_3_over_a_window():
    # Equation 3, cwnd += SMSS*SMSS/cwnd per ACK, summed over one window of per-segment ACKs
    # gives ~1 SMSS: byte counting gives exactly 1 SMSS.
    cc = NewReno(MSS)
    cc.cwnd, cc.ssthresh = 40000, 20000
    eq3 = 40000.0
    for _ in range(40):
        cc.on_ack(MSS, 40000, 0.0, None)
        eq3 += MSS * MSS / eq3
    assert cc.cwnd == 41000
    assert eq3 == pytest.approx(41000, abs=MSS * 0.05)


def test_congestion_avoidance_never_adds_more_than_smss_per_call():
    cc = NewReno(MSS)
    cc.cwnd, cc.ssthresh = 10000, 5000
    cc.on_ack(25000, 10000, 0.0, None)  # implausible, but capped: +1 SMSS
    assert cc.cwnd == 11000


def test_fast_recovery_numbers():
    cc = NewReno(MSS)
    cc.cwnd, cc.ssthresh = 20000, INFINITE_SSTHRESH
    # Third dupack, FlightSize 20000: ssthresh = max(20000/2, 2*1000) = 10000,
    # cwnd = ssthresh + 3*SMSS = 13000 (RFC 5681 3.2 steps 2-3).
    cc.on_enter_recovery(20000, 1.0)
    assert (cc.ssthresh, cc.cwnd) == (10000, 13000)
    # Two more dupacks: +SMSS each (step 4).
    cc.on_dupack_in_recovery()
    cc.on_dupack_in_recovery()
    assert cc.cwnd == 15000
    # Partial ACK of 4000: deflate by 4000, add back SMSS (>= SMSS acked): 15000-4000+1000.
    cc.on_partial_ack(4000)
    assert cc.cwnd == 12000
    # Partial ACK of 500 (< SMSS): no add-back: 11500.
    cc.on_partial_ack(500)
    assert cc.cwnd == 11500
    # Full ACK with 6000 outstanding: cwnd = ssthresh (Linux tcp_end_cwnd_reduction).
    cc.on_exit_recovery(6000)
    assert (cc.cwnd, cc.ssthresh) == (10000, 10000)


def test_exit_recovery_options():
    cc = NewReno(MSS)
    cc.on_enter_recovery(20000, 0.0)
    cc.on_exit_recovery(30000)  # ssthresh
    assert cc.cwnd == 10000
    cc.on_enter_recovery(20000, 0.0)
    cc.on_exit_recovery(0)      # nothing outstanding: still ssthresh, as Linux (not 2 SMSS)
    assert cc.cwnd == 10000


def test_enter_recovery_with_a_small_flight_uses_the_two_segment_floor():
    cc = NewReno(MSS)
    cc.on_enter_recovery(3000, 0.0)  # max(1500, 2000) = 2000; cwnd = 5000
    assert (cc.ssthresh, cc.cwnd) == (2000, 5000)


def test_partial_ack_never_deflates_below_one_segment():
    cc = NewReno(MSS)
    cc.on_enter_recovery(20000, 0.0)   # cwnd 13000
    cc.on_partial_ack(19000)           # 13000 - 19000 + 1000 < SMSS -> SMSS
    assert cc.cwnd == MSS


def test_timeout_numbers_and_slow_start_after_rto():
    cc = NewReno(MSS)
    cc.cwnd = 20000
    # RFC 5681 eq. 4: ssthresh = max(16000/2, 2000) = 8000; cwnd = LW = 1 SMSS.
    cc.on_timeout(16000)
    assert (cc.ssthresh, cc.cwnd) == (8000, 1000)
    # The same segment times out again: ssthresh held, cwnd stays 1 SMSS.
    cc.on_timeout(16000)
    assert (cc.ssthresh, cc.cwnd) == (8000, 1000)
    # Slow start after the RTO uses L = 1*SMSS: a 3000-byte ACK opens cwnd by 1000 only.
    cc.on_ack(3000, 16000, 0.0, None)
    assert cc.cwnd == 2000
    cc.on_ack(1000, 16000, 0.0, None)
    assert cc.cwnd == 3000
    # ... until ssthresh (cwnd 3000 -> 8000 after five more single-segment ACKs) ...
    for _ in range(5):
        cc.on_ack(MSS, 8000, 0.0, None)
    assert cc.cwnd == 8000 and not cc.in_slow_start
    # A later timeout (new data was ACKed in between) recomputes ssthresh: max(5000, 2000).
    cc.on_timeout(10000)
    assert (cc.ssthresh, cc.cwnd) == (5000, 1000)


def test_timeout_small_flight_floor():
    cc = NewReno(MSS)
    cc.on_timeout(1500)  # max(750, 2000)
    assert (cc.ssthresh, cc.cwnd) == (2000, 1000)


def test_timeout_after_slow_start_exit_l_returns_to_2():
    cc = NewReno(MSS)
    cc.on_timeout(4000)   # ssthresh 2000, cwnd 1000
    cc.on_ack(1000, 4000, 0.0, None)  # cwnd 2000 = ssthresh: slow start over
    cc.on_enter_recovery(2000, 0.0)   # ssthresh 2000, cwnd 5000
    cc.on_exit_recovery(0)            # cwnd 2000 = ssthresh
    cc.ssthresh = 100000              # force slow start again: L is 2*SMSS again
    cc.on_ack(3000, 2000, 0.0, None)
    assert cc.cwnd == 4000


def test_restart_after_idle():
    cc = NewReno(MSS)  # IW 10000
    cc.cwnd = 30000
    cc.on_idle(0.5, 1.0)   # not idle longer than the RTO: unchanged
    assert cc.cwnd == 30000
    cc.on_idle(1.0, 1.0)   # "exceeding" the RTO: equal is not enough
    assert cc.cwnd == 30000
    cc.on_idle(2.0, 1.0)   # RW = min(IW, cwnd) = 10000
    assert cc.cwnd == 10000
    cc.cwnd = 4000
    cc.on_idle(5.0, 1.0)   # RW = min(10000, 4000): cwnd stays 4000
    assert cc.cwnd == 4000


def test_syn_retransmitted_means_one_segment_iw():
    cc = NewReno(MSS)
    cc.on_syn_retransmitted()  # RFC 5681 3.1
    assert cc.cwnd == cc.initial_window == MSS
    cc.set_mss(1460)
    assert cc.cwnd == cc.initial_window == 1460


def test_set_mss():
    # Before any change the IW is recomputed: 536 -> 5360 bytes, 1460 -> 14600.
    cc = NewReno(536)
    assert cc.cwnd == 5360
    cc.set_mss(1460)
    assert (cc.mss, cc.cwnd, cc.initial_window) == (1460, 14600, 14600)
    # Afterwards cwnd and ssthresh keep their size in segments.
    cc = NewReno(MSS)
    cc.on_enter_recovery(16000, 0.0)   # ssthresh 8000, cwnd 11000
    cc.on_exit_recovery(20000)         # cwnd 8000
    cc.set_mss(500)
    assert (cc.cwnd, cc.ssthresh, cc.initial_window) == (4000, 4000, 5000)  # IW: min(5000, 14600)
    with pytest.raises(ValueError):
        cc.set_mss(0)


@settings(max_examples=300, deadline=None)
@given(mss=st.integers(100, 9000),
       events=st.lists(st.tuples(st.sampled_from(["ack", "enter", "dup", "partial", "exit",
                                                  "timeout", "idle"]),
                                 st.integers(0, 200000), st.integers(1, 4)),
                       max_size=60))
def test_newreno_invariants(mss, events):
    cc = NewReno(mss)
    for kind, n, acks in events:
        if kind == "ack":
            cc.on_ack(n, n, 0.0, None, acks=acks)
        elif kind == "enter":
            cc.on_enter_recovery(n, 0.0)
            assert cc.ssthresh >= 2 * mss and cc.cwnd == cc.ssthresh + 3 * mss
        elif kind == "dup":
            cc.on_dupack_in_recovery()
        elif kind == "partial":
            cc.on_partial_ack(n)
        elif kind == "exit":
            cc.on_exit_recovery(n)
            assert cc.cwnd <= cc.ssthresh
        elif kind == "timeout":
            cc.on_timeout(n)
            assert cc.cwnd == mss
        else:
            cc.on_idle(n / 1000, 1.0)
        assert cc.cwnd >= mss
        assert cc.ssthresh >= 2 * mss
        assert isinstance(cc.cwnd, int) and isinstance(cc.ssthresh, int)


def test_interface_is_abstract_and_subclassable():
    with pytest.raises(TypeError):
        CongestionControl(MSS)

    class Fixed(CongestionControl):
        """A user policy: a fixed window, to show the interface is enough to write one."""
        name = "fixed"

        def on_ack(self, acked, flight_size, now, rtt, acks=1):
            pass

        def on_enter_recovery(self, flight_size, now):
            pass

        def on_dupack_in_recovery(self):
            pass

        def on_partial_ack(self, acked):
            pass

        def on_exit_recovery(self, flight_size):
            pass

        def on_timeout(self, flight_size):
            pass

    f = Fixed(MSS, initial_window=64000)
    f.on_ack(1000, 1000, 0.0, 0.01)
    assert f.cwnd == 64000
    assert resolve(Fixed) is Fixed


def test_resolve_by_name():
    assert resolve("newreno") is NewReno is ALGORITHMS["newreno"]
    assert resolve("NewReno") is NewReno
    with pytest.raises(ValueError):
        resolve("vegas")
    with pytest.raises(TypeError):
        resolve(int)
