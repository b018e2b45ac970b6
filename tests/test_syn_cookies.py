"""SYN cookies (RFC 4987 section 3.6) and a SYN flood in virtual time."""
import random
import tracemalloc

from fasttcp.link import exchange

from fasttcp import Host, State
from fasttcp.tcp._cookies import MSS_VALUES, SynCookies, decode_options, encode_options
from fasttcp.tcp._isn import IsnGenerator
from fasttcp.wire import TcpOptions, build_tcp, parse

SERVER, CLIENT = "10.0.0.2", "10.0.0.1"
SYN, ACK, RST = 0x02, 0x10, 0x04


# --- the cookie itself ------------------------------------------------------------------

def test_cookie_round_trip_carries_the_mss_and_expires():
    c = SynCookies(IsnGenerator(bytes(16)))
    for mss in (536, 1000, 1460, 1448, 9000):
        cookie, enc = c.make(1, 80, 2, 4000, 12345, mss, 100.0)
        assert enc == max(v for v in MSS_VALUES if v <= mss)
        assert c.check(1, 80, 2, 4000, 12345, cookie, 100.0) == enc
        assert c.check(1, 80, 2, 4000, 12345, cookie, 100.0 + 64) == enc      # previous period
        assert c.check(1, 80, 2, 4000, 12345, cookie, 100.0 + 130) == 0       # too old
        # any other 4-tuple, client ISN or a flipped bit fails
        assert c.check(1, 80, 2, 4001, 12345, cookie, 100.0) == 0
        assert c.check(1, 80, 2, 4000, 12346, cookie, 100.0) == 0
        assert c.check(1, 80, 2, 4000, 12345, cookie ^ (1 << 24), 100.0) == 0
    other = SynCookies(IsnGenerator(bytes(range(16))))
    cookie, _ = c.make(1, 80, 2, 4000, 1, 1460, 10.0)
    assert other.check(1, 80, 2, 4000, 1, cookie, 10.0) == 0


def test_guessing_cookies_fails_at_the_mac_rate():
    c = SynCookies(IsnGenerator(bytes(16)))
    rng = random.Random(7)
    hits = sum(bool(c.check(1, 80, 2, 4000, 5, rng.getrandbits(32), 50.0)) for _ in range(20000))
    assert hits == 0                      # 24-bit MAC: expect ~0.001 hits in 20,000


def test_option_bits_round_trip():
    for ws in (-1, 0, 7, 14):
        for sack in (False, True):
            assert decode_options(encode_options(ws, sack)) == (ws, sack)


# --- the host -----------------------------------------------------------------------------

def _syn(src, sport, isn, opts=None):
    return build_tcp(src, SERVER, sport, 80, isn, 0, SYN, 64240,
                     options=opts or TcpOptions(mss=1460))


def test_cookie_handshake_exact_segments_and_mss():
    server = Host(SERVER, isn_secret=bytes(16), syn_cookies="always", timestamps=False)
    lst = server.listen(80)
    server.receive([_syn(CLIENT, 40000, 1000, TcpOptions(mss=1300))], 1.0)
    synack, = [parse(p) for p in server.transmit(1.0)]
    assert synack.flag_bits == SYN | ACK and synack.ack == 1001
    assert synack.options.mss == 1460
    assert not server.connections()                 # no state for the SYN
    assert server.stats()["syn_cookies_sent"] == 1
    ack = build_tcp(CLIENT, SERVER, 40000, 80, 1001, (synack.seq + 1) & 0xFFFFFFFF, ACK, 64240,
                    b"hello")
    server.receive([ack], 1.5)
    conn = lst.accept()
    assert conn is not None and conn.state == State.ESTABLISHED
    assert conn.mss == 1300                          # the MSS the cookie carried
    assert conn.recv() == b"hello"                   # data on the third segment is kept
    reply, = [parse(p) for p in server.transmit(1.6)]
    assert reply.ack == 1006 and reply.seq == (synack.seq + 1) & 0xFFFFFFFF
    assert server.stats()["syn_cookies_validated"] == 1


def test_cookie_with_timestamps_keeps_window_scale_and_sack():
    client = Host(CLIENT, isn_secret=bytes(16))
    server = Host(SERVER, isn_secret=bytes(16), syn_cookies="always")
    lst = server.listen(80)
    conn = client.connect((SERVER, 80))
    exchange(client, server, 0.0)
    srv = lst.accept()
    assert srv is not None and server.stats()["syn_cookies_validated"] == 1
    assert srv.ts_ok and srv.sack_ok and srv.info().snd_wscale == conn.info().rcv_wscale
    conn.send(b"x" * 100_000)
    exchange(client, server, 0.1, max_rounds=200)
    assert len(srv.recv(1 << 20)) == 100_000


def test_cookie_tsval_never_runs_ahead_of_the_clock():
    """The option bits ride in the low bits of the SYN-ACK's TSval. They must not make it
    larger than our clock, or the peer's PAWS check (RFC 7323 5.3) drops every segment we
    send in the next milliseconds (Linux steps the cookie TSval back one unit, too)."""
    for i in range(64):                           # many 4-tuples: many clock low bits
        client = Host(CLIENT, isn_secret=bytes(16))
        server = Host(SERVER, isn_secret=bytes([i]) * 16, syn_cookies="always")
        lst = server.listen(80)
        conn = client.connect((SERVER, 80), local_port=40000 + i)
        exchange(client, server, 5.0)
        srv = lst.accept()
        assert srv is not None and srv.ts_ok
        srv.send(b"answer")                       # at once: our clock has not moved
        srv.close()
        exchange(client, server, 5.0)
        assert conn.recv() == b"answer" and conn.eof, f"tuple {i}"
        assert client.stats().get("drop_paws", 0) == 0


def test_forged_ack_to_listener_is_reset_and_counted():
    server = Host(SERVER, isn_secret=bytes(16), syn_cookies="always")
    server.listen(80)
    server.receive([_syn(CLIENT, 40000, 1000)], 1.0)
    server.transmit(1.0)
    server.receive([build_tcp(CLIENT, SERVER, 40001, 80, 5, 77, ACK, 1000)], 1.1)
    rst, = [parse(p) for p in server.transmit(1.1)]
    assert rst.flag_bits == RST and rst.seq == 77
    assert server.stats()["syn_cookies_failed"] == 1
    assert not server.connections()


def test_syn_flood_real_clients_connect_and_memory_stays_flat():
    """100,000 SYNs from random spoofed sources while real clients connect and transfer."""
    rng = random.Random(1)
    server = Host(SERVER, syn_backlog=128, backlog=1024)
    lst = server.listen(80)
    clients = [Host(f"10.1.{i // 200}.{i % 200 + 1}") for i in range(20)]
    now = 0.0

    def flood(n):
        batch = []
        for _ in range(n):
            src = (f"{rng.randrange(11, 223)}.{rng.randrange(256)}.{rng.randrange(256)}"
                   f".{rng.randrange(1, 255)}")
            batch.append(_syn(src, rng.randrange(1024, 65536), rng.getrandbits(32)))
        server.receive(batch, now)
        return [p for p in server.transmit(now)]

    def route(packets):
        # deliver the server's output to the real clients; flood replies go nowhere
        by_addr = {c.address: [] for c in clients}
        flood_replies = 0
        for p in packets:
            dst = parse(p).dst
            if dst in by_addr:
                by_addr[dst].append(p)
            else:
                flood_replies += 1
        for c in clients:
            if by_addr[c.address]:
                c.receive(by_addr[c.address], now)
        return flood_replies

    flood(20_000)                                  # the SYN queue fills, cookies start
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    conns = [c.connect((SERVER, 80), now=now) for c in clients]
    cookie_replies = 0
    for _step in range(40):
        now += 0.05
        out = flood(2_000)
        for c in clients:
            server.receive(c.transmit(now), now)
        out += server.transmit(now)
        cookie_replies += route(out)
        for conn in conns:
            if conn.state == State.ESTABLISHED and conn.bytes_sent == 0:
                conn.send(b"r" * 10_000)
        while lst.accept() is not None:
            pass
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    for _ in range(50):                            # let the transfers finish
        now += 0.05
        for c in clients:
            server.receive(c.transmit(now), now)
        route(server.transmit(now))
    stats = server.stats()
    assert all(c.state == State.ESTABLISHED for c in conns)
    assert all(c.bytes_acked == 10_000 for c in conns)
    # Every flood SYN after the queue filled was answered by a cookie, holding no state.
    assert stats["syn_cookies_sent"] >= 100_000 - 128 - len(clients)
    assert cookie_replies >= 80_000
    assert len(server.connections()) <= 128 + len(clients)
    # 80,000 flood SYNs during the measurement: far less than a byte of state per SYN.
    assert grown < 2_000_000, grown
