"""DEBUG logging on the "fasttcp.tcp" logger and per-connection qlog-style traces
(Host.trace_connection)."""
from __future__ import annotations

import gc
import io
import json
import logging
import weakref

import pytest

from fasttcp import Host, State
from tcp_harness import HOST_IP, PEER_IP, SECRET, Net

LOGGER = "fasttcp.tcp"


def _transfer(trace=None, drop_first_data=True):
    """a sends 20 kB to b's listener, the first data segment lost once; both close and
    run to CLOSED. Returns (a, b, ca, cb)."""
    a = Host(HOST_IP, isn_secret=SECRET, msl=0.05)
    b = Host(PEER_IP, isn_secret=SECRET, msl=0.05)
    lst = b.listen(80)
    dropped = []

    def drop(seg, sender):
        if drop_first_data and sender == "a" and seg.data and not dropped:
            dropped.append(seg)
            return True
        return False

    net = Net(a, b, latency=0.01, drop=drop)
    ca = a.connect((PEER_IP, 80))
    if trace is not None:
        trace(a, ca)
    data = bytes(range(256)) * 80
    ca.send(data)
    got = []
    box = {}

    def progress():
        if "cb" not in box:
            c = lst.accept()
            if c is None:
                return False
            box["cb"] = c
        got.append(box["cb"].recv())
        return sum(map(len, got)) == len(data)

    net.run(until=progress, deadline=30.0)
    cb = box["cb"]
    ca.close()
    cb.close()
    net.run(until=lambda: ca.state == cb.state == State.CLOSED, deadline=60.0)
    assert b"".join(got) == data and dropped
    return a, b, ca, cb


def test_debug_logging_tells_the_connection_lifecycle(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    a, b, ca, cb = _transfer()
    label = f"{HOST_IP}:{ca.local_address[1]}>{PEER_IP}:80"
    mine = [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.getMessage().startswith(label + " ")]
    changes = [m.split("state_updated: ")[1] for m in mine if "state_updated: " in m]
    # Both close at once (simultaneous close: CLOSING, RFC 9293 3.6).
    assert changes == ["CLOSED -> SYN_SENT", "SYN_SENT -> ESTABLISHED",
                       "ESTABLISHED -> FIN_WAIT_1", "FIN_WAIT_1 -> CLOSING",
                       "CLOSING -> TIME_WAIT", "TIME_WAIT -> CLOSED"]
    # The lost segment was resent: the retransmission is logged with the sender's state.
    assert any(m.endswith(": retransmitted_segments") for m in mine), mine
    assert any(m.endswith(": syns_out") for m in mine)
    assert a.tracing
    # The passive side logs with its own label.
    assert any(r.getMessage().startswith(f"{PEER_IP}:80>{HOST_IP}:")
               and "SYN_RECEIVED -> ESTABLISHED" in r.getMessage() for r in caplog.records)


def test_no_tracing_when_debug_is_off(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    a, b, ca, cb = _transfer()
    assert a.stats()["retransmitted_segments"] >= 1      # events did happen ...
    assert not a.tracing and not b.tracing               # ... with the switch off
    assert [r for r in caplog.records if r.name == LOGGER] == []
    a.receive([], 100.0)
    a.transmit(100.0)
    assert not a.tracing


def test_drop_without_connection_logged_at_debug(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    from fasttcp.wire import build_tcp, ip_to_int
    h = Host(HOST_IP, isn_secret=SECRET)
    syn = build_tcp(ip_to_int(PEER_IP), ip_to_int(HOST_IP), 1234, 81, 1000, 0, 0x02, 65535)
    h.receive([syn], 1.0)
    assert len(h.transmit(1.0)) == 1                      # the RST
    msgs = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert f"{PEER_IP}:1234>{HOST_IP}:81 dropped (segments_no_connection)" in msgs


def test_trace_connection_writes_qlog_json_lines(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    sink = io.StringIO()
    a, b, ca, cb = _transfer(trace=lambda host, conn: host.trace_connection(conn, sink))
    assert not b.tracing                                  # only a traces
    lines = sink.getvalue().splitlines()
    events = [json.loads(line) for line in lines]
    assert len(events) > 10
    for e in events:
        assert set(e) == {"time", "name", "data"}
        assert e["name"].startswith("tcp:")
        assert isinstance(e["time"], float) and e["time"] >= 0
        assert e["data"]["state"] in State.__members__
        assert isinstance(e["data"]["snd_una"], int) and isinstance(e["data"]["snd_nxt"], int)
    times = [e["time"] for e in events]
    assert times == sorted(times)
    states = [(e["data"]["old"], e["data"]["new"]) for e in events
              if e["name"] == "tcp:state_updated"]
    assert states[0] == ("SYN_SENT", "ESTABLISHED")
    assert states[-1] == ("TIME_WAIT", "CLOSED")
    names = {e["name"] for e in events}
    assert "tcp:retransmitted_segments" in names
    # The lost first segment's retransmission comes at least one RTT after the start.
    rtx = next(e for e in events if e["name"] == "tcp:retransmitted_segments")
    assert rtx["time"] >= 20.0 and rtx["data"]["state"] == "ESTABLISHED"
    assert rtx["data"]["snd_una"] == 1 and "cwnd" in rtx["data"]
    # Closed: the host stopped tracing it.
    a.transmit(1000.0)
    assert not a.tracing


def test_trace_connection_callable_sink_and_stop():
    lines = []
    a = Host(HOST_IP, isn_secret=SECRET)
    b = Host(PEER_IP, isn_secret=SECRET)
    b.listen(80)
    net = Net(a, b, latency=0.01)
    ca = a.connect((PEER_IP, 80))
    a.trace_connection(ca, lines.append)
    assert a.tracing
    net.run(until=lambda: ca.state == State.ESTABLISHED, deadline=1.0)
    first = [json.loads(x) for x in lines]
    changes = [e for e in first if e["name"] == "tcp:state_updated"]
    assert [(e["data"]["old"], e["data"]["new"]) for e in changes] == \
        [("SYN_SENT", "ESTABLISHED")]
    assert changes[0]["time"] == 20.0                     # one RTT after connect()
    assert "tcp:syns_out" in [e["name"] for e in first]
    n = len(lines)
    a.trace_connection(ca, None)                           # stop
    ca.send(b"x" * 5000)
    ca.close()
    net.run(deadline=5.0)
    assert len(lines) == n
    assert ca.state == State.FIN_WAIT_2                     # it moved on, untraced


def test_trace_registry_does_not_keep_a_connection():
    a = Host(HOST_IP, isn_secret=SECRET)
    ca = a.connect((PEER_IP, 80))
    sink = io.StringIO()
    a.trace_connection(ca, sink)
    ca.abort()                                             # CLOSED: the host lets it go
    a.transmit(1.0)
    ref = weakref.ref(ca)
    del ca
    gc.collect()
    assert ref() is None
    assert not a.tracing
    assert json.loads(sink.getvalue().splitlines()[-1])["data"]["new"] == "CLOSED"


def test_trace_connection_rejects_bad_arguments():
    a = Host(HOST_IP, isn_secret=SECRET)
    b = Host(PEER_IP, isn_secret=SECRET)
    cb = b.connect((HOST_IP, 80))
    with pytest.raises(ValueError):
        a.trace_connection(cb, io.StringIO())
    ca = a.connect((PEER_IP, 80))
    with pytest.raises(TypeError):
        a.trace_connection(ca, 42)


def test_debug_switch_follows_the_logger_between_calls():
    # The host reads the logger's own cache of isEnabledFor answers (a C dict read per
    # receive/transmit): a level change, logging.disable and Logger.disabled all take
    # effect at the next call, as isEnabledFor would.
    logger = logging.getLogger(LOGGER)
    a = Host(HOST_IP, isn_secret=SECRET)
    saved = logger.level
    try:
        a.transmit(0.0)
        assert not a.tracing
        logger.setLevel(logging.DEBUG)
        a.transmit(0.0)
        assert a.tracing
        logger.disabled = True                   # (as logging.config disables a logger)
        a.transmit(0.0)
        assert not a.tracing
        logger.disabled = False
        logging.disable(logging.DEBUG)
        a.transmit(0.0)
        assert not a.tracing
        logging.disable(logging.NOTSET)
        a.receive([], 0.0)
        assert a.tracing
        logger.setLevel(logging.INFO)
        a.receive([], 0.0)
        assert not a.tracing
    finally:
        logger.disabled = False
        logging.disable(logging.NOTSET)
        logger.setLevel(saved)
