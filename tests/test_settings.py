"""Settings: immutable, and every field checked when a Settings is made."""
import dataclasses

import pytest

from fasttcp import Host, Settings
from fasttcp.tcp.congestion import NewReno


def test_defaults_are_valid():
    s = Settings()
    assert s.effective_mss == 1460
    assert s.rcv_wscale == 5          # 1 MiB needs 65535 << 5


def test_settings_are_frozen():
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.rcv_buf = 1 << 16
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.gso_max = 65000
    assert s.rcv_buf == 1 << 20 and s.gso_max == 0


def test_host_settings_are_frozen():
    host = Host("10.0.0.1", rcv_buf=1 << 16)
    with pytest.raises(dataclasses.FrozenInstanceError):
        host.settings.rcv_buf = 1 << 20
    assert host.settings.rcv_buf == 1 << 16


def test_replace_recomputes_the_derived_window_scale():
    s = Settings()
    assert s.rcv_wscale == 5
    small = dataclasses.replace(s, rcv_buf=65535)
    assert small.rcv_wscale == 0 and s.rcv_wscale == 5
    assert dataclasses.replace(s, window_scaling=False).rcv_wscale == 0


def test_replace_validates_again():
    with pytest.raises(ValueError, match="ttl must be 1..255"):
        dataclasses.replace(Settings(), ttl=0)


def test_unknown_names_are_a_type_error():
    with pytest.raises(TypeError, match="unknown setting"):
        Settings.from_kwargs(rcv_buffer=1 << 16)


@pytest.mark.parametrize("name, value", [
    ("mtu", 1500.0), ("rcv_buf", "1M"), ("backlog", True), ("gso_max", None),
    ("min_rto", "0.2"), ("keepalive_interval", None), ("frag_timeout", True),
    ("nodelay", 1), ("sack", "yes"), ("timestamps", None), ("mss", 1460.0),
    ("mtu_probing", True), ("mtu_probing", 1.0),
])
def test_field_types_are_checked(name, value):
    with pytest.raises(ValueError, match=f"^{name} must be"):
        Settings(**{name: value})


@pytest.mark.parametrize("kwargs, message", [
    ({"mtu": 67}, "mtu must be 68..65535"),
    ({"mtu": 65536}, "mtu must be 68..65535"),
    ({"mss": 1461}, "mss must fit the mtu"),
    ({"mss": 0}, "mss must fit the mtu"),
    ({"rcv_buf": 1000}, "rcv_buf and snd_buf must hold at least one segment"),
    ({"rcv_buf": (65535 << 14) + 1}, "rcv_buf larger than a scaled window"),
    ({"send_ref_min": 1023}, "send_ref_min must be 0 or 1024"),
    ({"ttl": 256}, "ttl must be 1..255"),
])
def test_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Settings(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"min_rto": 0}, "need 0 < min_rto <= initial_rto <= max_rto"),
    ({"initial_rto": 100.0}, "need 0 < min_rto <= initial_rto <= max_rto"),
    ({"delayed_ack": 0.6}, "delayed_ack must be 0..0.5 s"),
    ({"msl": -1.0}, "msl must be >= 0"),
    ({"invalid_ack_interval": 61}, "invalid_ack_interval must be 0..60 s"),
])
def test_timers(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Settings(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"keepalive": 0}, "keepalive must be None"),
    ({"keepalive": -5.0}, "keepalive must be None"),
    ({"keepalive": "2h"}, "keepalive must be None"),
    ({"keepalive_interval": 0}, "keepalive_interval must be > 0 s"),
    ({"keepalive_probes": 0}, "keepalive_probes must be >= 1"),
])
def test_keepalive(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Settings(**kwargs)
    assert Settings(keepalive=None).keepalive is None
    assert Settings(keepalive=1, keepalive_interval=1, keepalive_probes=1).keepalive == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"max_retries": -1}, "max_retries and syn_retries must be >= 0"),
    ({"syn_retries": -1}, "max_retries and syn_retries must be >= 0"),
    ({"backlog": -1}, "backlog must be >= 0"),
    ({"syn_backlog": 0}, "syn_backlog must be >= 1"),
    ({"max_connections": 0}, "max_connections must be >= 1"),
    ({"max_time_wait": -1}, "max_time_wait must be >= 0"),
    ({"max_ooo_holes": -1}, "max_ooo_holes must be 0..65536"),
    ({"max_ooo_holes": (1 << 16) + 1}, "max_ooo_holes must be 0..65536"),
    ({"challenge_ack_limit": -1}, "challenge_ack_limit must be >= 0"),
    ({"udp_rcvbuf": -1}, "udp_rcvbuf, max_udp_flows and icmp_error_rate must be >= 0"),
    ({"max_udp_flows": -1}, "udp_rcvbuf, max_udp_flows and icmp_error_rate must be >= 0"),
    ({"icmp_error_rate": -1}, "udp_rcvbuf, max_udp_flows and icmp_error_rate must be >= 0"),
    ({"udp_idle_timeout": 0}, "udp_idle_timeout must be > 0"),
    ({"udp_idle_timeout": "1m"}, "udp_idle_timeout must be a number"),
])
def test_limits(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Settings(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"ooo_budget": -1}, "ooo_budget must be >= 0 bytes"),
    ({"ooo_budget": 1.5}, "ooo_budget must be an int"),
    ({"orphan_retries": -1}, "orphan_retries must be >= 0"),
    ({"max_orphans": -1}, "max_orphans must be >= 0"),
    ({"user_timeout": 0}, "user_timeout must be None"),
    ({"user_timeout": -1.0}, "user_timeout must be None"),
    ({"user_timeout": "30s"}, "user_timeout must be None"),
])
def test_memory_and_orphan_limits(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Settings(**kwargs)
    s = Settings()
    # The documented defaults (settings.py): Linux's tcp_orphan_retries 0 means 8.
    assert (s.ooo_budget, s.orphan_retries, s.max_orphans, s.user_timeout) == (
        64 << 20, 8, 16384, None)
    assert Settings(ooo_budget=0, orphan_retries=0, max_orphans=0,
                    user_timeout=0.5).user_timeout == 0.5


@pytest.mark.parametrize("value", ["never", "Always", 1, 0, None])
def test_syn_cookies(value):
    with pytest.raises(ValueError, match="syn_cookies must be True, False or \"always\""):
        Settings(syn_cookies=value)


def test_syn_cookies_valid_values():
    for value in (True, False, "always"):
        assert Settings(syn_cookies=value).syn_cookies == value


@pytest.mark.parametrize("kwargs, message", [
    ({"frag_max_bytes": 0}, "frag_max_bytes and frag_max_datagrams must be >= 1"),
    ({"frag_max_datagrams": 0}, "frag_max_bytes and frag_max_datagrams must be >= 1"),
    ({"frag_timeout": 0}, "frag_timeout must be > 0 s"),
])
def test_fragments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Settings(**kwargs)


@pytest.mark.parametrize("value", [-1, 65536, 1 << 20])
def test_gso_max(value):
    with pytest.raises(ValueError, match="gso_max must be 0 \\(off\\) or up to 65535 bytes"):
        Settings(gso_max=value)


def test_gso_max_valid_values():
    assert Settings(gso_max=0).gso_max == 0
    assert Settings(gso_max=65000).gso_max == 65000


@pytest.mark.parametrize("value", [-1, 2, 3])
def test_mtu_probing(value):
    with pytest.raises(ValueError, match="mtu_probing must be 0 \\(off\\) or 1"):
        Settings(mtu_probing=value)


def test_mtu_probing_valid_values():
    assert Settings().mtu_probing == 0              # off by default, as Linux's sysctl
    assert Settings(mtu_probing=1).mtu_probing == 1


@pytest.mark.parametrize("value, message", [
    ("vegas", "congestion: unknown congestion control 'vegas'"),
    (42, "congestion: congestion control must be a name or a CongestionControl subclass"),
    (int, "congestion: congestion control must be a name or a CongestionControl subclass"),
])
def test_congestion(value, message):
    with pytest.raises(ValueError, match=message):
        Settings(congestion=value)


def test_congestion_valid_values():
    assert Settings(congestion="NewReno").congestion == "NewReno"
    assert Settings(congestion=NewReno).congestion is NewReno


@pytest.mark.parametrize("value, message", [
    ("fack", "loss_detection: unknown loss detection 'fack'"),
    (3, "loss_detection: loss detection must be a name or a LossDetection subclass"),
    (NewReno, "loss_detection: loss detection must be a name or a LossDetection subclass"),
])
def test_loss_detection(value, message):
    with pytest.raises(ValueError, match=message):
        Settings(loss_detection=value)


def test_loss_detection_valid_values_and_tlp():
    from fasttcp.tcp.loss import DupThresh
    assert Settings().loss_detection == "rack" and Settings().tlp is True   # the defaults
    assert Settings(loss_detection="DupThresh").loss_detection == "DupThresh"
    assert Settings(loss_detection=DupThresh).loss_detection is DupThresh
    with pytest.raises(ValueError, match="tlp must be True or False"):
        Settings(tlp=1)


def test_frto():
    assert Settings().frto is True                  # as Linux's tcp_frto (2: SACK-enhanced)
    assert Settings(frto=False).frto is False
    for value in (1, 2, None, "on"):
        with pytest.raises(ValueError, match="frto must be True or False"):
            Settings(frto=value)


@pytest.mark.parametrize("value", [-1, 3, True, "on"])
def test_ecn(value):
    with pytest.raises(ValueError, match="ecn must be"):
        Settings(ecn=value)


def test_ecn_valid_values():
    assert Settings().ecn == 2                      # as Linux's tcp_ecn: accept, do not ask
    assert Settings(ecn=0).ecn == 0 and Settings(ecn=1).ecn == 1


@pytest.mark.parametrize("value", [1, 0, "on", "cubic"])
def test_hystart(value):
    with pytest.raises(ValueError, match="hystart must be None \\(the policy's default\\)"):
        Settings(hystart=value)


def test_hystart_valid_values():
    assert Settings().hystart is None               # CUBIC: on (RFC 9438 4.10), NewReno: off
    assert Settings(hystart=True).hystart is True
    assert Settings(hystart=False).hystart is False


@pytest.mark.parametrize("value", [b"short", bytes(17), "0123456789abcdef", 16])
def test_isn_secret(value):
    with pytest.raises(ValueError, match="isn_secret must be None or 16 bytes"):
        Settings(isn_secret=value)


@pytest.mark.parametrize("value", [
    (0, 65535), (50000, 49999), (49152, 65536), [49152, 65535], (49152,), (1.0, 2),
])
def test_ephemeral_ports(value):
    with pytest.raises(ValueError, match="ephemeral_ports must be a tuple"):
        Settings(ephemeral_ports=value)


def test_host_reports_invalid_settings():
    with pytest.raises(ValueError, match="keepalive_probes must be >= 1"):
        Host("10.0.0.1", keepalive_probes=0)
    with pytest.raises(TypeError, match="unknown setting"):
        Host("10.0.0.1", keepalive_count=3)


@pytest.mark.parametrize("kwargs, message", [
    ({"quick_acks": -1}, "quick_acks must be 0..1024"),
    ({"quick_acks": 1025}, "quick_acks must be 0..1024"),
    ({"quick_acks": 2.0}, "quick_acks must be an int"),
    ({"min_mss": 0}, "min_mss must be 1..65495 bytes"),
    ({"min_mss": 65496}, "min_mss must be 1..65495 bytes"),
    ({"min_mss": None}, "min_mss must be an int"),
])
def test_ack_policy_and_min_mss(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Settings(**kwargs)


def test_ack_policy_and_min_mss_defaults():
    s = Settings()
    assert (s.quick_acks, s.min_mss) == (16, 48)        # Linux's TCP_MAX_QUICKACKS, 48
    assert Settings(quick_acks=0, min_mss=1).quick_acks == 0


def test_interception_settings():
    assert Settings().intercept_pending_timeout == 30.0 and Settings().intercept_echo is True
    with pytest.raises(ValueError, match="intercept_pending_timeout must be > 0 s"):
        Settings(intercept_pending_timeout=0)
    with pytest.raises(ValueError, match="intercept_pending_timeout must be a number"):
        Settings(intercept_pending_timeout="5")
    with pytest.raises(ValueError, match="intercept_echo must be True or False"):
        Settings(intercept_echo=1)
    assert Settings(intercept_pending_timeout=0.5).intercept_pending_timeout == 0.5
