"""TunLink on a running asyncio event loop: the plain constructor, ``await TunLink.open``,
``attach``/``open_existing`` and ``aclose``; netlink errors keep their cause.

Each test makes its own namespace (``netns_util.temp_netns``) or lets the link make a
uniquely named one, and checks that it is gone afterwards.
"""
from __future__ import annotations

import asyncio
import errno
import threading

import pytest

from netns_util import requires_tun, temp_netns, unique_ifname, unique_netns_name

from fasttcp.link import netns as ns
from fasttcp.link import tun as tunmod
from fasttcp.link.tun import TunLink, run_outside_loop

KERNEL, US = "10.77.0.1", "10.77.0.2"


def run(coro, timeout: float = 30.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


def device_in(netns: str, name: str) -> bool:
    def look() -> bool:
        with ns.iproute(netns) as ipr:
            return bool(ipr.link_lookup(ifname=name))
    return run_outside_loop(look)                    # pyroute2 0.8+: not on a running loop


@requires_tun
def test_plain_constructor_inside_a_running_loop_makes_netns_and_device():
    """The sync constructor and close() from a coroutine: the namespace the link made is
    there while it is open and gone after close."""
    name, space = unique_ifname(), unique_netns_name()

    async def main():
        link = TunLink(name, US, netns=space)
        try:
            assert (link.kernel_address, link.prefix) == (KERNEL, 24)
            assert ns.netns_exists(space) and device_in(space, name)
        finally:
            link.close()
        return link

    link = run(main())
    assert link.closed and not ns.netns_exists(space)


@requires_tun
def test_open_and_aclose_keep_the_loop_running():
    """``await TunLink.open`` runs the setup off the loop: a ticker task keeps running
    while it works; ``aclose`` removes the device in a namespace the link did not make."""
    name = unique_ifname()
    with temp_netns() as space:
        async def main():
            ticks = 0
            stop = asyncio.Event()

            async def ticker():
                nonlocal ticks
                while not stop.is_set():
                    ticks += 1
                    await asyncio.sleep(0)

            task = asyncio.create_task(ticker())
            try:
                link = await TunLink.open(name, US, netns=space, mtu=1400)
            finally:
                stop.set()
                await task
            assert ticks > 1, "the loop did not run during open()"
            assert link.mtu == 1400 and device_in(space, name)
            await link.aclose()
            assert link.closed
            return device_in(space, name)

        assert run(main()) is False
        assert ns.netns_exists(space)                 # not the link's to remove


@requires_tun
def test_attach_and_open_existing_inside_a_running_loop():
    name = unique_ifname("ftp")
    with temp_netns() as space:
        with ns.iproute(space) as ipr:
            ipr.link("add", ifname=name, kind="tuntap", mode="tun")
            idx = ipr.link_lookup(ifname=name)[0]
            ipr.addr("add", index=idx, address=KERNEL, prefixlen=24)

        async def main():
            with TunLink.attach(name, netns=space, address=US) as link:
                assert (link.kernel_address, link.prefix) == (KERNEL, 24)
            link = await TunLink.open_existing(name, netns=space, address=US)
            assert not link.owned and link.kernel_address == KERNEL
            await link.aclose()

        run(main())
        assert device_in(space, name)                 # attach never deletes


@requires_tun
def test_open_errors_are_the_constructors():
    """The same exceptions through ``open``: a taken name is FileExistsError."""
    name = unique_ifname()
    with temp_netns() as space:
        async def main():
            async with _Link(await TunLink.open(name, US, netns=space)):
                with pytest.raises(FileExistsError, match="already taken"):
                    await TunLink.open(name, US, netns=space)
            with pytest.raises(ValueError, match="MTU"):
                await TunLink.open(name, US, netns=space, mtu=50)

        run(main())


class _Link:
    def __init__(self, link: TunLink) -> None:
        self.link = link

    async def __aenter__(self) -> TunLink:
        return self.link

    async def __aexit__(self, *exc) -> None:
        await self.link.aclose()


@requires_tun
def test_cancelled_open_closes_the_link_it_made():
    """A task cancelled while ``open`` works: the link is closed once made, and the
    namespace it created goes with it."""
    name, space = unique_ifname(), unique_netns_name()
    started, release = threading.Event(), threading.Event()
    real_setup = TunLink._setup

    def slow_setup(self, *args):
        started.set()
        release.wait(10)
        return real_setup(self, *args)

    async def main():
        task = asyncio.create_task(TunLink.open(name, US, netns=space))
        for _ in range(1000):
            if started.is_set():
                break
            await asyncio.sleep(0.005)
        task.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(1000):                          # the close runs in the executor
            if not ns.netns_exists(space):
                return True
            await asyncio.sleep(0.005)
        return False

    mp = pytest.MonkeyPatch()
    mp.setattr(TunLink, "_setup", slow_setup)
    try:
        gone = run(main())
    finally:
        mp.undo()
        if ns.netns_exists(space):
            ns.remove_netns(space)
    assert gone, "the cancelled open() left its namespace behind"


class _FailingIPRoute:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def link_lookup(self, **kw):
        return [1]

    def link(self, *args, **kw):
        raise self.error

    addr = link


@requires_tun
@pytest.mark.parametrize("inside_loop", [False, True])
def test_netlink_errors_chain_their_cause(monkeypatch, inside_loop):
    """pyroute2's exceptions are no OSError: they become one whose ``__cause__`` is the
    original (an errno when it has one, else its type and text), and the namespace the
    link made is removed."""
    from contextlib import contextmanager

    from pyroute2.netlink.exceptions import NetlinkError

    errors = [NetlinkError(errno.EINVAL, "Invalid argument"),
              RuntimeError("This event loop is already running")]

    @contextmanager
    def failing(netns):
        yield _FailingIPRoute(errors[0])

    monkeypatch.setattr(ns, "iproute", failing)
    for err in list(errors):
        errors[0] = err
        space = unique_netns_name()

        async def make(space: str = space):
            return TunLink(unique_ifname(), US, netns=space)

        with pytest.raises(OSError) as info:
            run(make()) if inside_loop else TunLink(unique_ifname(), US, netns=space)
        assert info.value.__cause__ is err
        if isinstance(err, NetlinkError):
            assert info.value.errno == errno.EINVAL
        else:
            assert info.value.errno == errno.EIO
            assert "RuntimeError: This event loop is already running" in str(info.value)
        assert not ns.netns_exists(space)


def test_run_outside_loop_uses_a_thread_only_inside_a_loop():
    here = threading.get_ident()
    assert run_outside_loop(threading.get_ident) == here

    async def main():
        return run_outside_loop(threading.get_ident)

    assert run(main()) != here

    async def fails():
        return run_outside_loop(int, "not a number")

    with pytest.raises(ValueError):
        run(fails())
    assert tunmod.run_outside_loop is run_outside_loop
