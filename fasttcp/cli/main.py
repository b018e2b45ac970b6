"""The ``fasttcp`` command (also ``python -m fasttcp``)."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _demo(args: argparse.Namespace) -> int:
    from fasttcp.cli.memtransfer import bulk_transfer

    size = args.size
    print(f"fasttcp demo: {size / 2**20:.0f} MiB from a fasttcp client host (10.0.0.1) to a "
          f"fasttcp server host (10.0.0.2), MTU {args.mtu}, both stacks in this process")
    print("(the TUN demo against the kernel's own TCP arrives with the TUN link)")
    r = bulk_transfer(size, mtu=args.mtu, log=lambda m: print("  " + m))
    print(f"  transfer: {r.nbytes} bytes, sha256 {'matches' if r.intact else 'DIFFERS'}, "
          f"{r.packets} packets")
    print(f"  goodput: {r.gbit_per_s:.3f} Gbit/s of wall time "
          f"({r.wall_seconds * 1000:.0f} ms for both stacks' work)")
    ci = r.client_info
    print(f"  client info: state={ci.state} mss={ci.mss} cwnd={ci.cwnd} "
          f"ssthresh={ci.ssthresh} srtt={ci.srtt} rto={ci.rto} retransmits={ci.retransmits} "
          f"bytes_acked={ci.bytes_acked}")
    si = r.server_info
    print(f"  server info: state={si.state} bytes_received={si.bytes_received} "
          f"rcv_wscale={si.rcv_wscale}")
    return 0 if r.intact else 1


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="fasttcp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a transfer and show what happened")
    demo.add_argument("--size", type=int, default=64 << 20, help="bytes to move (64 MiB)")
    demo.add_argument("--mtu", type=int, default=1500)
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
