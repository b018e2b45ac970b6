"""``fasttcp`` command-line parsing for IPv6 and several addresses: ``--address`` given more
than once, of either family; ``demo --ipv6``; and one clear error line (exit 2) for every
address that cannot work. Children run as in test_cli.py."""
from __future__ import annotations

import pytest

from netns_util import requires_tun, temp_netns, unique_ifname
from test_cli import fasttcp, one_line_error

from fasttcp.cli.serve import address_plan, check_address, kernel_side, routing_conflict
from fasttcp.link import netns as ns


@pytest.mark.parametrize("args, fragment", [
    (["serve", "http", "--address", "fe80::2"], "fe80::2 is link-local (fe80::/10) and has "
                                                "no scope"),
    (["serve", "http", "--address", "fe80::2%lo"], "scoped (link-local) addresses are not "
                                                   "supported"),
    (["serve", "http", "--address", "ff02::1"], "ff02::1 is a multicast address"),
    (["serve", "http", "--address", "ff05::2"], "multicast address"),
    (["serve", "http", "--address", "::"], ":: is the unspecified address"),
    (["serve", "http", "--address", "0.0.0.0"], "0.0.0.0 is the unspecified address"),
    (["serve", "http", "--address", "::1"], "loopback"),
    (["serve", "http", "--address", "fd77::1"], "the kernel side takes it"),
    (["serve", "http", "--address", "fd77::"], "Subnet-Router anycast address of fd77::/64"),
    (["serve", "http", "--address", "::ffff:10.77.0.2"], "IPv4-mapped"),
    (["serve", "http", "--address", "fd77::zz"], "invalid IPv6 address 'fd77::zz'"),
    (["serve", "http", "--address", "fd77::2/127"], "must be 1..126"),
    (["serve", "http", "--address", "10.77.0.2/31"], "must be 1..30"),
    (["serve", "http", "--address", "10.77.0.2/x"], "invalid prefix length 'x'"),
    (["serve", "http", "--address", "10.77.0.1/16"], "first address of its /16: the "
                                                     "kernel side takes it"),
    (["serve", "http", "--address", "fd77::2", "--address", "fd77::2/64"], "given twice"),
    (["serve", "http", "--address", "fd77::2/64", "--address", "fd77::1:2/112"], "overlap"),
    (["serve", "http", "--address", "10.77.0.2", "--address", "fd77::2", "--mtu", "1200"],
     "--mtu 1200 is below 1280"),
    (["demo", "--ipv6", "--mtu", "1000"], "--mtu 1000 is below 1280"),
    (["demo", "--ipv6", "--memory"], "--ipv6 is the TUN demo's"),
])
def test_bad_addresses_are_one_line_and_exit_2(args, fragment):
    one_line_error(fasttcp(*args), 2, fragment)


def test_address_plan_and_kernel_sides():
    assert address_plan(["10.77.0.2", "fd77::2"]) == ["10.77.0.2/24", "fd77::2/64"]
    assert address_plan(["10.1.2.3/16", "2001:db8::5/48"]) == ["10.1.2.3/16",
                                                               "2001:db8::5/48"]
    assert address_plan(["fd77::2", "fd77::3"]) == ["fd77::2/64", "fd77::3/64"]
    assert kernel_side("fd77::5") == "fd77::1" and kernel_side("10.77.0.9") == "10.77.0.1"
    assert kernel_side("10.1.2.3", 16) == "10.1.0.1"
    assert check_address("fd77::2") == "fd77::1"
    assert check_address("2001:db8:1::5/48") == "2001:db8:1::1"


@requires_tun
@pytest.mark.parametrize("how", ["address", "route"])
def test_namespace_whose_64_goes_elsewhere_is_refused(tmp_path, how):
    """As for IPv4: fd77::/64 (or a part of it) on or routed through another interface
    of a reused namespace: serve refuses with one line and leaves no TUN behind."""
    with temp_netns() as space:
        with ns.iproute(space) as ipr:
            ipr.link("add", ifname="vc0", kind="veth", peer={"ifname": "vc1"})
            a, b = ipr.link_lookup(ifname="vc0")[0], ipr.link_lookup(ifname="vc1")[0]
            ipr.link("set", index=a, state="up")
            ipr.link("set", index=b, state="up")
            if how == "address":
                ipr.addr("add", index=a, address="fd77::9", prefixlen=64, flags=0x02)
            else:
                ipr.route("add", dst="fd77::/96", oif=a)
        assert "fd77::/64 is already" in routing_conflict(space, "fd77::2", "ftc0")
        assert routing_conflict(space, "fd78::2/64", "ftc0") is None
        assert routing_conflict(space, "10.77.0.2", "ftc0") is None
        r = fasttcp("serve", "echo", "--netns", space, "--tun", unique_ifname("ftc"),
                    "--address", "10.77.0.2", "--address", "fd77::2",
                    "--control", str(tmp_path / "c.sock"))
        one_line_error(r, 1, "fd77::/64 is already", "vc0")
        with ns.iproute(space) as ipr:
            assert [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()
                    if link.get_attr("IFLA_IFNAME").startswith("ftc")] == []


@requires_tun
def test_demo_ipv6_puts_fasttcp_on_fd77_2(monkeypatch, capsys):
    """``demo --ipv6`` plumbing: the TUN link it makes has fasttcp on fd77::2 and the
    kernel on fd77::1/64 (the transfer itself needs the IPv6 Host)."""
    from fasttcp.cli import demo

    seen = {}

    def fake_run(link, netns, size, mtu):
        seen.update(addresses=link.addresses, kernel=link.kernel_addresses,
                    networks=link.networks, netns=netns, mtu=link.mtu)
        link.close()
        return 0

    monkeypatch.setattr(demo, "_run_tun_demo", fake_run)
    assert demo.run_demo(1 << 20, 1400, True, False, ipv6=True) == 0
    assert seen["addresses"] == ("fd77::2",) and seen["kernel"] == ("fd77::1",)
    assert seen["networks"] == ("fd77::/64",) and seen["mtu"] == 1400
    assert not ns.netns_exists(seen["netns"])
    out = capsys.readouterr().out
    assert "kernel side fd77::1/64, fasttcp on fd77::2" in out and "IPv6" in out
