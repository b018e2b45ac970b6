"""The Host's public hooks for drivers and tests: advance_clock and state_observer."""
from fasttcp import Host, State

A, B = "10.0.0.1", "10.0.0.2"


def test_advance_clock_moves_forward_only():
    h = Host(A)
    h.advance_clock(5.0)
    assert h.now == 5.0
    h.advance_clock(3.0)
    assert h.now == 5.0


def test_state_observer_sees_every_transition_in_order():
    client, server = Host(A), Host(B)
    seen = []
    client.state_observer = lambda conn, old, new: seen.append((old, new))
    server.listen(80)
    conn = client.connect((B, 80), now=0.0)
    t = 0.0
    for _ in range(4):
        server.receive(client.transmit(t), t)
        client.receive(server.transmit(t), t)
        t += 0.001
    assert conn.state == State.ESTABLISHED
    conn.abort()
    assert seen == [(State.CLOSED, State.SYN_SENT), (State.SYN_SENT, State.ESTABLISHED),
                    (State.ESTABLISHED, State.CLOSED)]
    assert isinstance(seen[0][1], State)
