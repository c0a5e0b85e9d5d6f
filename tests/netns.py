"""Hosts you can cut off: Linux network namespaces joined by one bridge, for multi-host tests.

Each :class:`Host` is a network namespace with its own address on a private /24 and a veth
pair whose far end sits on a bridge in a switch namespace of the network's own. Nothing is
added to the namespace the tests run in, so concurrent test runs do not see each other; every
name carries a prefix unique to the network, and :meth:`Network.close` deletes them all.

- ``host.argv([...])`` runs a command on the host (``ip netns exec``), so it talks over that
  host's network only;
- ``host.call(fn, ...)`` runs ``fn`` in a thread of this process that has entered the host's
  namespace, so servers built there (the Pyroscope stand-in, a pprof target) listen on the
  host and clients built there connect from it;
- ``host.cut()`` takes the host's cable out (its switch port goes down: packets are lost, no
  connection is reset, as when a host or its link dies) and ``host.restore()`` puts it back.

Creating namespaces needs root (CAP_SYS_ADMIN) and ``ip`` from iproute2; :func:`unavailable`
says why they cannot be created here, for a test to skip with.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self, TypeVar

T = TypeVar("T")

#: The private /24 the hosts share; it exists only inside the network's own namespaces.
SUBNET = "10.77.0"
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], check=False, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (CAP_SYS_ADMIN)"
    probe = f"ppsprobe-{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", probe)
    except RuntimeError as exc:
        return f"cannot create a network namespace: {exc}"
    _ip("netns", "del", probe)
    return None


def _enter(namespace: str) -> None:
    """Move the calling thread (only it) into ``namespace``."""
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {namespace}: {os.strerror(errno)}")
    finally:
        os.close(fd)


class Host:
    """One simulated host: a namespace with ``address`` on the network's /24."""

    def __init__(self, network: Network, name: str, index: int) -> None:
        self.name = name
        self.namespace = f"{network.prefix}-{name}"
        self.address = f"{SUBNET}.{index}"
        self._switch = network.switch
        self._port = f"p{index}"  # its end on the bridge, named inside the switch namespace
        self._threads: ThreadPoolExecutor | None = None
        _ip("netns", "add", self.namespace)
        _ip("-n", self.namespace, "link", "set", "lo", "up")
        _ip("-n", self.namespace, "link", "add", "eth0", "type", "veth", "peer", "name", self._port,
            "netns", self._switch)
        _ip("-n", self.namespace, "addr", "add", f"{self.address}/24", "dev", "eth0")
        _ip("-n", self.namespace, "link", "set", "eth0", "up")
        _ip("-n", self._switch, "link", "set", self._port, "master", "br0")
        _ip("-n", self._switch, "link", "set", self._port, "up")

    def argv(self, argv: list[str]) -> list[str]:
        """``argv`` run on this host."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in this process, from inside the host's namespace."""
        if self._threads is None:
            self._threads = ThreadPoolExecutor(1, thread_name_prefix=self.namespace, initializer=_enter,
                                               initargs=(self.namespace,))
        return self._threads.submit(fn, *args, **kwargs).result()

    def cut(self) -> None:
        """Pull the host's cable: nothing reaches it or leaves it, and nobody is told."""
        _ip("-n", self._switch, "link", "set", self._port, "down")

    def restore(self) -> None:
        _ip("-n", self._switch, "link", "set", self._port, "up")

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
        subprocess.run(["ip", "netns", "del", self.namespace], check=False, capture_output=True, timeout=30)


class Network:
    """A switch and the hosts plugged into it; a context manager that removes them all."""

    _counter = itertools.count(1)

    def __init__(self) -> None:
        self.prefix = f"pps{os.getpid()}-{next(self._counter)}-{threading.get_ident() % 1000}"
        self.switch = f"{self.prefix}-switch"
        self.hosts: dict[str, Host] = {}
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")

    def add(self, *names: str) -> list[Host]:
        """New hosts, numbered from .2 in the order added."""
        added = []
        for name in names:
            host = Host(self, name, len(self.hosts) + 2)
            self.hosts[name] = host
            added.append(host)
        return added

    def close(self) -> None:
        for host in self.hosts.values():
            host.close()
        subprocess.run(["ip", "netns", "del", self.switch], check=False, capture_output=True, timeout=30)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
