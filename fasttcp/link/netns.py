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
from typing import Any, Iterator, Optional

__all__ = ["create_netns", "entered", "iproute", "netns_exists", "read_net_sysctl",
           "read_net_sysfs", "remove_netns", "socket_in", "validate_netns_name",
           "write_net_sysctl", "write_net_sysfs"]

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


@contextmanager
def iproute(name: str | None) -> Iterator[Any]:
    """A pyroute2 ``IPRoute`` for namespace ``name`` (None: ours), closed on exit.

    The calling thread stays inside the namespace for the whole block (:func:`entered`):
    the netlink socket is opened there (a socket stays in the namespace it was made in),
    and so is anything pyroute2 does with ioctls, such as creating a tuntap device. This
    works the same on every supported pyroute2 (0.7 and 0.8 have no
    ``IPRoute(netns=...)``). pyroute2 0.8 and later cannot run their synchronous API inside
    a running asyncio loop (see ``fasttcp.link.tun.run_outside_loop``).
    """
    from pyroute2 import IPRoute
    with entered(name):
        with IPRoute() as ipr:
            yield ipr


def socket_in(name: str | None, family: int = socket.AF_INET,
              type: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:  # noqa: A002
    """A socket that lives in namespace ``name``."""
    with entered(name):
        return socket.socket(family, type, proto)


# --- /sys/class/net of a namespace ------------------------------------------------------
# sysfs shows the network devices of the namespace that mounted it, so a device inside
# another namespace is reached from a forked child: a private mount namespace (nothing
# leaks to the host's mounts), setns(2) into the network namespace, a fresh sysfs mount.

_CLONE_NEWNS, _CLONE_NEWNET = 0x00020000, 0x40000000
_MS_REC, _MS_PRIVATE = 0x4000, 0x40000


def _sysfs_child(libc, name: Optional[str], path: str, value: Optional[str],
                 wfd: int) -> None:
    import ctypes
    step = "unshare"
    try:
        if name is not None:
            if libc.unshare(_CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
            step = "mount --make-rprivate /"
            if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
                raise OSError(ctypes.get_errno(), step)
            step = "setns"
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            step = "mount sysfs"
            if libc.mount(b"sysfs", b"/sys", b"sysfs", 0, None) != 0:
                raise OSError(ctypes.get_errno(), step)
        step = "open " + path
        full = "/sys/" + path
        if value is None:
            with open(full) as f:
                out = "ok " + f.read().strip()
        else:
            with open(full, "w") as f:
                f.write(value)
            out = "ok"
    except OSError as e:
        out = f"err {e.errno or 0} {step}: {e.strerror or e}"
    os.write(wfd, out.encode())


def _net_sysfs(name: Optional[str], path: str, value: Optional[str]) -> str:
    if name is not None:
        validate_netns_name(name)
    if path.startswith("/") or ".." in path.split("/"):
        raise ValueError(f"a path under /sys expected, got {path!r}")
    import ctypes
    # Loaded (and the symbols resolved) before fork: the child of a process with threads
    # must not take the dynamic loader's locks.
    libc = ctypes.CDLL(None, use_errno=True)
    for fn in (libc.unshare, libc.mount, libc.setns):
        fn.restype = ctypes.c_int
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                                # pragma: no cover (child)
        code = 1
        try:
            os.close(r)
            _sysfs_child(libc, name, path, value, w)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    try:
        chunks = []
        while True:
            b = os.read(r, 4096)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    reply = b"".join(chunks).decode()
    if reply.startswith("ok"):
        return reply[3:]
    parts = reply.split(" ", 2)
    err = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    raise OSError(err, f"/sys/{path} in netns {name!r}: {parts[2] if len(parts) > 2 else reply}")


def write_net_sysfs(name: Optional[str], path: str, value: str) -> None:
    """Write ``value`` to /sys/``path`` as namespace ``name`` sees it (None: ours)."""
    _net_sysfs(name, path, value)


def read_net_sysfs(name: Optional[str], path: str) -> str:
    """Read /sys/``path`` as namespace ``name`` sees it (None: ours), stripped."""
    return _net_sysfs(name, path, None)


# --- /proc/sys/net of a namespace ----------------------------------------------------------
# Unlike sysfs, /proc/sys/net shows the network namespace of the thread that looks it up,
# so a thread inside the namespace (:func:`entered`) reads and writes that namespace's.

def _sysctl_path(path: str) -> str:
    parts = path.split("/")
    if path.startswith("/") or ".." in parts or "" in parts:
        raise ValueError(f"a path under /proc/sys/net expected, got {path!r}")
    return "/proc/sys/net/" + path


def write_net_sysctl(name: Optional[str], path: str, value: str) -> None:
    """Write ``value`` to /proc/sys/net/``path`` (e.g. ``ipv6/conf/tun0/disable_ipv6``)
    as namespace ``name`` sees it (None: ours)."""
    full = _sysctl_path(path)
    with entered(name):
        with open(full, "w") as f:
            f.write(value)


def read_net_sysctl(name: Optional[str], path: str) -> str:
    """Read /proc/sys/net/``path`` as namespace ``name`` sees it (None: ours), stripped."""
    full = _sysctl_path(path)
    with entered(name):
        with open(full) as f:
            return f.read().strip()
