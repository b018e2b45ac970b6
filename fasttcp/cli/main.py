"""The ``fasttcp`` command (also ``python -m fasttcp``).

  fasttcp demo [--ipv6]        the kernel's TCP downloads from fasttcp over TUN, explained
  fasttcp serve {echo,discard,http} [--netns NS] [--tun NAME] [--address ADDR[/PREFIX]]...
                               [--port P] [--root DIR | --size BYTES] [--stats-interval S]
                               [--grace S]
  fasttcp relay --netns NS [--tun NAME] --route CIDR [--route CIDR ...]
                [--socks5 HOST:PORT] [--udp-timeout S] [--max-flows N]
                               relay every TCP and UDP flow routed into the TUN (tun2socks)
  fasttcp stats [--tun NAME | --control PATH] [--json | --watch [S] [--count N]]
  fasttcp --version

Bad input is one line on stderr and a non-zero exit (2 for arguments, 1 for what the system
refuses); SIGINT or SIGTERM stop ``serve``, ``relay`` and ``demo`` cleanly with one line.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import List, NoReturn, Optional


#: ``serve``'s address when no ``--address`` is given.
DEFAULT_ADDRESS = "10.77.0.2"


class _Parser(argparse.ArgumentParser):
    """Errors in one line (and exit status 2), pointing at --help instead of the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower()
    if t.endswith("ib"):
        t = t[:-2]
    elif t.endswith("b"):
        t = t[:-1]
    try:
        n = int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r} (bytes, or e.g. 64M, 1G)") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: negative")
    return n


def _ranged(kind: str, lo: int, hi: int):
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind} {text!r}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"{kind} {n} out of range {lo}..{hi}")
        return n
    parse.__name__ = kind
    return parse


_mtu = _ranged("MTU", 68, 65535)                  # RFC 791: every host takes 68
_port = _ranged("port", 1, 65535)


def _seconds(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from None
    if not 0 <= t < 1e9:
        raise argparse.ArgumentTypeError(f"{text} seconds: must be 0 or more")
    return t


def _positive_seconds(text: str) -> float:
    t = _seconds(text)
    if t <= 0:
        raise argparse.ArgumentTypeError(f"{text} seconds: must be more than 0")
    return t


def _serve_address(text: str) -> str:
    """One ``--address``: IPv4 or IPv6, optionally ``/PREFIX``; one line on what is wrong
    (not an address, not a host address, link-local without a scope, ...)."""
    from fasttcp.cli.serve import check_address
    try:
        check_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _directory(text: str) -> str:
    from fasttcp.cli.serve import check_root
    try:
        check_root(text)
    except OSError as e:
        raise argparse.ArgumentTypeError(str(e).replace(f"--root {text}: ", "")
                                         + f": {text}") from None
    return text


def _ifname(text: str) -> str:
    from fasttcp.link.tun import _check_name
    try:
        _check_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _netns(text: str) -> str:
    from fasttcp.link.netns import validate_netns_name
    try:
        return validate_netns_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _version() -> str:
    from importlib import metadata

    from fasttcp import __version__
    try:
        pr2 = metadata.version("pyroute2")
    except metadata.PackageNotFoundError:
        pr2 = "not installed"
    return (f"fasttcp {__version__} (pyroute2 {pr2}, Python "
            f"{'.'.join(map(str, sys.version_info[:3]))})")


def _demo(args: argparse.Namespace) -> int:
    from fasttcp.cli.demo import run_demo

    return run_demo(args.size, args.mtu, not args.no_offload, args.memory, ipv6=args.ipv6)


def _serve(args: argparse.Namespace) -> int:
    from fasttcp.cli.serve import serve
    from fasttcp.link.tun import tun_available

    reason = tun_available()
    if reason is not None:
        print(f"fasttcp serve needs a TUN device: {reason}", file=sys.stderr)
        return 2
    return serve(args.service, netns=args.netns, tun=args.tun,
                 address=args.address or [DEFAULT_ADDRESS],
                 port=args.port, root=args.root, size=args.size, offload=not args.no_offload,
                 mtu=args.mtu, control=args.control, duration=args.duration,
                 stats_interval=args.stats_interval, grace=args.grace)


def _relay(args: argparse.Namespace) -> int:
    from fasttcp.cli.relay import relay
    from fasttcp.link.tun import tun_available

    reason = tun_available()
    if reason is not None:
        print(f"fasttcp relay needs a TUN device: {reason}", file=sys.stderr)
        return 2
    return relay(netns=args.netns, tun=args.tun, routes=args.route, socks5=args.socks5,
                 udp_direct=args.udp_direct, udp_timeout=args.udp_timeout, max_flows=args.max_flows,
                 max_connecting=args.max_connecting, connect_timeout=args.connect_timeout,
                 control=args.control, mtu=args.mtu, duration=args.duration)


def _route(text: str) -> str:
    from fasttcp.cli.relay import parse_route
    try:
        return parse_route(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).replace("invalid route ", "")) from None


def _socks5(text: str) -> str:
    from fasttcp.cli.relay import parse_socks5
    try:
        parse_socks5(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).replace("invalid SOCKS5 proxy ", "")) \
            from None
    return text


def _stats(args: argparse.Namespace) -> int:
    from fasttcp.cli.serve import read_control, render, status_line
    from fasttcp.cli.servers import control_path

    path = args.control or control_path(args.tun)
    try:
        data = read_control(path)
    except (OSError, ValueError) as e:
        print(f"fasttcp stats: no fasttcp server answers on {path}: {_message(e)}",
              file=sys.stderr)
        return 1
    if args.watch is None:
        if args.json:
            import json
            print(json.dumps(data, indent=2))
        else:
            print(render(data))
        return 0
    # --watch: a status line per interval (the first at once) until SIGINT/SIGTERM, --count
    # lines, or the server goes away.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:                               # from the first line on, an interrupt ends quietly
        print(status_line(data), flush=True)
        previous, lines = data, 1
        while args.count is None or lines < args.count:
            time.sleep(args.watch)
            try:
                data = read_control(path)
            except (OSError, ValueError):
                print(f"fasttcp stats: the server on {path} is gone", file=sys.stderr)
                return 1
            print(status_line(data, previous), flush=True)
            previous, lines = data, lines + 1
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = _Parser(prog="fasttcp", description="A user-space TCP/IP stack: demo, serve "
                     "and inspect.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the kernel's TCP downloads a file from fasttcp over "
                          "TUN in a private namespace (in memory without root)")
    demo.add_argument("--size", type=_size, default=64 << 20, help="bytes (default 64M)")
    demo.add_argument("--mtu", type=_mtu, default=1500)
    demo.add_argument("--no-offload", action="store_true", help="no checksum/TSO offload")
    demo.add_argument("--memory", action="store_true", help="two fasttcp hosts in memory")
    demo.add_argument("--ipv6", action="store_true", help="over IPv6: fasttcp on fd77::2, "
                      "the kernel on fd77::1/64")
    demo.set_defaults(func=_demo)

    serve = sub.add_parser("serve", help="serve echo, discard or HTTP on a TUN device")
    serve.add_argument("service", choices=["echo", "discard", "http"])
    serve.add_argument("--netns", type=_netns,
                       help="network namespace for the TUN (created if missing, and then "
                       "removed on exit)")
    serve.add_argument("--tun", type=_ifname, default="ftun0",
                       help="TUN device name (default ftun0)")
    serve.add_argument("--address", type=_serve_address, action="append",
                       metavar="ADDR[/PREFIX]",
                       help="fasttcp's address, IPv4 or IPv6 (default 10.77.0.2); give it "
                       "again for more (either family). The kernel takes the first address "
                       "of each network: the /24 (IPv4) or /64 (IPv6) unless /PREFIX says")
    serve.add_argument("--port", type=_port, help="default: 7 echo, 9 discard, 80 http")
    group = serve.add_mutually_exclusive_group()
    group.add_argument("--root", type=_directory,
                       help="http: serve files from this directory")
    group.add_argument("--size", type=_size, default=64 << 20,
                       help="http: serve generated bytes of this size at every path")
    serve.add_argument("--mtu", type=_mtu, default=1500)
    serve.add_argument("--no-offload", action="store_true")
    serve.add_argument("--control", help="control socket path (default: per TUN name); "
                       "refused while another server answers on it")
    serve.add_argument("--duration", type=_positive_seconds,
                       help="stop after this many seconds")
    serve.add_argument("--stats-interval", type=_seconds, default=10.0, metavar="S",
                       help="print a status line every S seconds (default 10; 0: never)")
    serve.add_argument("--grace", type=_seconds, default=5.0, metavar="S",
                       help="on SIGINT/SIGTERM, let connections finish for up to S seconds "
                       "before closing them (default 5)")
    serve.set_defaults(func=_serve)

    relay = sub.add_parser(
        "relay", help="intercept every TCP and UDP flow routed into a TUN device in a "
        "namespace and relay it from this process's namespace (tun2socks)",
        description="Creates the namespace if needed (and removes it again on exit), a "
        "TUN device in it with offloads on, and a route into the device for each --route; "
        "every TCP connection and UDP flow the namespace sends there is relayed to its "
        "original destination with this process's sockets (its own namespace), or through "
        "a SOCKS5 proxy. TCP keeps half-close, resets and flow control end to end; a "
        "refused or unreachable destination reaches the client as RST.")
    relay.add_argument("--netns", type=_netns, required=True,
                       help="network namespace of the TUN device and routes (created if "
                       "missing, and then removed on exit)")
    relay.add_argument("--tun", type=_ifname, default="ftun0",
                       help="TUN device name (default ftun0)")
    relay.add_argument("--route", type=_route, action="append", required=True,
                       metavar="CIDR", help="a network (IPv4 or IPv6) to route into the "
                       "TUN and relay; give it again for more")
    relay.add_argument("--socks5", type=_socks5, metavar="HOST:PORT",
                       help="relay through this SOCKS5 proxy (checked at start): TCP with "
                       "CONNECT, UDP with a UDP ASSOCIATE per flow")
    relay.add_argument("--udp-direct", action="store_true",
                       help="with --socks5: send UDP directly, not through the proxy (for "
                       "proxies without UDP ASSOCIATE, such as microsocks)")
    relay.add_argument("--udp-timeout", type=_positive_seconds, default=60.0, metavar="S",
                       help="close a UDP flow idle this long (default 60)")
    relay.add_argument("--max-flows", type=_ranged("flow count", 1, 1 << 20), default=4096,
                       metavar="N", help="TCP flows at once, and UDP flows at once (default "
                       "4096); a new TCP flow beyond it is refused (RST)")
    relay.add_argument("--max-connecting", type=_ranged("flow count", 1, 1 << 20),
                       default=512, metavar="N",
                       help="TCP flows at once still connecting upstream (default 512); a "
                       "SYN beyond it is dropped (the client retries)")
    relay.add_argument("--connect-timeout", type=_positive_seconds, default=10.0,
                       metavar="S", help="refuse a TCP flow whose upstream connection takes "
                       "longer (default 10)")
    relay.add_argument("--mtu", type=_ranged("MTU", 1280, 65535), default=1500)
    relay.add_argument("--control", help="control socket path (default: per TUN name)")
    relay.add_argument("--duration", type=_positive_seconds,
                       help="stop after this many seconds")
    relay.set_defaults(func=_relay)

    stats = sub.add_parser("stats", help="counters and connections of a running server")
    stats.add_argument("--tun", type=_ifname, default="ftun0")
    stats.add_argument("--control", help="control socket path")
    view = stats.add_mutually_exclusive_group()
    view.add_argument("--json", action="store_true")
    view.add_argument("--watch", type=_positive_seconds, nargs="?", const=1.0, metavar="S",
                      help="a status line every S seconds (default 1) until interrupted")
    stats.add_argument("--count", type=_ranged("count", 1, 1 << 31), metavar="N",
                       help="with --watch: stop after N lines")
    stats.set_defaults(func=_stats)

    args = parser.parse_args(argv)
    if args.command == "stats" and args.count is not None and args.watch is None:
        stats.error("--count goes with --watch")
    if args.command == "serve" and args.service != "http" and args.root is not None:
        serve.error(f"--root is for http, not {args.service}")
    if args.command == "serve":
        from fasttcp.cli.serve import address_plan
        try:
            plan = address_plan(args.address or [DEFAULT_ADDRESS])
        except ValueError as e:                  # the addresses do not work together
            serve.error(str(e))
        if args.mtu < 1280 and any(":" in a for a in plan):
            serve.error(f"--mtu {args.mtu} is below 1280, the IPv6 minimum (RFC 8200 5)")
    if args.command == "relay" and args.udp_direct and not args.socks5:
        relay.error("--udp-direct goes with --socks5")
    if args.command == "demo" and args.ipv6 and args.mtu < 1280:
        demo.error(f"--mtu {args.mtu} is below 1280, the IPv6 minimum (RFC 8200 5)")
    if args.command == "demo" and args.ipv6 and args.memory:
        demo.error("--ipv6 is the TUN demo's; the in-memory transfer (--memory) is IPv4")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        # Before a command's own signal handling is in place (or after it): what was made
        # so far has been removed on the way out.
        print(f"fasttcp {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError) as e:
        print(f"fasttcp {args.command}: {_message(e)}", file=sys.stderr)
        return 1


def _message(e: BaseException) -> str:
    """An error as one line, without the ``[Errno N]`` prefix of an OSError."""
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return " ".join(str(text).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
