"""Connection.recv_to: zero-copy delivery of the receive buffer as memoryviews."""
import random

import pytest

from fasttcp import Host
from fasttcp.link import exchange


def _pair(rcv_buf: int):
    client = Host("10.0.0.1", isn_secret=bytes(16))
    server = Host("10.0.0.2", isn_secret=bytes(16), rcv_buf=rcv_buf)
    lst = server.listen(80)
    c = client.connect(("10.0.0.2", 80))
    exchange(client, server, 0.0)
    return client, server, c, lst.accept()


def test_views_carry_the_stream_across_ring_wraps_and_respect_max_bytes():
    client, server, c, s = _pair(rcv_buf=5000)         # a small ring: it wraps often
    data = random.Random(3).randbytes(200_000)
    got = bytearray()
    sizes = []

    def consumer(view):
        assert isinstance(view, memoryview) and view.readonly
        sizes.append(len(view))
        got.extend(view)

    sent, now = 0, 0.0
    while len(got) < len(data):
        sent += c.send(data[sent:sent + 3000])
        now += 0.001
        exchange(client, server, now)
        before = len(got)
        delivered = s.recv_to(consumer, 1234)
        assert 0 <= delivered <= 1234 and len(got) - before == delivered
    assert bytes(got) == data
    assert max(sizes) <= 1234
    assert len(sizes) > len(data) // 1234            # one or two views per call


def test_a_consumer_keeping_an_export_gets_buffer_error_and_nothing_is_consumed():
    client, server, c, s = _pair(rcv_buf=65536)
    c.send(b"hello world")
    exchange(client, server, 0.01)
    for keep in (lambda v: memoryview(v), lambda v: v[2:5]):  # a view, a slice
        kept = []
        with pytest.raises(BufferError):
            s.recv_to(lambda view: kept.append(keep(view)))  # noqa: B023 - called at once
        assert bytes(kept[0][:2]) in (b"he", b"ll")       # still valid memory
        kept.clear()
    assert s.recv() == b"hello world"                 # still buffered


def test_nothing_buffered_returns_zero():
    client, server, c, s = _pair(rcv_buf=65536)
    assert s.recv_to(lambda view: pytest.fail("no data")) == 0


# ==========================================================================================
# Host.receive(..., defer_copy=True): in-order data stays in the packets until it is read
# or Host.settle() copies it; after settle the packets' buffers may be reused.
# ==========================================================================================

def _deliver_deferred(client, server, now, rng, drop=0.0, reorder=False):
    """client -> server with defer_copy (a bytearray per packet, some dropped or the
    batch shuffled), server -> client as usual. Returns the server's packet buffers."""
    pkts = [bytearray(p) for p in client.transmit(now) if rng.random() >= drop]
    if reorder:
        rng.shuffle(pkts)
    server.receive(pkts, now, 0, True)
    return pkts


def _scribble(bufs):
    for b in bufs:
        b[:] = b"\xee" * len(b)


def test_deferred_data_is_read_in_place_and_settled_before_reuse():
    client, server, c, s = _pair(rcv_buf=1 << 20)
    c.send(b"x")                                    # the first data makes the buffer
    exchange(client, server, 0.005)
    assert s.recv() == b"x"
    rng = random.Random(5)
    data = rng.randbytes(12_000)
    c.send(data)
    bufs = _deliver_deferred(client, server, 0.01, rng)
    n = s.readable                                  # the full segments (Nagle keeps the rest)
    assert n >= 8000 and len(bufs) > 3
    reasm = s._reassembler()
    assert reasm.nspans > 0 and reasm.span_bytes == n         # not copied yet
    got = bytearray(s.recv(1000))
    buf = bytearray(2000)
    got += buf[:s.recv_into(buf)]
    view_sizes = []
    s.recv_to(lambda v: (view_sizes.append(len(v)), got.extend(v)), 5000)
    server.settle()
    assert reasm.nspans == 0 and s.readable == n - len(got)
    _scribble(bufs)                                           # the link reuses them
    got += s.recv()
    assert bytes(got) == data[:n]
    assert view_sizes and max(view_sizes) <= 5000


def test_deferred_copy_across_loss_reordering_and_partial_reads():
    """Many rounds, random loss and reordering (out-of-order data always goes to the
    ring; in-order data may be deferred), random reads by every method before each
    settle(); the buffers are overwritten after every settle. The stream arrives whole."""
    rng = random.Random(11)
    client, server, c, s = _pair(rcv_buf=40_000)
    data = rng.randbytes(400_000)
    got = bytearray()
    sent, now, deferred_rounds = 0, 0.0, 0
    for _ in range(20_000):
        if len(got) == len(data):
            break
        sent += c.send(data[sent:sent + rng.choice([500, 3000, 20_000])])
        now += 0.01
        bufs = _deliver_deferred(client, server, now, rng, drop=0.05,
                                 reorder=rng.random() < 0.3)
        reasm = s._reassembler()
        deferred_rounds += reasm is not None and reasm.nspans > 0
        for _ in range(rng.randint(0, 3)):                    # reads before settle
            how = rng.randrange(3)
            if how == 0:
                got += s.recv(rng.randint(1, 5000))
            elif how == 1:
                buf = bytearray(rng.randint(1, 5000))
                got += buf[:s.recv_into(buf)]
            else:
                s.recv_to(got.extend, rng.randint(1, 5000))
        server.settle()
        _scribble(bufs)
        acks = server.transmit(now)
        if acks:
            client.receive(acks, now)
        if rng.random() < 0.5:
            got += s.recv()
    assert bytes(got) == data
    assert deferred_rounds > 20                     # the deferred path did carry data
