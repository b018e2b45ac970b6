"""Resource limits are enforced and counted when they bite."""
from fasttcp import Host, State
from fasttcp.link import exchange
from fasttcp.wire import TcpOptions, build_tcp, parse

SERVER, CLIENT = "10.0.0.2", "10.0.0.1"
SYN, ACK = 0x02, 0x10


def test_accept_queue_overflow_drops_syns_and_counts_them():
    server = Host(SERVER, isn_secret=bytes(16))
    lst = server.listen(80, backlog=2)
    clients = [Host(f"10.0.1.{i + 1}") for i in range(4)]
    conns = [c.connect((SERVER, 80), now=0.0) for c in clients]
    for c in clients:
        server.receive(c.transmit(0.0), 0.0)
        for p in server.transmit(0.0):
            c.receive([p], 0.0)
        server.receive(c.transmit(0.0), 0.0)
    assert len(lst) == 2                         # the backlog is full
    st = server.stats()
    assert st["drop_listen_overflow"] == 2       # the last two SYNs were not answered
    assert [c.state for c in conns].count(State.ESTABLISHED) == 2
    assert [c.state for c in conns].count(State.SYN_SENT) == 2
    # Once accept() makes room, a retransmitted SYN gets in (RFC 9293: the peer retries).
    assert lst.accept() is not None and lst.accept() is not None
    for c in clients[2:]:
        out = c.transmit(1.5)                    # SYN retransmission after the 1 s RTO
        assert out and parse(out[0]).flag_bits == SYN
        server.receive(out, 1.5)
        c.receive(server.transmit(1.5), 1.5)
        server.receive(c.transmit(1.5), 1.5)
    assert all(c.state == State.ESTABLISHED for c in conns)
    assert len(lst) == 2


def test_syn_queue_limit_without_cookies_drops_and_counts():
    server = Host(SERVER, syn_backlog=3, syn_cookies=False)
    server.listen(80)
    syns = [build_tcp(f"10.0.2.{i + 1}", SERVER, 4000, 80, i, 0, SYN, 1000,
                      options=TcpOptions(mss=1460)) for i in range(10)]
    server.receive(syns, 0.0)
    assert len(server.transmit(0.0)) == 3
    assert server.stats()["drop_syn_queue_full"] == 7
    assert len(server.connections()) == 3


def test_max_connections_refuses_new_ones():
    server = Host(SERVER, max_connections=2, syn_cookies=False)
    server.listen(80)
    syns = [build_tcp(f"10.0.3.{i + 1}", SERVER, 4000, 80, i, 0, SYN, 1000) for i in range(5)]
    server.receive(syns, 0.0)
    assert len(server.connections()) == 2
    assert server.stats()["drop_max_connections"] == 3


def test_out_of_order_hole_limit_is_counted_and_memory_bounded():
    client, server = Host(CLIENT, max_ooo_holes=2), Host(SERVER, max_ooo_holes=2)
    lst = server.listen(80)
    c = client.connect((SERVER, 80), now=0.0)
    exchange(client, server, 0.0)
    s = lst.accept()
    c.send(b"x" * 20 * 1448)
    out = client.transmit(0.1)
    data = [p for p in out if parse(p).payload_len]
    # every other segment: each one opens a new hole
    server.receive(data[1::2], 0.1)
    st = server.stats()
    assert st["drop_ooo_hole_limit"] >= 1
    assert s._reasm.holes <= 2
    # the rest arrives; the sender's retransmissions fill what was refused
    server.receive(data[0::2], 0.2)
    exchange(client, server, 2.0, max_rounds=200)
    for t in (3.0, 5.0, 9.0):
        exchange(client, server, t, max_rounds=200)
    assert s.recv(1 << 20) == b"x" * 20 * 1448


def test_time_wait_table_limit():
    client, server = Host(CLIENT, max_time_wait=1), Host(SERVER)
    lst = server.listen(80, backlog=10)
    conns = []
    for _i in range(3):
        c = client.connect((SERVER, 80), now=0.0)
        exchange(client, server, 0.0)
        s = lst.accept()
        c.close()                               # the client closes first: it gets TIME-WAIT
        exchange(client, server, 0.0)
        s.close()
        exchange(client, server, 0.0)
        conns.append(c)
    st = client.stats()
    assert st["time_wait"] == 1 and st["time_wait_overflow"] == 2
    assert [c.state for c in conns].count(State.TIME_WAIT) == 1


def test_closed_connections_are_freed_at_once_not_held_by_stale_timers():
    """A connection that closed must not stay alive until an old timer deadline (an RTO
    armed a second ahead, a keepalive hours ahead) comes round: with a high connection
    rate that would hold thousands of dead connections and their buffers."""
    import gc
    import weakref

    client = Host("10.0.0.1", isn_secret=bytes(16), msl=0.0005, keepalive=7200.0)
    server = Host("10.0.0.2", isn_secret=bytes(16), msl=0.0005, keepalive=7200.0)
    lst = server.listen(80, backlog=100)
    refs = []
    now = 0.0
    for _ in range(50):
        c = client.connect(("10.0.0.2", 80))
        exchange(client, server, now)
        s = lst.accept()
        c.send(b"ping")
        exchange(client, server, now)
        assert s.recv() == b"ping"
        s.close()
        exchange(client, server, now)
        c.close()
        exchange(client, server, now)
        now += 0.001
        for h in (client, server):
            h.transmit(now)
        refs += [weakref.ref(c), weakref.ref(s)]
        del c, s
    assert not client.connections() and not server.connections()
    gc.collect()
    alive = sum(r() is not None for r in refs)
    assert alive == 0, f"{alive} closed connections still referenced"
    # Stale heap entries do not make poll_at() report a timer for nothing.
    assert client.poll_at() is None and server.poll_at() is None
