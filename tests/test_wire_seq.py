"""Sequence-number arithmetic modulo 2**32 (RFC 9293 section 3.4, RFC 1982) against a
Python reference model.

fasttcp compares like Linux's before()/after(): ``a < b`` iff the signed 32-bit value of
``a - b`` is negative. That equals RFC 1982's serial-number order for every pair whose
distance is not exactly 2**31; RFC 1982 leaves that one distance undefined, and here both
``a < b`` and ``b < a`` hold (a TCP window never spans 2**31, RFC 7323 2.3 caps it at 2**30).
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fasttcp.wire import seq_add, seq_between, seq_diff, seq_ge, seq_gt, seq_le, seq_lt

MOD = 1 << 32
HALF = 1 << 31

u32 = st.integers(0, MOD - 1)
# Points close to the wrap and to the half-circle boundary are where mistakes live.
edgy_u32 = st.one_of(
    u32,
    st.integers(0, 64),
    st.integers(MOD - 64, MOD - 1),
    st.integers(HALF - 64, HALF + 64),
)
small = st.integers(-(HALF - 1), HALF - 1)
SETTINGS = settings(max_examples=400, deadline=None)


# --- reference model ------------------------------------------------------------------------

def rfc1982_lt(i1: int, i2: int) -> bool:
    """RFC 1982 section 3.2, SERIAL_BITS = 32 (undefined at distance 2**31: returns False)."""
    return (i1 < i2 and i2 - i1 < HALF) or (i1 > i2 and i1 - i2 > HALF)


def ref_diff(a: int, b: int) -> int:
    """a - b as a signed 32-bit number (two's complement)."""
    d = (a - b) % MOD
    return d - MOD if d >= HALF else d


def ref_between(lo: int, x: int, hi: int) -> bool:
    """lo <= x < hi walking forward around the circle from lo."""
    return (x - lo) % MOD < (hi - lo) % MOD


# --- fixed cases ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "a, b, lt",
    [
        (0, 1, True),
        (1, 0, False),
        (0xFFFFFFFF, 0, True),            # wraps: 2**32 - 1 comes just before 0
        (0, 0xFFFFFFFF, False),
        (0xFFFFFFF0, 0x10, True),
        (0x10, 0xFFFFFFF0, False),
        (0, HALF - 1, True),              # the farthest point still "after" 0
        (0, HALF + 1, False),             # one step further is "before" 0
        (HALF + 1, 0, True),
        (5, 5, False),
    ],
)
def test_seq_lt_fixed_cases(a: int, b: int, lt: bool) -> None:
    assert seq_lt(a, b) is lt
    assert seq_gt(b, a) is lt
    assert seq_ge(a, b) is (not lt)
    assert seq_le(b, a) is (not lt)


def test_half_circle_distance_is_linux_order() -> None:
    # RFC 1982 leaves distance 2**31 undefined; the Linux rule makes each "before" the other.
    for a in (0, 1, 12345, HALF - 1, HALF, MOD - 1):
        b = (a + HALF) % MOD
        assert seq_lt(a, b) and seq_lt(b, a)
        assert not seq_gt(a, b) and not seq_gt(b, a)
        assert seq_diff(a, b) == -HALF and seq_diff(b, a) == -HALF


def test_wraparound_fixed_cases() -> None:
    assert seq_add(0xFFFFFFFF, 1) == 0
    assert seq_add(0, -1) == 0xFFFFFFFF
    assert seq_add(0xFFFFFFF0, 0x20) == 0x10
    assert seq_add(5, MOD) == 5
    assert seq_add(5, -MOD) == 5
    assert seq_diff(0, 0xFFFFFFFF) == 1
    assert seq_diff(0xFFFFFFFF, 0) == -1
    assert seq_diff(0x10, 0xFFFFFFF0) == 0x20
    assert seq_diff(HALF - 1, 0) == HALF - 1
    assert seq_between(0xFFFFFFF0, 0xFFFFFFF0, 0x10)     # lo itself is inside
    assert seq_between(0xFFFFFFF0, 0, 0x10)
    assert seq_between(0xFFFFFFF0, 0x0F, 0x10)
    assert not seq_between(0xFFFFFFF0, 0x10, 0x10)        # hi is outside
    assert not seq_between(0xFFFFFFF0, 0xFFFFFFEF, 0x10)
    assert not seq_between(7, 7, 7)                       # empty range
    assert seq_between(8, 6, 7)                           # [8, 7) is all but 7: wraps
    assert seq_between(8, 0, 7) and not seq_between(8, 7, 7)


@pytest.mark.parametrize("fn", [seq_lt, seq_le, seq_gt, seq_ge, seq_diff])
@pytest.mark.parametrize("a, b", [(-1, 0), (0, -1), (MOD, 0), (0, MOD)])
def test_out_of_range_arguments_raise(fn, a: int, b: int) -> None:
    with pytest.raises(OverflowError):
        fn(a, b)


def test_seq_between_rejects_out_of_range() -> None:
    with pytest.raises(OverflowError):
        seq_between(0, MOD, 5)


# --- properties against the model -----------------------------------------------------------

@SETTINGS
@given(edgy_u32, edgy_u32)
def test_comparisons_match_model(a: int, b: int) -> None:
    d = ref_diff(a, b)
    assert seq_diff(a, b) == d
    assert seq_lt(a, b) is (d < 0)
    assert seq_le(a, b) is (d <= 0)
    assert seq_gt(a, b) is (d > 0)
    assert seq_ge(a, b) is (d >= 0)
    if (a - b) % MOD != HALF:
        # RFC 1982 order wherever it is defined.
        assert seq_lt(a, b) is rfc1982_lt(a, b)
        assert seq_gt(a, b) is rfc1982_lt(b, a)
        # Trichotomy: exactly one of <, ==, > holds.
        assert [seq_lt(a, b), a == b, seq_gt(a, b)].count(True) == 1
        # Antisymmetry.
        assert seq_lt(a, b) is seq_gt(b, a)
        assert seq_diff(a, b) == -seq_diff(b, a)


@SETTINGS
@given(edgy_u32, st.integers(-(1 << 63), (1 << 63) - 1))
def test_seq_add_is_addition_mod_2_32(a: int, n: int) -> None:
    assert seq_add(a, n) == (a + n) % MOD


@SETTINGS
@given(edgy_u32, small)
def test_add_then_diff_round_trips(a: int, n: int) -> None:
    b = seq_add(a, n)
    assert seq_diff(b, a) == n
    assert seq_add(b, -n) == a
    # RFC 1982 3.1: adding a positive n < 2**31 makes the number "greater".
    if n > 0:
        assert seq_gt(b, a) and seq_lt(a, b) and not seq_le(b, a)
    elif n < 0:
        assert seq_lt(b, a)
    else:
        assert seq_le(a, b) and seq_ge(a, b)


@SETTINGS
@given(edgy_u32, st.integers(0, HALF - 1), st.integers(0, HALF - 1))
def test_transitivity_within_half_circle(a: int, d1: int, d2: int) -> None:
    # a <= b <= c with c - a < 2**31: order is transitive inside any such window.
    if d1 + d2 >= HALF:
        d2 = HALF - 1 - d1
    b = seq_add(a, d1)
    c = seq_add(b, d2)
    assert seq_le(a, b) and seq_le(b, c) and seq_le(a, c)
    if d1 and d2:
        assert seq_lt(a, c)


@SETTINGS
@given(edgy_u32, edgy_u32, edgy_u32)
def test_seq_between_matches_model(lo: int, x: int, hi: int) -> None:
    assert seq_between(lo, x, hi) is ref_between(lo, x, hi)
    # Inside a window of less than half the circle it agrees with lo <= x < hi (where
    # those comparisons are defined: x not exactly half the circle from lo or hi).
    if (hi - lo) % MOD < HALF and HALF not in ((x - lo) % MOD, (x - hi) % MOD):
        assert seq_between(lo, x, hi) is (seq_le(lo, x) and seq_lt(x, hi))


@SETTINGS
@given(edgy_u32, st.integers(1, HALF - 1), st.integers(0, HALF - 1))
def test_seq_between_window(lo: int, size: int, k: int) -> None:
    # A receive window [lo, lo + size): every offset inside is in, the edges behave.
    hi = seq_add(lo, size)
    assert seq_between(lo, seq_add(lo, k % size), hi)
    assert not seq_between(lo, hi, hi)
    assert not seq_between(lo, seq_add(lo, -1), hi)
