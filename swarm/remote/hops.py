"""Opening an SSH connection along a Route: every hop pinned, every step bounded.

A jump host's connection is shared by every node behind it (one login to the bastion for
thirty workers, not thirty) and lives until this process exits. Each hop's host key is
checked against the stack's known_hosts before anything is sent to it, the jump hosts' as
the node's: a swapped key behind a bastion is refused as one in front of it.
"""

from __future__ import annotations

import errno
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from swarm.errors import SSH_AUTH, SSH_HOST_KEY, SSH_UNREACHABLE, RemoteError
from swarm.remote import known_hosts
from swarm.remote.base import Hop, Route

# A host gone silent (powered off, its network cut) sends no FIN or RST: a keepalive every
# KEEPALIVE_S goes unacknowledged, and the kernel drops the connection USER_TIMEOUT_S later
# (TCP_USER_TIMEOUT), so a stream, a tunnel or a reused connection ends instead of hanging
# for TCP's ~15 minutes of retransmissions (as ssh's ServerAliveInterval does).
KEEPALIVE_S = 5
USER_TIMEOUT_S = 15

# sshd drops unauthenticated connections beyond MaxStartups (default 10:30:100: from 10 at
# once, 30% of new ones, rising): a hundred logins started together lose some with "Error
# reading SSH protocol banner". So at most LOGINS_AT_ONCE logins (TCP or channel, banner,
# key exchange, auth: what sshd counts) are in progress per sshd; the commands after them
# are not limited. An sshd that drops one anyway (a lower MaxStartups) halves its own limit,
# which grows back by one per login that succeeds, and the dropped login is tried again,
# LOGIN_TRIES in all, after a short jittered pause.
LOGINS_AT_ONCE = 8
LOGIN_TRIES = 5
RETRY_PAUSE_S = 0.3  # doubled each try, times 0.5-1.5 so dropped logins do not return together
SLOT_WAIT_S = 120.0  # longest wait for a login slot (each holder is bounded by its timeouts)


@dataclass(frozen=True)
class Timeouts:
    connect: float  # TCP (or a jump host's channel to the next hop)
    banner: float
    auth: float


class PinOnFirstContact(paramiko.MissingHostKeyPolicy):
    """Unknown host: record its key. (A known host with another key never gets here:
    paramiko raises BadHostKeyException.)"""

    def __init__(self, path: Path):
        self.path = path

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        with known_hosts.LOCK:
            known = known_hosts.lookup(self.path, hostname)
            if known and key.get_name() not in known:
                # Known host offering a key of another type: treat it as a changed key.
                raise paramiko.BadHostKeyException(hostname, key, next(iter(known.values())))
            # One line appended, not the file rewritten: N new hosts cost N lines, not N^2.
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(self.path, "a", encoding="ascii") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class NotAnswering(RemoteError):
    """No SSH session could be set up (refused, timed out, no banner, dropped): maybe not yet."""

    def __init__(self, message: str, reason: str, *, dropped: bool = False):
        super().__init__(message, code=SSH_UNREACHABLE)
        self.reason = reason
        self.dropped = dropped  # closed before the login was done: worth another try


def why_not(e: BaseException) -> str:
    """A connect failure in words: paramiko's "[Errno None] Unable to connect to port 22"
    hides the socket's own reason (a booting instance refuses) in `errors`."""
    if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError) and e.errors:
        reasons = sorted({(getattr(x, "strerror", None) or str(x)) for x in e.errors.values()})
        return "; ".join(r[0].lower() + r[1:] if r else r for r in reasons)
    if isinstance(e, paramiko.ChannelException):  # the jump host could not reach the next
        return f"{e.text or 'channel refused'} (from the jump host)"
    return str(e) or type(e).__name__


def expand(command: str, hop: Hop) -> str:
    """OpenSSH's %h, %p, %r and %% in a ProxyCommand."""
    out, i = [], 0
    while i < len(command):
        c = command[i]
        if c == "%" and i + 1 < len(command):
            token = command[i + 1]
            out.append(
                {"h": hop.host, "p": str(hop.port), "r": hop.user, "%": "%"}.get(token, c + token)
            )
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _client(known: Path | None, hop: Hop) -> paramiko.SSHClient:
    # paramiko's own client, the stack's pin set before anything connects. (fabric's
    # Connection would wrap the same client with AutoAddPolicy, and re-read the ssh_config
    # files for every connection: sshconfig.py reads them once. Its run() is not used: its
    # runner threads cost more per command than swarm's own channels, docs/design.md.)
    client = paramiko.SSHClient()
    if known is not None:
        pins = client.get_host_keys()
        for name, kind, key in known_hosts.pinned(known, hop.host, hop.port):
            pins.add(name, kind, key)
        client.set_missing_host_key_policy(PinOnFirstContact(known))
    else:
        client.load_system_host_keys()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def _name(hop: Hop) -> str:
    return f"{hop.user}@{hop.host}" + (f":{hop.port}" if hop.port != 22 else "")


def connect(
    hop: Hop,
    route: Route,
    known: Path | None,
    t: Timeouts,
    label: str,
    *,
    own_keys: bool = False,
) -> paramiko.SSHClient:
    """A client logged in to `hop` along `route`. `own_keys`: only hop.key_files (a key swarm
    made for the stack), never the agent's or ~/.ssh's."""
    gate = _gate(hop, route)
    for attempt in range(1, LOGIN_TRIES + 1):
        # The jump host first, outside the slot: its own login takes a slot of its sshd.
        gateway = _gateway(route.jumps, known, t) if route.jumps else None
        try:
            with gate.slot(label) as slot:
                sock = _open(hop, route, gateway, known, t, label)
                client = _login(hop, sock, known, t, label, own_keys=own_keys)
                slot.succeeded()
                return client
        except NotAnswering as e:
            if not e.dropped or attempt == LOGIN_TRIES:
                raise
        time.sleep(RETRY_PAUSE_S * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable: the last try returns or raises")


def _open(
    hop: Hop,
    route: Route,
    gateway: paramiko.SSHClient | None,
    known: Path | None,
    t: Timeouts,
    label: str,
) -> Any:
    """The socket the login goes over: a jump host's channel, a proxy command, or None
    (paramiko connects TCP itself)."""
    if gateway is not None:
        try:
            return gateway.get_transport().open_channel(
                "direct-tcpip", (hop.host, hop.port), ("", 0), timeout=t.connect
            )
        except (paramiko.SSHException, OSError, EOFError) as e:
            if not gateway.get_transport() or not gateway.get_transport().is_active():
                _forget_gateway(route.jumps, known)
            reason = why_not(e)
            raise NotAnswering(
                f"{label} ({hop.host}:{hop.port} via {_name(route.jumps[-1])}): SSH connection "
                f"failed: {reason}",
                reason,
            ) from e
    if route.proxy_command is not None:
        try:
            return paramiko.ProxyCommand(expand(route.proxy_command, hop))
        except (paramiko.SSHException, OSError) as e:
            raise RemoteError(
                f"{label}: proxy command failed to start: {e}", code=SSH_UNREACHABLE
            ) from e
    return None


def _tcp(hop: Hop, timeout: float) -> socket.socket:
    """The TCP connection paramiko's connect would open (each address of the name in turn, a
    refusal raised as paramiko raises it), with TCP_NODELAY set before the login: without it,
    each SSH message sent right behind another waits for the server's delayed ACK, 40 ms on
    Linux, a few times a login and once an exec (an exec took 59 ms, 16 ms with it)."""
    errors: dict[tuple[Any, ...], Exception] = {}
    for family, kind, proto, _, addr in socket.getaddrinfo(
        hop.host, hop.port, socket.AF_UNSPEC, socket.SOCK_STREAM
    ):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect(addr)
            return sock
        except OSError as e:
            sock.close()
            if e.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
                raise
            errors[addr] = e
    raise paramiko.ssh_exception.NoValidConnectionsError(errors)


def _login(
    hop: Hop, sock: Any, known: Path | None, t: Timeouts, label: str, *, own_keys: bool
) -> paramiko.SSHClient:
    client = _client(known, hop)
    kw: dict[str, Any] = dict(
        hostname=hop.host,
        port=hop.port,
        username=hop.user,
        timeout=t.connect,
        banner_timeout=t.banner,
        auth_timeout=t.auth,
        sock=sock,
    )
    if hop.key_files:
        kw["key_filename"] = [str(k) for k in hop.key_files]
    if own_keys:
        kw.update(look_for_keys=False, allow_agent=False)
    try:
        if sock is None:
            kw["sock"] = _tcp(hop, t.connect)
        client.connect(**kw)
    except paramiko.BadHostKeyException as e:
        client.close()
        action = f"if the machine was really replaced, delete its line in {known}"
        raise RemoteError(
            f"{label} ({hop.host}): host key changed since first contact; refusing to "
            f"connect. If the machine was really replaced, delete its line in {known}",
            code=SSH_HOST_KEY,
            action=action,
        ) from e
    except paramiko.AuthenticationException as e:
        client.close()
        raise RemoteError(
            f"{label} ({hop.user}@{hop.host}): SSH authentication failed ({e}): check the "
            "key and ssh_user",
            code=SSH_AUTH,
            action="check the key and ssh_user",
        ) from e
    except (OSError, paramiko.SSHException, EOFError) as e:
        client.close()
        reason = why_not(e)
        raise NotAnswering(
            f"{label} ({hop.host}:{hop.port}): SSH connection failed: {reason}",
            reason,
            dropped=dropped(e),
        ) from e
    transport = client.get_transport()
    assert transport is not None  # connect() succeeded
    transport.set_keepalive(KEEPALIVE_S)
    if isinstance(transport.sock, socket.socket) and hasattr(socket, "TCP_USER_TIMEOUT"):
        transport.sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_S * 1000
        )
    return client


# ---- logins bounded per sshd ----


def dropped(e: BaseException) -> bool:
    """sshd closed the connection during the login (past MaxStartups: before its banner), or
    a proxy command's own login to the bastion was dropped so (it exits, its pipe breaks, the
    session is gone): worth another try, unlike a refusal, a timeout or a wrong key."""
    if isinstance(e, (EOFError, ConnectionResetError, paramiko.ProxyCommandFailure)):
        return True
    text = str(e)
    return any(s in text for s in ("protocol banner", "No existing session", "reset by peer"))


class Gate:
    """Logins in progress at one sshd: at most `limit`, halved when the sshd drops one."""

    def __init__(self, limit: int = LOGINS_AT_ONCE):
        self.ceiling = self.limit = limit
        self.busy = 0
        self._cond = threading.Condition()

    @contextmanager
    def slot(self, label: str) -> Iterator[Slot]:
        deadline = time.monotonic() + SLOT_WAIT_S
        with self._cond:
            while self.busy >= self.limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NotAnswering(
                        f"{label}: no login slot in {SLOT_WAIT_S:g}s ({self.busy} logins in "
                        "progress at its sshd)",
                        "too many logins in progress",
                    )
                self._cond.wait(left)
            self.busy += 1
        slot = Slot()
        try:
            yield slot
        except NotAnswering as e:
            slot.was_dropped = e.dropped
            raise
        finally:
            with self._cond:
                self.busy -= 1
                if slot.ok:
                    self.limit = min(self.ceiling, self.limit + 1)
                elif slot.was_dropped:
                    self.limit = max(1, self.limit // 2)
                self._cond.notify_all()


@dataclass
class Slot:
    ok: bool = False
    was_dropped: bool = False

    def succeeded(self) -> None:
        self.ok = True


# One gate per sshd that sees the logins: the node's own (direct, or reached through the jump
# hosts: the same address behind two bastions is two machines), or, for a proxy command, the
# one it logs in to (one per command: %h and %p unexpanded).
_GATES: dict[tuple[object, ...], Gate] = {}
_GATES_LOCK = threading.Lock()


def _gate(hop: Hop, route: Route) -> Gate:
    key: tuple[object, ...] = (
        ("proxy", route.proxy_command)
        if route.proxy_command is not None
        else (route.jumps, hop.host, hop.port)
    )
    with _GATES_LOCK:
        return _GATES.setdefault(key, Gate())


# ---- jump hosts, shared ----

_GATEWAYS: dict[tuple[Path | None, tuple[Hop, ...]], paramiko.SSHClient] = {}
_GATEWAYS_LOCK = threading.RLock()  # a chain opens the hops before it, nested


def _gateway(jumps: tuple[Hop, ...], known: Path | None, t: Timeouts) -> paramiko.SSHClient:
    """The logged-in client of the last jump host, each one before it opened first."""
    with _GATEWAYS_LOCK:
        held = _GATEWAYS.get((known, jumps))
        live = held.get_transport() if held is not None else None
        if held is not None and live is not None and live.is_active():
            return held
        *before, last = jumps
        label = f"jump host {_name(last)}"
        client = connect(last, Route(jumps=tuple(before)), known, t, label)
        _GATEWAYS[(known, jumps)] = client
        return client


def _forget_gateway(jumps: tuple[Hop, ...], known: Path | None) -> None:
    with _GATEWAYS_LOCK:
        _GATEWAYS.pop((known, jumps), None)
