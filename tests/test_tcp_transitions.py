"""The state-transition table (fasttcp.tcp.transitions): the one place a connection's
state changes are listed, checked against the transitions RFC 9293 allows."""
from fasttcp import State
from fasttcp.tcp.transitions import TRANSITIONS, TcpEvent, lookup
from test_tcp_properties import ALLOWED

S = State


def table_pairs():
    return {(S(f), S(to)) for froms, _event, to, _rule in TRANSITIONS for f in froms}


def test_the_table_is_the_state_diagram():
    # Every arc the property tests accept has a rule, and every rule is such an arc,
    # except the one RFC 9293 has no arc for: a SYN cookie's ACK builds an ESTABLISHED
    # connection straight away (RFC 4987 3.6).
    assert ALLOWED <= table_pairs()
    assert table_pairs() - ALLOWED == {(S.CLOSED, S.ESTABLISHED)}


def test_every_rule_names_its_source():
    for froms, event, to, rule in TRANSITIONS:
        assert froms and rule, (froms, event, to)


def test_lookup_follows_the_table():
    assert lookup(S.ESTABLISHED, TcpEvent.E_CLOSE) == S.FIN_WAIT_1
    assert lookup(S.CLOSE_WAIT, TcpEvent.E_CLOSE) == S.LAST_ACK
    assert lookup(S.FIN_WAIT_1, TcpEvent.E_FIN) == S.CLOSING
    assert lookup(S.FIN_WAIT_1, TcpEvent.E_FIN_OURS_ACKED) == S.TIME_WAIT
    assert lookup(S.LAST_ACK, TcpEvent.E_FIN_ACKED) == S.CLOSED
    for state in State:
        expected = -1 if state in (S.CLOSED, S.LISTEN) else S.CLOSED
        assert lookup(state, TcpEvent.E_RST) == expected


def test_events_without_a_rule_are_no_transition():
    assert lookup(S.ESTABLISHED, TcpEvent.E_SYN_ACK) == -1
    assert lookup(S.TIME_WAIT, TcpEvent.E_CLOSE) == -1
    assert lookup(S.LISTEN, TcpEvent.E_PASSIVE_OPEN) == -1
    assert lookup(99, TcpEvent.E_RST) == -1
    assert lookup(S.ESTABLISHED, TcpEvent.EVENT_COUNT) == -1
