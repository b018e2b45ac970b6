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
            s.recv_to(lambda view: kept.append(keep(view)))
        assert bytes(kept[0][:2]) in (b"he", b"ll")       # still valid memory
        kept.clear()
    assert s.recv() == b"hello world"                 # still buffered


def test_nothing_buffered_returns_zero():
    client, server, c, s = _pair(rcv_buf=65536)
    assert s.recv_to(lambda view: pytest.fail("no data")) == 0
