"""In-process network guard for the test suite.

``install_guard(allowed_networks)`` patches ``socket.socket.connect`` and
``connect_ex`` (plus ``sendto``/``sendmsg``, which can send UDP without a
connect) so that any attempt to reach an address outside loopback and the
given networks raises ``PermissionError`` *before* the kernel is asked to send
anything.  AF_UNIX, netlink and other non-IP families are always allowed.

Hostnames are never resolved by the guard (a DNS lookup would itself be
traffic): only ``localhost`` is accepted by name.  ``socket.getaddrinfo``/``gethostbyname``/``gethostbyname_ex`` are
patched the same way, so resolving any other name raises ``PermissionError``
instead of querying a DNS server.

This is a second line of defence; the first one is running the whole suite in
a network namespace that only has ``lo`` (see ``tests/run_in_lab.py``).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Callable, Iterable

_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}

_lock = threading.Lock()


class _SocketModule:
    """Marker: the attribute lives on the ``socket`` module itself."""


_installed: list["_Guard"] = []


class _Guard:
    def __init__(self, networks: Iterable[str | ipaddress._BaseNetwork]):
        nets = list(_LOOPBACK)
        for net in networks:
            nets.append(ipaddress.ip_network(net, strict=False))
        self.networks = tuple(nets)
        self.originals: list[tuple[type, str, object, object]] = []

    def allowed(self, family: int, address: object) -> bool:
        if family not in (socket.AF_INET, socket.AF_INET6):
            return True
        if not isinstance(address, tuple) or not address:
            return False
        host = address[0]
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        if not isinstance(host, str):
            return False
        host = host.split("%", 1)[0]  # drop an IPv6 scope id
        if host.lower() in _LOCAL_NAMES:
            return True
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False  # a name: never resolved here, refused
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)

    def check(self, sock: object, address: object) -> None:
        family = getattr(sock, "family", socket.AF_INET)
        if not self.allowed(family, address):
            raise PermissionError(f"blocked by test network guard: {address!r}")


def _wrap_connect(guard: _Guard, original):
    def connect(self, address, *args, **kwargs):
        guard.check(self, address)
        return original(self, address, *args, **kwargs)

    connect.__wrapped__ = original  # type: ignore[attr-defined]
    return connect


def _wrap_sendto(guard: _Guard, original):
    def sendto(self, data, *args):
        # sendto(data, address) or sendto(data, flags, address)
        if args:
            guard.check(self, args[-1])
        return original(self, data, *args)

    sendto.__wrapped__ = original  # type: ignore[attr-defined]
    return sendto


def _wrap_sendmsg(guard: _Guard, original):
    def sendmsg(self, buffers, ancdata=(), flags=0, address=None):
        if address is not None:
            guard.check(self, address)
            return original(self, buffers, ancdata, flags, address)
        return original(self, buffers, ancdata, flags)

    sendmsg.__wrapped__ = original  # type: ignore[attr-defined]
    return sendmsg


def _is_literal_or_local(host: object) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return True
    name = host.split("%", 1)[0].rstrip(".").lower()
    if not name or name in _LOCAL_NAMES:
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _wrap_resolver(original):
    def resolver(host, *args, **kwargs):
        if not _is_literal_or_local(host):
            raise PermissionError(f"blocked by test network guard: DNS lookup of {host!r}")
        return original(host, *args, **kwargs)

    resolver.__wrapped__ = original  # type: ignore[attr-defined]
    return resolver


def _socket_classes() -> list[type]:
    classes: list[type] = [socket.socket]
    # gevent's cooperative socket does not go through socket.socket.connect;
    # guard it too when gevent is present (Locust uses it).
    try:
        from gevent import _socket3  # type: ignore

        classes.append(_socket3.socket)
    except Exception:  # pragma: no cover - gevent missing or different layout
        pass
    return classes


def install_guard(allowed_networks: Iterable[str] = ()) -> Callable[[], None]:
    """Refuse connections outside loopback and ``allowed_networks``.

    Returns a function that removes exactly this guard again.
    """
    guard = _Guard(allowed_networks)
    wrappers = {"connect": _wrap_connect, "connect_ex": _wrap_connect,
                "sendto": _wrap_sendto, "sendmsg": _wrap_sendmsg}
    with _lock:
        for cls in _socket_classes():
            for name, wrap in wrappers.items():
                original = cls.__dict__.get(name)
                inherited = getattr(cls, name, None)
                if inherited is None:
                    continue
                wrapper = wrap(guard, inherited)
                guard.originals.append((cls, name, original, wrapper))
                setattr(cls, name, wrapper)
        # resolvers live on the socket module (IP literals and localhost pass
        # straight through; they never touch the network)
        for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex"):
            original = getattr(socket, name)
            wrapper = _wrap_resolver(original)
            guard.originals.append((_SocketModule, name, original, wrapper))
            setattr(socket, name, wrapper)
        _installed.append(guard)

    done = False

    def uninstall() -> None:
        nonlocal done
        with _lock:
            if done:
                return
            done = True
            # Only restore attributes that still hold *our* wrapper: if another
            # guard was installed on top, leave it (and ours below it) alone.
            for cls, name, original, wrapper in reversed(guard.originals):
                if cls is _SocketModule:
                    if getattr(socket, name) is wrapper:
                        setattr(socket, name, original)
                    continue
                if cls.__dict__.get(name) is not wrapper:
                    continue
                if original is None:
                    try:
                        delattr(cls, name)
                    except AttributeError:
                        pass
                else:
                    setattr(cls, name, original)
            if guard in _installed:
                _installed.remove(guard)

    return uninstall
