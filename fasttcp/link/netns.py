"""Named network namespaces (the ``ip netns`` kind, under /run/netns) through pyroute2.

A namespace switch with ``setns(2)`` applies to the calling *thread* only. :func:`entered`
moves the current thread into a namespace for the length of a ``with`` block and always
moves it back; what is created inside - a socket, a TUN fd - stays in that namespace for
its whole life and may then be used from any thread.
"""
from __future__ import annotations

import os
import socket
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["create_netns", "entered", "netns_exists", "remove_netns", "socket_in",
           "validate_netns_name"]

# A name is one path component under /run/netns (iproute2 forbids '/', '.' and '..').
_MAX_NAME = 255
_lock = threading.Lock()          # pyroute2's create() mounts /run/netns: one at a time


def _pyroute2_netns():
    try:
        from pyroute2 import netns
    except ImportError as e:                                   # pragma: no cover
        raise RuntimeError("network namespaces need pyroute2 (pip install pyroute2)") from e
    return netns


def validate_netns_name(name: str) -> str:
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME:
        raise ValueError(f"invalid network namespace name {name!r}")
    if "/" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"invalid network namespace name {name!r}: one path component")
    return name


def netns_exists(name: str) -> bool:
    validate_netns_name(name)
    return name in _pyroute2_netns().listnetns()


def create_netns(name: str, *, exist_ok: bool = False) -> bool:
    """Create the named namespace; returns True if it was created here, False if it
    existed already (with ``exist_ok``; otherwise FileExistsError)."""
    validate_netns_name(name)
    nsmod = _pyroute2_netns()
    with _lock:
        if name in nsmod.listnetns():
            if exist_ok:
                return False
            raise FileExistsError(f"network namespace {name!r} already exists")
        try:
            nsmod.create(name)
        except PermissionError as e:
            raise PermissionError(
                f"cannot create network namespace {name!r}: needs CAP_SYS_ADMIN") from e
    return True


def remove_netns(name: str, *, missing_ok: bool = True) -> None:
    """Remove the named namespace. The kernel frees it once nothing (a process, a
    socket, a TUN fd) holds it any more."""
    validate_netns_name(name)
    nsmod = _pyroute2_netns()
    with _lock:
        if name not in nsmod.listnetns():
            if missing_ok:
                return
            raise FileNotFoundError(f"no network namespace {name!r}")
        nsmod.remove(name)


@contextmanager
def entered(name: str | None) -> Iterator[None]:
    """Run the block with the calling thread inside namespace ``name`` (None: stay).

    The namespace must exist. The thread's own namespace is restored afterwards even when
    the block raises; if that fails the thread is in an unknown namespace, so the error is
    raised as a RuntimeError rather than hidden.
    """
    if name is None:
        yield
        return
    validate_netns_name(name)
    nsmod = _pyroute2_netns()
    if name not in nsmod.listnetns():
        raise FileNotFoundError(f"no network namespace {name!r}")
    # thread-self, not self: /proc/self is the main thread's view.
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            nsmod.setns(name, flags=0)
        except OSError as e:
            if e.errno == 1:
                raise PermissionError(
                    f"cannot enter network namespace {name!r}: needs CAP_SYS_ADMIN") from e
            raise
        try:
            yield
        finally:
            try:
                nsmod.setns(saved, flags=0)
            except OSError as e:                               # pragma: no cover
                raise RuntimeError("could not return to the original network namespace") from e
    finally:
        os.close(saved)


def socket_in(name: str | None, family: int = socket.AF_INET,
              type: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:  # noqa: A002
    """A socket that lives in namespace ``name``."""
    with entered(name):
        return socket.socket(family, type, proto)
