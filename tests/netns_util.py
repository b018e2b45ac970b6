"""Test helpers for anything that needs a real network: a private network namespace.

Every test that touches a network device makes its own namespace with a unique name
(``fasttcp-test-<pid>-<n>``), works only with addresses inside it, and removes it again,
also when the test fails. Nothing here touches the host's own interfaces.
"""
from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import pytest

from fasttcp.link import netns as ns

_counter = itertools.count()

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21


def _caps() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def netns_unavailable() -> Optional[str]:
    """Why namespace tests cannot run here, or None."""
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        return "pyroute2 is not installed"
    caps = _caps()
    if not caps >> CAP_SYS_ADMIN & 1:
        return "creating network namespaces needs CAP_SYS_ADMIN (run as root)"
    if not caps >> CAP_NET_ADMIN & 1:
        return "configuring network devices needs CAP_NET_ADMIN (run as root)"
    return None


def tun_unavailable() -> Optional[str]:
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun does not exist (no tun module or not passed to the container)"
    return netns_unavailable()


#: Marks of a test that makes network namespaces (and devices in them): the ``root`` and
#: ``netns`` markers (``pytest -m "not root"`` deselects it), and a skip where it cannot run.
#: A module of such tests sets ``pytestmark = NETNS_MARKS`` (or ``TUN_MARKS``).
NETNS_MARKS = [pytest.mark.root, pytest.mark.netns,
               pytest.mark.skipif(netns_unavailable() is not None,
                                  reason=str(netns_unavailable()))]
#: The same for a test that also needs /dev/net/tun.
TUN_MARKS = [pytest.mark.root, pytest.mark.netns,
             pytest.mark.skipif(tun_unavailable() is not None, reason=str(tun_unavailable()))]

#: Fixtures that make a namespace (skipping without root): conftest.py gives every test
#: that uses one, directly or through another fixture, the ``root`` and ``netns`` markers.
NAMESPACE_FIXTURES = frozenset({"netns"})


def _marked(marks: list) -> Callable:
    def decorate(obj):
        for mark in marks:
            obj = mark(obj)
        return obj
    return decorate


#: Decorators for single tests (or classes): ``@requires_netns``, ``@requires_tun``.
requires_netns = _marked(NETNS_MARKS)
requires_tun = _marked(TUN_MARKS)


def unique_netns_name() -> str:
    return f"fasttcp-test-{os.getpid()}-{next(_counter)}"


def unique_ifname(prefix: str = "ftt") -> str:
    """An interface name (<= 15 bytes) no other test process uses at the same time."""
    return f"{prefix}{os.getpid() % 100000}x{next(_counter)}"[:15]


@contextmanager
def temp_netns() -> Iterator[str]:
    """A new, uniquely named network namespace, removed on exit whatever happens."""
    name = unique_netns_name()
    ns.create_netns(name)
    try:
        yield name
    finally:
        ns.remove_netns(name)


def wait_until(cond: Callable[[], bool], timeout: float = 5.0, step: float = 0.005) -> bool:
    """Poll ``cond`` until true or ``timeout`` seconds pass (bounded in count too)."""
    end = time.monotonic() + timeout
    for _ in range(int(timeout / step) + 1):
        if cond():
            return True
        if time.monotonic() >= end:
            break
        time.sleep(step)
    return cond()


class Background:
    """Run ``fn`` in a daemon thread; ``join()`` re-raises what it raised."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.result: object = None
        self.error: Optional[BaseException] = None

        def run() -> None:
            try:
                self.result = fn()
            except BaseException as e:          # noqa: BLE001 - handed to join()
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout: float = 10.0) -> object:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError("background task did not finish")
        if self.error is not None:
            raise self.error
        return self.result


def sock_in(netns: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,
            proto: int = 0, timeout: Optional[float] = 10.0) -> socket.socket:  # noqa: A002
    """A socket inside ``netns`` with a timeout, so no test can hang on it."""
    s = ns.socket_in(netns, family, type, proto)
    s.settimeout(timeout)
    return s
