"""The ``fasttcp`` command as a user runs it: ``python -m fasttcp ...`` in a subprocess.

Bad input is one line on stderr and a non-zero exit; SIGINT/SIGTERM stop ``serve`` and
``demo`` with one line, closing connections gracefully and removing what they made; a live
server's control socket is refused; ``serve --stats-interval``, ``stats --watch`` and
``--version`` print what they say. Tests with namespaces make their own (or have the
command make a uniquely named one) and remove them; every child is killed on failure.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator, List, Optional

import pytest

from netns_util import (requires_tun, sock_in, temp_netns, unique_ifname, unique_netns_name,
                        wait_until)

import fasttcp as _fasttcp
from fasttcp.link import netns as ns
from fasttcp.link.tun import TunLink

# Children import the same fasttcp as this process and start outside the source tree (see
# test_interop.py).
CHILD_CWD = "/"
CHILD_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    [os.path.dirname(os.path.dirname(os.path.abspath(_fasttcp.__file__)))]
    + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
KERNEL, US = "10.77.0.1", "10.77.0.2"
CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")


def fasttcp(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fasttcp", *args], cwd=CHILD_CWD,
                          env=CHILD_ENV, capture_output=True, text=True, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    """Exit status ``code``, nothing on stdout, one line on stderr with ``fragments``."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


@contextmanager
def child(*args: str) -> Iterator[subprocess.Popen]:
    """``python -m fasttcp ARGS`` running; killed (and reaped) if still running after."""
    p = subprocess.Popen([sys.executable, "-m", "fasttcp", *args], cwd=CHILD_CWD,
                         env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        yield p
    finally:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=30)


def in_netns(netns: str, *argv: str) -> List[str]:
    """argv that runs ``argv`` inside ``netns`` (a Python child that enters it, then execs)."""
    code = ("import os, sys\nfrom pyroute2 import netns\nnetns.setns(sys.argv[1], flags=0)\n"
            "os.execv(sys.argv[2], sys.argv[2:])\n")
    return [sys.executable, "-c", code, netns, *argv]


def stats_json(ctl: str) -> Optional[dict]:
    r = fasttcp("stats", "--control", ctl, "--json", timeout=20)
    return json.loads(r.stdout) if r.returncode == 0 else None


def read_line_until(p: subprocess.Popen, needle: str, timeout: float) -> List[str]:
    """Lines of p's stdout up to and including the first that contains ``needle``."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    lines: List[str] = []
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            if not sel.select(max(0.0, end - time.monotonic())):
                break
            line = p.stdout.readline()
            if not line:
                break
            lines.append(line)
            if needle in line:
                return lines
    finally:
        sel.close()
    raise AssertionError(f"{needle!r} not printed in {timeout} s: {lines}")


# ==========================================================================================
# Bad input: one line, non-zero exit, before anything is made (no root needed)
# ==========================================================================================

@pytest.mark.parametrize("args, fragment", [
    (["serve", "http", "--address", "999.1.1.1"], "invalid IPv4 address '999.1.1.1'"),
    (["serve", "http", "--address", "10.77.0.0"], "network or broadcast address"),
    (["serve", "http", "--address", "10.77.0.255"], "network or broadcast address"),
    (["serve", "http", "--address", "10.77.0.1"], "the kernel side takes it"),
    (["serve", "http", "--address", "224.0.0.5"], "cannot be a host address"),
    (["serve", "http", "--mtu", "50"], "MTU 50 out of range 68..65535"),
    (["demo", "--mtu", "50"], "MTU 50 out of range"),
    (["serve", "http", "--root", "/nonexistent"], "no such directory: /nonexistent"),
    (["serve", "echo", "--port", "70000"], "port 70000 out of range"),
    (["serve", "echo", "--tun", "a-name-far-too-long"], "too long"),
    (["serve", "echo", "--netns", "a/b"], "one path component"),
    (["serve", "echo", "--stats-interval", "-1"], "must be 0 or more"),
    (["serve", "echo", "--duration", "0"], "must be more than 0"),
    (["demo", "--size", "lots"], "invalid size 'lots'"),
    (["stats", "--count", "2"], "--count goes with --watch"),
])
def test_bad_arguments_are_one_line_and_exit_2(args, fragment):
    one_line_error(fasttcp(*args), 2, fragment)


def test_version():
    r = fasttcp("--version")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(rf"fasttcp {re.escape(_fasttcp.__version__)} \(pyroute2 \S+, "
                        r"Python \d+\.\d+\.\d+\)\n", r.stdout), r.stdout


def test_stats_without_a_server_is_one_line(tmp_path):
    one_line_error(fasttcp("stats", "--control", str(tmp_path / "none.sock")), 1,
                   "no fasttcp server answers on", "No such file or directory")


def test_memory_demo_reports_rtt_in_milliseconds():
    r = fasttcp("demo", "--memory", "--size", "1M")
    assert r.returncode == 0, r.stdout + r.stderr
    info = [line for line in r.stdout.splitlines() if "client info:" in line]
    assert len(info) == 1, r.stdout
    assert re.search(r" srtt=\d+\.\d{3} ms rto=\d+\.\d{3} ms ", info[0]), info[0]


# ==========================================================================================
# What the system refuses: one line, exit 1, nothing left behind
# ==========================================================================================

@requires_tun
def test_tun_name_in_use_and_tun_lo_are_one_line(tmp_path):
    name = unique_ifname("ftc")
    with temp_netns() as space:
        link = TunLink(name, US, netns=space)
        try:
            r = fasttcp("serve", "echo", "--netns", space, "--tun", name, "--control",
                        str(tmp_path / "a.sock"))
            one_line_error(r, 1, f"interface name {name!r} is already taken")
            assert not link.closed and ns.netns_exists(space)   # not theirs to remove
        finally:
            link.close()
    with temp_netns() as space:
        # lo of the test's own namespace, never the host's.
        r = fasttcp("serve", "echo", "--netns", space, "--tun", "lo", "--control",
                    str(tmp_path / "b.sock"))
        one_line_error(r, 1, "'lo'")
        assert ns.netns_exists(space)
    assert not os.path.exists(tmp_path / "a.sock") and not os.path.exists(tmp_path / "b.sock")


@requires_tun
@pytest.mark.parametrize("how", ["address", "route"])
def test_namespace_whose_24_goes_elsewhere_is_refused(tmp_path, how):
    """A reused namespace where 10.77.0.0/24 (or a part of it) is on or routed through
    another interface: the TUN's connected route would lose, so serve refuses."""
    with temp_netns() as space:
        with ns.iproute(space) as ipr:
            ipr.link("add", ifname="vc0", kind="veth", peer={"ifname": "vc1"})
            a, b = ipr.link_lookup(ifname="vc0")[0], ipr.link_lookup(ifname="vc1")[0]
            ipr.link("set", index=a, state="up")
            ipr.link("set", index=b, state="up")
            if how == "address":
                ipr.addr("add", index=a, address="10.77.0.9", prefixlen=24)
            else:
                ipr.route("add", dst="10.77.0.0/25", oif=a)
        r = fasttcp("serve", "echo", "--netns", space, "--tun", unique_ifname("ftc"),
                    "--control", str(tmp_path / "c.sock"))
        one_line_error(r, 1, "10.77.0.0/24 is already", "vc0")
        with ns.iproute(space) as ipr:                    # no TUN device was left behind
            assert [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()
                    if link.get_attr("IFLA_IFNAME").startswith("ftc")] == []


# ==========================================================================================
# Running servers: status, stats --watch, the control socket, stopping
# ==========================================================================================

@requires_tun
def test_serve_status_lines_stats_watch_and_cleanup_of_its_namespace(tmp_path):
    """serve makes the namespace, prints a status line per --stats-interval, answers
    stats --watch; a stale control socket is replaced; SIGTERM: one line, exit 0, and the
    namespace, device and control socket are gone."""
    space = unique_netns_name()
    ctl = str(tmp_path / "ctl.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(ctl)                                       # bound, never listening
    stale.close()
    try:
        with child("serve", "echo", "--netns", space, "--tun", unique_ifname("ftc"),
                   "--control", ctl, "--stats-interval", "0.2", "--duration", "60") as p:
            read_line_until(p, "fasttcp serving echo", 20)
            assert ns.netns_exists(space)
            status = read_line_until(p, f"fasttcp {US}: 0 connections", 10)[-1]
            assert "packets in 0 out 0" in status, status
            w = fasttcp("stats", "--control", ctl, "--watch", "0.1", "--count", "3")
            assert w.returncode == 0, w.stderr
            lines = w.stdout.splitlines()
            assert len(lines) == 3 and all(x.startswith(f"fasttcp {US}: ") for x in lines)
            with child("stats", "--control", ctl, "--watch", "0.1") as watch:
                read_line_until(watch, f"fasttcp {US}: ", 20)
                watch.send_signal(signal.SIGINT)              # a user's Ctrl-C: quiet, 0
                _, werr = watch.communicate(timeout=20)
            assert watch.returncode == 0 and werr == "", werr
            with child("stats", "--control", ctl, "--watch", "0.1") as watch:
                read_line_until(watch, f"fasttcp {US}: ", 20)
                p.send_signal(signal.SIGTERM)
                out, err = p.communicate(timeout=30)
                _, werr = watch.communicate(timeout=20)     # ends when the server goes
            assert watch.returncode == 1
            assert werr == f"fasttcp stats: the server on {ctl} is gone\n", werr
        assert p.returncode == 0, err
        assert err == "", err
        last = out.strip().splitlines()[-1]
        assert last.startswith("fasttcp serve: stopped by SIGTERM; connections: 0 finished"), out
        assert f"and network namespace {space}" in last
        assert not ns.netns_exists(space)
        assert not os.path.exists(ctl)
    finally:
        if ns.netns_exists(space):
            ns.remove_netns(space)


@requires_tun
def test_control_socket_of_a_live_server_is_refused(tmp_path):
    ctl = str(tmp_path / "ctl.sock")
    with temp_netns() as one, temp_netns() as two:
        with child("serve", "echo", "--netns", one, "--tun", unique_ifname("ftc"),
                   "--control", ctl, "--stats-interval", "0", "--duration", "60") as p:
            read_line_until(p, "fasttcp serving echo", 20)
            ident = os.stat(ctl).st_ino
            r = fasttcp("serve", "echo", "--netns", two, "--tun", unique_ifname("ftc"),
                        "--control", ctl)
            one_line_error(r, 1, f"another fasttcp server answers on control socket {ctl}")
            assert os.stat(ctl).st_ino == ident             # still the first server's
            assert stats_json(ctl)["address"] == US
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=30)
        assert p.returncode == 0 and err == "", err
        assert "stopped by SIGINT" in out.strip().splitlines()[-1]
        assert not os.path.exists(ctl)
        assert ns.netns_exists(one)                           # the test's, not serve's
    other = tmp_path / "file"
    other.write_text("not a socket")
    r = fasttcp("serve", "echo", "--netns", unique_netns_name(), "--tun", unique_ifname(),
                "--control", str(other))
    one_line_error(r, 1, "exists and is not a socket")
    assert other.read_text() == "not a socket"


@requires_tun
@needs_curl
def test_sigint_mid_transfer_closes_gracefully(tmp_path):
    """SIGINT while curl downloads 1 GiB at 16 MB/s: serve stops accepting (a new
    connection is refused), waits --grace, then closes the connection with a FIN (curl:
    the transfer ended early, exit 18 - not a reset, 56), prints one line, exits 0 and
    removes its device."""
    ctl = str(tmp_path / "ctl.sock")
    out = str(tmp_path / "body")
    tun = unique_ifname("ftc")
    with temp_netns() as space:
        with child("serve", "http", "--netns", space, "--tun", tun, "--size", "1G",
                   "--control", ctl, "--stats-interval", "0", "--grace", "3",
                   "--duration", "60") as p:
            read_line_until(p, "fasttcp serving http", 20)
            curl = subprocess.Popen(
                in_netns(space, CURL, "-sS", "--max-time", "60", "--limit-rate", "16M",
                         "-o", out, f"http://{US}/f"),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                def transferring() -> bool:
                    data = stats_json(ctl)
                    return bool(data) and any(c["state"] == "ESTABLISHED"
                                              and c["bytes_acked"] > 1 << 20
                                              for c in data["connections"])

                assert wait_until(transferring, 20, 0.1), "no transfer under way"
                t0 = time.monotonic()
                p.send_signal(signal.SIGINT)
                # During --grace the listener is gone: a new connection is refused.
                assert wait_until(lambda: (stats_json(ctl) or {"stats": {}})["stats"]
                                  .get("listeners") == 0, 2.5, 0.05), "still listening"
                probe = sock_in(space, timeout=5)
                try:
                    with pytest.raises(ConnectionRefusedError):
                        probe.connect((US, 80))
                finally:
                    probe.close()
                sout, serr = p.communicate(timeout=30)
                stop_time = time.monotonic() - t0
                _, cerr = curl.communicate(timeout=30)
            finally:
                if curl.poll() is None:
                    curl.kill()
                curl.communicate(timeout=10)
        with ns.iproute(space) as ipr:
            assert ipr.link_lookup(ifname=tun) == []
    assert p.returncode == 0, serr
    assert serr == "", serr
    last = sout.strip().splitlines()[-1]
    assert last == (f"fasttcp serve: stopped by SIGINT; connections: 0 finished, 1 closed "
                    f"after --grace 3 s; removed {tun}"), sout
    assert 3 <= stop_time < 3 + 2 * 2 + 3                   # grace, close bounds, slack
    assert curl.returncode == 18, (curl.returncode, cerr)   # partial file, not a reset
    assert 1 << 20 < os.path.getsize(out) < 1 << 30
    assert not os.path.exists(ctl)


@requires_tun
def test_demo_sigint_mid_transfer_one_line_and_cleanup():
    """SIGINT once the demo's download has started: one line, exit 130, no traceback, and
    its namespace is gone."""
    with child("demo", "--size", "1G", "--no-offload") as p:
        space = f"fasttcp-demo-{p.pid}"
        try:
            read_line_until(p, "handshake:", 30)
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(10)
            leftover = ns.netns_exists(space)
            if leftover:
                ns.remove_netns(space)
    assert p.returncode == 130, (out, err)
    assert "Traceback" not in err and err == "", err
    assert out.strip().splitlines()[-1] == (f"fasttcp demo: interrupted by SIGINT; TUN "
                                            f"device and namespace {space} removed"), out
    assert not leftover


def test_demo_falls_back_to_memory_when_the_tun_setup_fails(monkeypatch, capsys):
    """A TUN device that cannot be set up (as every namespace link failed with pyroute2
    0.8.1 before): the demo says why and runs the transfer in memory."""
    from fasttcp.cli import demo

    def refuse(*args, **kwargs):
        raise OSError(5, "configuring ftdemo0: RuntimeError: no netlink today")

    monkeypatch.setattr(demo, "TunLink", refuse)
    monkeypatch.setattr(demo, "tun_available", lambda: None)
    assert demo.run_demo(1 << 20, 1500, True, False) == 0
    out = capsys.readouterr().out
    assert ("(TUN demo unavailable: setting up the TUN device failed: configuring "
            "ftdemo0: RuntimeError: no netlink today; running the transfer in memory)") in out
    assert "content matches" in out


def test_status_line_counts_states_rtt_and_rates():
    from fasttcp.cli.serve import status_line

    def conn(state, srtt):
        return {"state": state, "srtt_ms": srtt}

    previous = {"address": US, "time": 100.0, "stats": {}, "connections": [],
                "link": {"rx_bytes": 1000, "tx_bytes": 0}}
    data = {"address": US, "time": 102.0,
            "stats": {"packets_in": 7, "packets_out": 9, "retransmitted_segments": 1},
            "connections": [conn("ESTABLISHED", 0.5), conn("ESTABLISHED", 1.5),
                            conn("TIME-WAIT", 9.0)],
            "link": {"rx_bytes": 1000 + 250_000, "tx_bytes": 5_000_000}}
    assert status_line(data, previous) == (
        f"fasttcp {US}: 3 connections (ESTABLISHED 2, TIME-WAIT 1); packets in 7 out 9; "
        "retransmitted 1; srtt 1.000 ms; rx 1.0 Mbit/s tx 20.0 Mbit/s")
    assert status_line(previous) == (f"fasttcp {US}: 0 connections; packets in 0 out 0; "
                                     "retransmitted 0")


def test_render_and_status_line_show_a_relay_s_flows():
    """``fasttcp stats`` of a relay: its counters and one line per flow (client,
    destination, how it is relayed), and the flow counts in the status line."""
    from fasttcp.cli.serve import render, status_line

    data = {"address": "198.18.0.2", "time": 1.0, "stats": {"packets_in": 1},
            "connections": [],
            "relay": {"stats": {"tcp_flows": 1, "tcp_connecting": 0, "udp_flows": 1},
                      "routes": ["10.99.0.0/16"],
                      "flows": [{"kind": "tcp", "state": "open",
                                 "client": "198.18.0.1:40000",
                                 "destination": "10.99.0.5:80", "via": "direct",
                                 "seconds": 1.5, "bytes_up": 10, "bytes_down": 20},
                                {"kind": "udp", "state": "open",
                                 "client": "[fdff:198:18::1]:5353",
                                 "destination": "[fd00:99::5]:53",
                                 "via": "socks5 127.0.0.1:1080", "seconds": 0.5,
                                 "bytes_up": 30, "bytes_down": 40}]}}
    text = render(data).splitlines()
    assert "relay:" in text
    assert any(ln.split() == ["tcp_flows", "1"] for ln in text)
    assert any(ln.split() == ["tcp", "open", "198.18.0.1:40000", "10.99.0.5:80", "direct"]
               for ln in text)
    assert any(ln.split() == ["udp", "open", "[fdff:198:18::1]:5353", "[fd00:99::5]:53",
                              "socks5", "127.0.0.1:1080"] for ln in text)
    assert any(ln.split() == ["seconds:0.5", "bytes_up:30", "bytes_down:40"] for ln in text)
    assert status_line(data).endswith("; relay flows tcp 1 (connecting 0) udp 1")
