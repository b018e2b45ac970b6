"""TunLink: a Linux TUN device as a fasttcp link (batched, non-blocking, with offloads).

Layout of one link, e.g. ``TunLink("ftun0", addresses=["10.77.0.2/24", "fd77::2/64"],
netns="lab")``::

    kernel stack (netns "lab")                       fasttcp Host
    10.77.0.1/24 on ftun0  <-- /dev/net/tun fd -->   answers on 10.77.0.2
    fd77::1/64                                       and on fd77::2

The kernel's side of the device gets the first host address of each network (10.77.0.1,
fd77::1); fasttcp's own addresses are *not* configured on the device: the connected route
of each prefix sends every packet for them into the TUN device, where fasttcp reads it.

Setup: the device is made with ``TUNSETIFF(IFF_TUN | IFF_NO_PI [| IFF_VNET_HDR])`` on a
non-blocking fd opened while the calling thread is inside the target namespace (the device
is born where the fd was opened; the fd keeps working from anywhere). pyroute2 then sets the
MTU, txqueuelen, the kernel-side address and brings it up. The device is not persistent: it
disappears when the fd is closed (``close()``, which also checks it is gone).

Offloads (``offload=True``, the default): IFF_VNET_HDR plus ``TUNSETOFFLOAD(TUN_F_CSUM |
TUN_F_TSO4 | TUN_F_TSO6)``, falling back to CSUM only and then to none when the kernel
refuses (so TSO6 is on exactly when TSO4 is, and both families keep their offloads on a
dual-stack link). The kernel then hands over TCP super-packets of up to 64 KiB and leaves TCP
checksums partial (the field holds only the pseudo-header sum). The contract with the host:

- ``recv_batch()`` returns IP packets, IPv4 or IPv6 (the version nibble tells);
  super-packets (TSO4 and TSO6) are delivered whole, as one packet.
- ``link.parse_flags`` is the ``SegmentBatch.parse`` flag valid for *every* batch of this
  link: ``PARSE_NO_TCP_CSUM`` when offloads are on (every TCP packet was verified by the
  kernel or by the link, or was made by the local kernel with a partial checksum), else 0.
  The host must pass it when parsing (``batch.parse(packets, link.parse_flags)``).
- ``link.last_rx_flags`` has one byte of ``RX_FLAG_*`` bits per packet of the last batch
  (CSUM_PARTIAL, CSUM_VALID, GSO) for anyone who needs the detail.
- ``complete_checksums=True`` fills in partial checksums in C as the packets are read, so
  they are ordinary valid packets (for a host that always verifies, or a pcap capture) at
  the cost of one pass over the bytes.

Offload flags belong to the device and outlive the fd, so they are always set explicitly
(to 0 when offloads are off).

Writes (``tx_thread``): the kernel does whatever a written packet sets off inside that
``write()``. An ACK to a kernel sender runs the sender's next transmit burst there, and
without offloads that burst is segmented and checksummed in software, packet by packet.
A link without offloads therefore hands its writes to a C thread of its own by default
(when the process may run on two CPUs or more): ``send_batch`` copies the packets into a
ring and returns, and the kernel's work overlaps with reading. With offloads the kernel
sender's burst is one super-packet and the thread would only compete with the sender for
the second core, so it is off there (measured: README, "What limits it").
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import functools
import ipaddress
import os
import select
import socket
import struct
import threading
import time
from typing import Any, Callable, Iterable, List, Optional, Tuple, Union

from fasttcp.link import netns as _ns
from fasttcp.link._tunio import (
    HDR_LEN,
    RX_FLAG_CSUM_PARTIAL,
    RX_FLAG_CSUM_VALID,
    RX_FLAG_GSO,
    TunIO,
)
from fasttcp.link.capabilities import PARSE_NO_TCP_CSUM, LinkCapabilities

__all__ = ["TunLink", "TUN_F_CSUM", "TUN_F_TSO4", "TUN_F_TSO6", "RX_FLAG_CSUM_PARTIAL",
           "RX_FLAG_CSUM_VALID", "RX_FLAG_GSO", "tun_available"]

TUN_PATH = "/dev/net/tun"
#: The writer thread's ring: about 2,800 MTU-sized packets or 64 super-segments.
TX_QUEUE_BYTES = 4 << 20

# <linux/if_tun.h>
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
TUNSETVNETLE = 0x400454DC
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_TUN_EXCL = 0x8000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
IFNAMSIZ = 16                      # including the terminating NUL
IFA_F_NODAD = 0x02                 # <linux/if_addr.h>

# Offload sets to try, best first (TSO without CSUM is EINVAL).
_OFFLOAD_CHOICES = (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6, TUN_F_CSUM, 0)


def tun_available() -> Optional[str]:
    """None when TUN links can be made here, else the reason why not."""
    if not os.path.exists(TUN_PATH):
        return f"{TUN_PATH} does not exist (no tun module, or not given to this container)"
    if not _has_cap(12):
        return "CAP_NET_ADMIN is needed to create TUN devices"
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        return "pyroute2 is not installed"
    return None


def _has_cap(bit: int) -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except OSError:                                            # pragma: no cover
        pass
    return os.geteuid() == 0


def _cpu_mask(cpus: Iterable[int]) -> int:
    """A CPU set as the hex-able bit mask sysfs takes; every CPU must exist."""
    mask = 0
    n = os.cpu_count() or 1
    for c in cpus:
        if not isinstance(c, int) or not 0 <= c < n:
            raise ValueError(f"rps_cpus: no CPU {c!r} on this machine (0..{n - 1})")
        mask |= 1 << c
    if not mask:
        raise ValueError("rps_cpus: an empty set (use None to leave steering off)")
    return mask


def _check_name(name: str) -> bytes:
    """A Linux interface name: 1..15 bytes, no '/', ':' or whitespace, not '.' or '..'."""
    if not isinstance(name, str):
        raise TypeError("interface name must be a str")
    raw = name.encode("ascii", "strict") if name.isascii() else None
    if raw is None:
        raise ValueError(f"interface name {name!r} must be ASCII")
    if not raw:
        raise ValueError("interface name must not be empty")
    if len(raw) >= IFNAMSIZ:
        raise ValueError(f"interface name {name!r} is too long ({len(raw)} bytes; "
                         f"Linux allows at most {IFNAMSIZ - 1})")
    if name in (".", "..") or any(c in name for c in "/: \t\n\0"):
        raise ValueError(f"invalid interface name {name!r}")
    return raw


_IP = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
_Net = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
_Entry = Tuple[_IP, _IP, _Net]

#: The prefix length an address without one gets: a /24 for IPv4, a /64 for IPv6 (the
#: interface-identifier split of RFC 4291 2.5.1).
DEFAULT_PREFIX = {4: 24, 6: 64}
#: The longest prefix that leaves room for the kernel's address and fasttcp's: IPv4 loses
#: the network and broadcast addresses, IPv6 the Subnet-Router anycast (RFC 4291 2.6.1).
MAX_PREFIX = {4: 30, 6: 126}


def parse_ip(text: Any, what: str = "address") -> _IP:
    """An IPv4 or IPv6 address, or ValueError in one line saying what is wrong with it."""
    if not isinstance(text, str):
        raise ValueError(f"invalid {what} {text!r}: a string expected")
    if "%" in text:
        raise ValueError(f"{what} {text!r}: scoped (link-local) addresses are not supported "
                         "on a TUN link; use a global or unique local address (fd00::/8)")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        kind = "IPv6" if ":" in text else "IPv4"
        raise ValueError(f"invalid {kind} {what} {text!r}") from None


def check_host_ip(addr: _IP, what: str = "address") -> None:
    """Refuse what cannot be a unicast host address of a TUN link (ValueError)."""
    if addr.is_unspecified:
        raise ValueError(f"{what} {addr} is the unspecified address: it cannot be a host "
                         "address")
    if addr.is_multicast:
        raise ValueError(f"{what} {addr} is a multicast address: it cannot be a host address")
    if addr.is_loopback:
        raise ValueError(f"{what} {addr} is a loopback address: it cannot be a host address "
                         "on a TUN link")
    if addr.version == 6:
        assert isinstance(addr, ipaddress.IPv6Address)
        if addr.is_link_local:
            # RFC 4007 6: a link-local address means nothing without its zone (scope),
            # and fasttcp's Host has no zones; a TUN link needs no link-local address.
            raise ValueError(f"{what} {addr} is link-local (fe80::/10) and has no scope; "
                             "use a global or unique local address (fd00::/8)")
        if addr.ipv4_mapped is not None:
            raise ValueError(f"{what} {addr} is an IPv4-mapped IPv6 address (RFC 4291 "
                             f"2.5.5.2); give the IPv4 address {addr.ipv4_mapped} itself")


def check_link_address(address: Any, prefix: Optional[int] = None,
                       kernel_address: Optional[str] = None) -> _Entry:
    """(fasttcp's address, the kernel's address, the network) for one address of a TUN
    link: ``prefix`` defaults to :data:`DEFAULT_PREFIX`, the kernel's address to the first
    host of the network. ValueError (one line) for anything that cannot work."""
    addr = parse_ip(address)
    check_host_ip(addr)
    v = addr.version
    if prefix is None:
        prefix = DEFAULT_PREFIX[v]
    if isinstance(prefix, bool) or not isinstance(prefix, int) or \
            not 1 <= prefix <= MAX_PREFIX[v]:
        room = ("network, broadcast and two hosts" if v == 4
                else "the Subnet-Router anycast address and two hosts")
        raise ValueError(f"prefix length {prefix!r} for {addr} must be 1..{MAX_PREFIX[v]} "
                         f"(room for {room})")
    net = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
    if v == 4 and addr in (net.network_address, net.broadcast_address):
        raise ValueError(f"{addr} is the network or broadcast address of {net}")
    if v == 6 and addr == net.network_address:
        raise ValueError(f"{addr} is the Subnet-Router anycast address of {net} "
                         "(RFC 4291 2.6.1), not a host address")
    if kernel_address is None:
        kaddr: _IP = net.network_address + 1
    else:
        kaddr = parse_ip(kernel_address, "kernel address")
        reserved = (net.network_address,) + ((net.broadcast_address,) if v == 4 else ())
        if kaddr.version != v or kaddr not in net or kaddr in reserved:
            raise ValueError(f"kernel address {kaddr} is not a host address of {net}")
    if kaddr == addr:
        raise ValueError(f"{addr} is the kernel's address on the device ({net}): "
                         "pick another address for fasttcp")
    return addr, kaddr, net


def _split_prefix(text: Any) -> Tuple[Any, Optional[int]]:
    if not isinstance(text, str) or "/" not in text:
        return text, None
    a, _, p = text.partition("/")
    if not p.isdigit():
        raise ValueError(f"invalid prefix length in {text!r}")
    return a, int(p)


def link_addresses(address: Optional[str] = None, prefix: Optional[int] = None,
                   kernel_address: Optional[str] = None,
                   addresses: Optional[Iterable[str]] = None) -> List[_Entry]:
    """The checked address plan of a TUN link: ``address``/``prefix``/``kernel_address``
    (one address), or ``addresses`` (several, ``"ADDR/PREFIX"`` or ``"ADDR"``, of either
    family); neither: 10.77.0.2/24. Addresses in one network share its kernel address;
    networks of one family must not overlap otherwise, and no fasttcp address may be a
    kernel address."""
    if addresses is not None:
        if address is not None or prefix is not None or kernel_address is not None:
            raise ValueError("give either addresses= or address=/prefix=/kernel_address=, "
                             "not both")
        if isinstance(addresses, (str, bytes)):
            raise ValueError("addresses= takes a list of addresses, not one string")
        plan = [check_link_address(*_split_prefix(a)) for a in addresses]
        if not plan:
            raise ValueError("addresses= is empty: a TUN link needs at least one address")
    else:
        plan = [check_link_address("10.77.0.2" if address is None else address, prefix,
                                   kernel_address)]
    seen: dict = {}
    for a, _k, net in plan:
        if a in seen:
            raise ValueError(f"address {a} is given twice")
        seen[a] = net
    for a, k, net in plan:
        for b, k2, net2 in plan:
            if net.version == net2.version and net != net2 and net.overlaps(net2):
                raise ValueError(f"networks {net} and {net2} overlap")
            if net == net2 and k != k2:
                raise ValueError(f"{a} and {b} are both in {net} but name different "
                                 f"kernel addresses ({k}, {k2})")
        if a in {k2 for _, k2, _ in plan}:
            raise ValueError(f"{a} is the kernel's address on the device: pick another "
                             "address for fasttcp")
    return plan


def _enable_ipv6(netns: Optional[str], name: str) -> None:
    """IPv6 on for device ``name`` (disable_ipv6=0) and no DAD on it, so that its IPv6
    addresses work at once; OSError naming the cause where the kernel has no IPv6."""
    base = f"ipv6/conf/{name}/"
    try:
        _ns.write_net_sysctl(netns, base + "disable_ipv6", "0")
        _ns.write_net_sysctl(netns, base + "accept_dad", "0")
    except FileNotFoundError as e:
        raise OSError(errno.EAFNOSUPPORT, "IPv6 addresses on a TUN link need IPv6 in the "
                      "kernel (/proc/sys/net/ipv6 is missing: ipv6.disable=1?)") from e


def _wait_local_routes(ipr: Any, kernel6: List[_IP], name: str,
                       timeout: float = 2.0) -> None:
    """Wait until each IPv6 address is the kernel's own (its local route is in place).
    Linux adds that route from a work queue once the address is up, even without DAD, so
    a packet sent to it at once would be dropped (Ip6InAddrErrors); IPv4's is immediate."""
    if not kernel6:
        return
    end = time.monotonic() + timeout
    for _ in range(int(timeout / 0.001) + 1):
        if all(any(r["type"] == 2 for r in ipr.route("get", dst=str(k)))   # RTN_LOCAL
               for k in kernel6):
            return
        if time.monotonic() > end:
            break
        time.sleep(0.001)
    raise OSError(errno.ETIMEDOUT, f"the IPv6 addresses on {name} did not become usable "
                  f"within {timeout:g} s")


def _iproute(netns: Optional[str]) -> Any:
    return _ns.iproute(netns)


def _netlink_error(e: Exception, what: str) -> OSError:
    code = getattr(e, "code", 0) or errno.EIO
    if not isinstance(code, int) or code <= 0:
        code = errno.EIO
    return OSError(code, f"{what}: {type(e).__name__}: {e}" if code == errno.EIO
                   else f"{what}: {os.strerror(code)}")


def run_outside_loop(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, in a helper thread when an asyncio event loop is running in
    this one (and waited for: this thread blocks meanwhile), else right here.

    pyroute2 0.8 and later run their synchronous API on an event loop of their own, which
    fails inside a running loop; a thread has none. Netlink work is short (a few
    milliseconds); code on an event loop that must not block at all awaits
    :meth:`TunLink.open` instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn(*args, **kwargs)
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as e:                 # noqa: BLE001 - re-raised below
            box["error"] = e

    t = threading.Thread(target=run, name="fasttcp-netlink", daemon=True)
    t.start()
    try:
        t.join()
    except BaseException:
        t.join()              # interrupted (KeyboardInterrupt): let fn finish, then raise
        raise
    if "error" in box:
        err = box.pop("error")
        try:
            raise err
        finally:
            del err                                # no reference cycle through the frame
    return box["result"]


class TunLink:
    """A TUN device as a fasttcp link; see the module docstring.

    ``send_batch`` takes :class:`fasttcp.wire.SplitPacket` s (headers plus views of a
    connection's send ring) and writes each with one writev, without copying the
    payload: its :attr:`capabilities` record tells the asyncio driver so.

    ``address`` is fasttcp's address, IPv4 or IPv6 (default 10.77.0.2); the kernel side
    of the device gets ``kernel_address`` (default: the first host address of
    ``address/prefix``; ``prefix`` defaults to 24 for IPv4, 64 for IPv6). For several
    addresses, of either family, pass ``addresses=["10.77.0.2/24", "fd77::2/64"]``
    instead (``"ADDR"`` alone takes the default prefix): the kernel gets the first host of
    each network, and fasttcp's addresses are reached through the connected routes. The
    result is in ``addresses``, ``kernel_addresses`` and ``networks`` (tuples of str, in
    the order given); ``address``, ``kernel_address`` and ``prefix`` are the first ones.
    IPv6 is switched on for the device (``disable_ipv6=0``) and its addresses are added
    without Duplicate Address Detection, so they work at once. With
    ``netns`` the device lives in that named network namespace, created if missing (and
    then removed again by :meth:`close` unless ``keep_netns``).

    Raises ``ValueError`` (bad name, address, prefix, MTU), ``FileNotFoundError`` (no
    /dev/net/tun), ``PermissionError`` (no CAP_NET_ADMIN) and ``FileExistsError`` (the
    interface name is taken); a netlink failure is an ``OSError`` whose ``__cause__`` is
    pyroute2's exception.

    On an event loop, ``link = await TunLink.open(...)`` sets up without blocking it (and
    ``await link.aclose()`` tears down). The plain constructor works there too: it does
    its netlink work in a helper thread (pyroute2 0.8+ cannot run inside a running loop)
    and blocks the loop for those few milliseconds.

    One reader and one writer at a time: ``recv_batch`` reuses one receive arena and both
    calls release the GIL while they run. Writes never block (a full queue drops).

    ``tx_thread``: write through a C writer thread (module docstring); None (the
    default) turns it on for a link without offloads when the process may use two CPUs
    or more. :meth:`flush` waits until it has written everything queued.

    ``rps_cpus`` (a set of CPU numbers) steers the kernel's processing of the packets we
    write to those CPUs (receive packet steering, /sys/class/net/NAME/queues/rx-0/
    rps_cpus). Every ACK we write runs the kernel sender's next transmit burst inside our
    ``write()``; steered, that work runs on the other CPUs instead. It pays without
    offloads when the process itself stays off those CPUs (``os.sched_setaffinity``):
    see the README's benchmarks.
    """

    def __init__(self, name: str = "ftun0", address: Optional[str] = None,
                 prefix: Optional[int] = None, mtu: int = 1500, netns: Optional[str] = None,
                 offload: bool = True, txqueuelen: int = 5000, batch: int = 64, *,
                 kernel_address: Optional[str] = None,
                 addresses: Optional[Iterable[str]] = None, complete_checksums: bool = False,
                 keep_netns: bool = False, rps_cpus: Optional[Iterable[int]] = None,
                 tx_thread: Optional[bool] = None) -> None:
        raw = _check_name(name)
        plan = link_addresses(address, prefix, kernel_address, addresses)
        if not 68 <= int(mtu) <= 65535:                    # RFC 791: every host takes 68
            raise ValueError(f"MTU {mtu} out of range 68..65535")
        if int(mtu) < 1280 and any(a.version == 6 for a, _, _ in plan):
            # RFC 8200 section 5: every link that carries IPv6 has an MTU of 1280 or more
            # (Linux turns IPv6 off on a device with less).
            raise ValueError(f"MTU {mtu} is below 1280, the IPv6 minimum (RFC 8200 5)")
        if not 0 <= int(txqueuelen) <= 1 << 20:
            raise ValueError(f"txqueuelen {txqueuelen} out of range")
        if int(batch) < 1:
            raise ValueError("batch must be at least 1")
        if netns is not None:
            _ns.validate_netns_name(netns)
        rps_mask = _cpu_mask(rps_cpus) if rps_cpus is not None else None
        self._init_state(name, netns, batch)
        self._set_addresses(plan)
        self.mtu = int(mtu)
        self.txqueuelen = int(txqueuelen)
        self.owned = True
        self.keep_netns = keep_netns
        _require_tun()
        try:
            run_outside_loop(self._setup, raw, offload, rps_mask, complete_checksums,
                             tx_thread)
        except BaseException:
            if self._io is not None:          # set up, but the wait for it was interrupted
                self.close()
            raise

    def _setup(self, raw: bytes, offload: bool, rps_mask: Optional[int],
               complete_checksums: bool, tx_thread: Optional[bool]) -> None:
        name, netns = self.name, self.netns
        fd = -1
        try:
            if netns is not None:
                self._created_netns = _ns.create_netns(netns, exist_ok=True)
            fd, vnet, flags = _open_tun(raw, netns, offload, exclusive=True)
            self._configure(name, netns)
            if rps_mask is not None:
                _ns.write_net_sysfs(netns, f"class/net/{name}/queues/rx-0/rps_cpus",
                                    f"{rps_mask:x}")
            self._io = TunIO(fd, vnet, self.batch, complete_checksums)
            self._start_writer(tx_thread, flags)
        except BaseException:
            if self._io is not None:
                self._io.detach()
                self._io = None
            if fd >= 0:
                os.close(fd)                  # a non-persistent device dies with its fd
            if self._created_netns:
                _ns.remove_netns(netns)
                self._created_netns = False
            raise
        self.offload_flags = flags
        self._fd = fd

    @classmethod
    async def open(cls, *args: Any, **kwargs: Any) -> "TunLink":
        """``await TunLink.open(...)``: the constructor (same arguments) run in the event
        loop's default executor, so the loop keeps running while the device and namespace
        are set up. If the awaiting task is cancelled meanwhile, the link is closed once
        it is made."""
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, functools.partial(cls, *args, **kwargs))
        return await _shielded(loop, fut)

    @classmethod
    async def open_existing(cls, *args: Any, **kwargs: Any) -> "TunLink":
        """``await TunLink.open_existing(...)``: :meth:`attach` in the default executor."""
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, functools.partial(cls.attach, *args, **kwargs))
        return await _shielded(loop, fut)

    async def aclose(self) -> None:
        """:meth:`close` in the default executor (removing a namespace takes a few ms)."""
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    @classmethod
    def attach(cls, name: str, netns: Optional[str] = None, *, address: Optional[str] = None,
               offload: bool = True, batch: int = 64,
               complete_checksums: bool = False,
               tx_thread: Optional[bool] = None,
               addresses: Optional[Iterable[str]] = None) -> "TunLink":
        """Open an existing (persistent, unused) TUN device; :meth:`close` leaves it in place.

        ``address`` (or ``addresses``, several of either family) is fasttcp's address on
        it, if known; ``kernel_addresses`` (``kernel_address``, ``prefix``: the first
        one's), ``networks``, ``mtu`` and ``txqueuelen`` are read from the device. The
        offload flags are set explicitly, as for a new device.
        """
        raw = _check_name(name)
        if netns is not None:
            _ns.validate_netns_name(netns)
            if not _ns.netns_exists(netns):
                raise FileNotFoundError(f"no network namespace {netns!r}")
        if address is not None and addresses is not None:
            raise ValueError("give either address= or addresses=, not both")
        mine = [address] if address is not None else list(addresses or ())
        for a in mine:
            check_host_ip(parse_ip(a))
        _require_tun()
        self = cls.__new__(cls)
        self._init_state(name, netns, batch)
        self.owned = False
        self.keep_netns = True
        info = run_outside_loop(self._read_device, name, netns)
        if info is None:
            raise FileNotFoundError(f"no interface {name!r}"
                                    + (f" in network namespace {netns!r}" if netns else ""))
        self.mtu, self.txqueuelen, kernel = info
        self.addresses = tuple(str(parse_ip(a)) for a in mine)
        self.address = self.addresses[0] if self.addresses else None
        self.kernel_addresses = tuple(str(k) for k, _ in kernel)
        self.networks = tuple(str(ipaddress.ip_interface(f"{k}/{p}").network)
                              for k, p in kernel)
        self.kernel_address, self.prefix = kernel[0] if kernel else (None, None)
        fd, vnet, flags = _open_tun(raw, netns, offload, exclusive=False)
        try:
            self._io = TunIO(fd, vnet, int(batch), complete_checksums)
            self._start_writer(tx_thread, flags)
        except BaseException:
            if self._io is not None:
                self._io.detach()
                self._io = None
            os.close(fd)
            raise
        self.offload_flags = flags
        self._fd = fd
        return self

    # ------------------------------------------------------------------------------------
    # setup helpers
    # ------------------------------------------------------------------------------------

    def _start_writer(self, tx_thread: Optional[bool], offload_flags: int) -> None:
        if tx_thread is None:
            tx_thread = not offload_flags & TUN_F_TSO4 and len(os.sched_getaffinity(0)) >= 2
        if tx_thread:
            self._io.start_tx_thread(TX_QUEUE_BYTES)

    def _init_state(self, name: str, netns: Optional[str], batch: int) -> None:
        self.addresses = ()
        self.kernel_addresses = ()
        self.networks = ()
        self._plan = []
        self.name = name
        self.netns = netns
        self.batch = int(batch)
        self._io: Any = None
        self._fd = -1
        self._created_netns = False
        self.offload_flags = 0

    @staticmethod
    def _check_addresses(address: str, prefix: Optional[int], kernel_address: Optional[str]):
        """(address, kernel address, network) for one fasttcp address (either family)."""
        return check_link_address(address, prefix, kernel_address)

    def _set_addresses(self, plan: List[_Entry]) -> None:
        self.addresses: Tuple[str, ...] = tuple(str(a) for a, _, _ in plan)
        kernel: List[str] = []
        networks: List[str] = []
        for _, k, net in plan:
            if str(k) not in kernel:
                kernel.append(str(k))
                networks.append(str(net))
        self.kernel_addresses: Tuple[str, ...] = tuple(kernel)
        self.networks: Tuple[str, ...] = tuple(networks)
        self.address: Optional[str] = self.addresses[0] if plan else None
        self.kernel_address: Optional[str] = str(plan[0][1]) if plan else None
        self.prefix: Optional[int] = plan[0][2].prefixlen if plan else None
        self._plan = plan

    def _configure(self, name: str, netns: Optional[str]) -> None:
        try:
            with _iproute(netns) as ipr:
                idx = ipr.link_lookup(ifname=name)
                if not idx:
                    raise FileNotFoundError(f"TUN device {name!r} vanished during setup")
                idx = idx[0]
                try:
                    # No IPv6 link-local address: the kernel would send router
                    # solicitations into the link (a TUN is layer 3: no neighbour
                    # discovery, RFC 4861 is not needed); global addresses are added below.
                    ipr.link("set", index=idx, IFLA_AF_SPEC={"attrs": [["AF_INET6", {
                        "attrs": [["IFLA_INET6_ADDR_GEN_MODE", 1]]}]]})
                except Exception:                              # pragma: no cover
                    pass                                       # IPv6 disabled: fine
                ipr.link("set", index=idx, mtu=self.mtu, txqlen=self.txqueuelen)
                if any(a.version == 6 for a, _, _ in self._plan):
                    _enable_ipv6(netns, name)
                done = set()
                for _, kaddr, net in self._plan:
                    if kaddr in done:
                        continue
                    done.add(kaddr)
                    if kaddr.version == 6:
                        # Usable at once: no Duplicate Address Detection (RFC 4862 5.4)
                        # on a point-to-point link with nobody else on it (IFA_F_NODAD).
                        ipr.addr("add", index=idx, address=str(kaddr),
                                 prefixlen=net.prefixlen, flags=IFA_F_NODAD)
                    else:
                        ipr.addr("add", index=idx, address=str(kaddr),
                                 prefixlen=net.prefixlen)
                ipr.link("set", index=idx, state="up")
                _wait_local_routes(ipr, [k for k in done if k.version == 6], name)
                self.ifindex = idx
        except OSError:
            raise
        except Exception as e:                     # pyroute2's NetlinkError is no OSError
            raise _netlink_error(e, f"configuring {name}") from e

    @staticmethod
    def _read_device(name: str, netns: Optional[str]):
        with _iproute(netns) as ipr:
            idx = ipr.link_lookup(ifname=name)
            if not idx:
                return None
            link = ipr.get_links(idx[0])[0]
            kernel = []
            for family in (socket.AF_INET, socket.AF_INET6):     # IPv4 first, as configured
                for a in ipr.get_addr(index=idx[0], family=family):
                    ip = a.get_attr("IFA_ADDRESS")
                    if ip and not ipaddress.ip_address(ip).is_link_local:
                        kernel.append((ip, a["prefixlen"]))
            return (link.get_attr("IFLA_MTU"), link.get_attr("IFLA_TXQLEN"), kernel)

    # ------------------------------------------------------------------------------------
    # the link interface
    # ------------------------------------------------------------------------------------

    def recv_batch(self, max: Optional[int] = None, copy: bool = True,  # noqa: A002
                   max_bytes: Optional[int] = None) -> list:
        """Up to ``max`` (default and at most ``batch``) packets that are waiting; never
        blocks. With ``copy=False`` the packets are memoryviews into the link's receive
        arena, valid only until the next ``recv_batch`` call. ``max_bytes`` stops the batch
        once its packets hold that many bytes (the one that crosses it included; None or
        0: no limit): with 64 KB super-packets a batch of 64 is 4 MiB, and a receiver that
        takes a whole window before it acknowledges any of it stalls the sender."""
        io = self._io
        if io is None:
            raise ValueError("recv_batch on a closed TunLink")
        return io.recv_batch(-1 if max is None else max, copy,
                             -1 if max_bytes is None else max_bytes)

    def send_batch(self, packets: Iterable[Any], gso: Optional[int] = None) -> int:
        """Write the packets; returns how many were written (the rest count as dropped).
        With the writer thread they are queued, in order, for it to write (:meth:`flush`
        waits), and the whole count is returned: ones that found its ring full are
        dropped and counted in ``tx_queue_drops``, as a full device queue drops them.

        ``gso`` > 0 (offload links only): a TCP packet carrying more than ``gso`` bytes is
        handed to the kernel as one TSO super-segment of ``gso``-byte segments. The default
        (None) on an offload link cuts each super-segment into packets that fill the
        link's MTU (gso = MTU - its headers), which is what a Host with ``gso_max`` sends."""
        io = self._io
        if io is None:
            raise ValueError("send_batch on a closed TunLink")
        if gso is None:
            gso = -self.mtu if self.offload else 0
        return io.send_batch(packets, gso)

    def flush(self) -> None:
        """Wait until the writer thread has written every packet handed to
        :meth:`send_batch` (returns at once without one)."""
        if self._io is not None:
            self._io.flush()

    @property
    def tx_thread(self) -> bool:
        """True when writes go through the link's C writer thread."""
        return self._io is not None and self._io.tx_thread

    def fileno(self) -> int:
        if self._io is None:
            raise ValueError("closed TunLink")
        return self._fd

    def wait_readable(self, timeout: Optional[float]) -> bool:
        """Block until a packet is waiting or ``timeout`` seconds pass (None: forever).
        For simple loops; an event loop should watch :meth:`fileno` instead."""
        p = select.poll()
        p.register(self.fileno(), select.POLLIN)
        ms = -1 if timeout is None else max(0, int(timeout * 1000))
        return bool(p.poll(ms))

    @property
    def offload(self) -> bool:
        """True when the kernel accepted segmentation offload (TSO)."""
        return bool(self.offload_flags & TUN_F_TSO4)

    @property
    def vnet_hdr(self) -> bool:
        return self._io is not None and self._io.vnet_hdr

    @property
    def parse_flags(self) -> int:
        """Pass to ``SegmentBatch.parse`` for packets from this link (module docstring)."""
        return self._io.parse_flags if self._io is not None else 0

    @property
    def capabilities(self) -> LinkCapabilities:
        """What this open device does (the offloads the kernel accepted): SplitPackets are
        written with scatter I/O at once (the writer thread copies what it queues), reads
        can return views of the arena and stop at a byte budget."""
        tso = 65535 if self.offload else 0
        return LinkCapabilities(
            mtu=self.mtu, rx_checksum_offload=bool(self.parse_flags & PARSE_NO_TCP_CSUM),
            tx_checksum_offload=bool(self.offload_flags & TUN_F_CSUM),
            tso_max_size=tso, gro_max_size=tso, takes_split_packets=True,
            keeps_packets=False, recv_views=True, recv_max_bytes=True)

    @property
    def last_rx_flags(self) -> bytes:
        """``RX_FLAG_*`` bits per packet of the last ``recv_batch`` result."""
        return self._io.last_rx_flags if self._io is not None else b""

    @property
    def complete_checksums(self) -> bool:
        return bool(self._io is not None and self._io.complete_checksums)

    @property
    def closed(self) -> bool:
        return self._io is None

    @property
    def created_netns(self) -> bool:
        """True while the link holds a namespace it created (removed by :meth:`close`
        unless ``keep_netns``)."""
        return self._created_netns

    def stats(self) -> dict:
        """Counters: rx/tx packets, bytes, GSO packets, drops and errors."""
        return self._io.stats() if self._io is not None else {}

    # ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the fd; a device this link created goes with it (checked with pyroute2),
        and so does a namespace it created (unless ``keep_netns``). A link that is only
        garbage-collected closes its fd (so its device goes) but leaves such a namespace."""
        io = self._io
        if io is None:
            return
        self._io = None
        io.detach()
        os.close(self._fd)
        self._fd = -1
        if self._created_netns and not self.keep_netns:
            self._created_netns = False
            run_outside_loop(_ns.remove_netns, self.netns)     # takes the device with it
            return
        if self.owned:
            run_outside_loop(self._delete_device, self.name, self.netns)

    @staticmethod
    def _delete_device(name: str, netns: Optional[str]) -> None:
        try:
            with _iproute(netns) as ipr:
                idx = ipr.link_lookup(ifname=name)
                if idx:                       # made persistent by someone: delete it
                    ipr.link("del", index=idx[0])
        except FileNotFoundError:
            pass                              # the namespace itself is gone

    def __enter__(self) -> "TunLink":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        # Last resort: closing the fd removes a non-persistent device. The writer thread
        # ends first: it must never write to a closed (or reused) fd number.
        io = getattr(self, "_io", None)
        if io is not None and self._fd >= 0:
            io.detach()
            try:
                os.close(self._fd)
            except OSError:
                pass

    def __repr__(self) -> str:
        where = f" netns={self.netns}" if self.netns else ""
        state = "closed" if self._io is None else f"fd={self._fd}"
        addrs = ",".join(self.addresses) or "-"
        kernel = ",".join(f"{k}/{n.rsplit('/', 1)[1]}"
                          for k, n in zip(self.kernel_addresses, self.networks)) or "-"
        return (f"<TunLink {self.name}{where} {addrs} kernel={kernel}"
                f" mtu={self.mtu} offload=0x{self.offload_flags:x} {state}>")


async def _shielded(loop: asyncio.AbstractEventLoop, fut: "asyncio.Future[TunLink]") -> TunLink:
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        def discard(f: "asyncio.Future[TunLink]") -> None:
            if not f.cancelled() and f.exception() is None:
                loop.run_in_executor(None, f.result().close)
        fut.add_done_callback(discard)
        raise


# ------------------------------------------------------------------------------------------
# fd setup
# ------------------------------------------------------------------------------------------

def _require_tun() -> None:
    if not os.path.exists(TUN_PATH):
        raise FileNotFoundError(errno.ENOENT, f"{TUN_PATH} does not exist: load the tun "
                                "module or give the container the device", TUN_PATH)


def _open_tun(raw: bytes, netns: Optional[str], offload: bool, exclusive: bool):
    """Open /dev/net/tun inside ``netns`` and bind it to device ``raw``.

    Returns (fd, vnet_hdr, offload_flags). The fd is non-blocking and close-on-exec.
    """
    name = raw.decode()
    with _ns.entered(netns):
        try:
            fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError as e:
            raise FileNotFoundError(errno.ENOENT, f"{TUN_PATH} does not exist", TUN_PATH) from e
        except PermissionError as e:
            raise PermissionError(errno.EACCES, f"cannot open {TUN_PATH}: needs root or "
                                  "CAP_NET_ADMIN", TUN_PATH) from e
        try:
            base = IFF_TUN | IFF_NO_PI | (IFF_TUN_EXCL if exclusive else 0)
            vnet = False
            if offload:
                try:
                    _setiff(fd, raw, base | IFF_VNET_HDR)
                    vnet = True
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        raise _iff_error(e, name, exclusive) from e
            if not vnet:
                try:
                    _setiff(fd, raw, base)
                except OSError as e:
                    raise _iff_error(e, name, exclusive) from e
            flags = _set_offload(fd, vnet)
        except BaseException:
            os.close(fd)
            raise
    return fd, vnet, flags


def _setiff(fd: int, raw: bytes, flags: int) -> None:
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", raw, flags))


def _iff_error(e: OSError, name: str, exclusive: bool) -> OSError:
    if e.errno == errno.EPERM:
        return PermissionError(errno.EPERM, f"cannot create TUN device {name!r}: "
                               "needs CAP_NET_ADMIN")
    if e.errno in (errno.EBUSY, errno.EEXIST) and exclusive:
        return FileExistsError(errno.EEXIST, f"interface name {name!r} is already taken")
    if e.errno == errno.EBUSY:
        return OSError(errno.EBUSY, f"TUN device {name!r} is in use by another process")
    if e.errno == errno.EINVAL and not exclusive:
        return OSError(errno.EINVAL, f"{name!r} is not a TUN device (or has other flags)")
    return OSError(e.errno, f"TUNSETIFF {name!r}: {os.strerror(e.errno)}")


def _set_offload(fd: int, vnet: bool) -> int:
    """Set the device's offload flags explicitly (they outlive the fd); the best set the
    kernel accepts when ``vnet``, else 0."""
    if vnet:
        # Our header layout: 10 bytes, little-endian (virtio 1.0). Both are device state
        # too. TUNSETVNETLE is refused by kernels without cross-endian support, where the
        # header is in native order - little-endian on the machines we run on.
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", HDR_LEN))
        try:
            fcntl.ioctl(fd, TUNSETVNETLE, struct.pack("i", 1))
        except OSError:
            if struct.pack("=H", 1) != struct.pack("<H", 1):   # pragma: no cover
                raise
    for flags in (_OFFLOAD_CHOICES if vnet else (0,)):
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, flags)       # the argument is the value itself
            return flags
        except OSError as e:
            if e.errno != errno.EINVAL or flags == 0:
                raise
    return 0                                                   # pragma: no cover
