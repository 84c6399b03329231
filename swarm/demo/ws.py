"""The demo target's WebSocket endpoints, on the same port as its HTTP API.

`/ws/echo` sends every message back to its sender; `/ws/room/NAME` sends every message to
everyone in room NAME, the sender included (so a sender times its own round trip the way it
would in a chat room). The HTTP handler has already read the Upgrade request; wsproto
(python-hyper) checks the handshake and does all the framing, so no frame is built here.

What the target saw is counted with the HTTP routes, under names starting with `WS `:
`WS open <endpoint>` (handshakes accepted), `WS recv <endpoint>` (messages received) and
`WS sent <endpoint>` (copies sent: an echo, or one per member of the room at the time of a
broadcast). Each is counted before the bytes go out (a whole broadcast before its first
copy), so a client never sees something the counts do not hold yet.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

WS_PREFIX = "WS "  # counts under this prefix are WebSocket figures, not HTTP requests
ECHO = "/ws/echo"
ROOM = "/ws/room/{name}"
# A room member may sit quietly for long (it has sent all its messages): longer than the
# HTTP keep-alive timeout, still bounded so a vanished client's thread ends.
IDLE_TIMEOUT = 300.0
MAX_MESSAGE = 1 << 20
CLOSE_TOO_BIG = 1009

Count = Callable[[str], None]


@dataclass(frozen=True)
class Endpoint:
    template: str  # ECHO or ROOM: the name counts are kept under
    room: str | None  # the room's name for ROOM


def endpoint_of(path: str) -> Endpoint | None:
    """The WebSocket endpoint a request path names, or None (then it is a 404)."""
    if path == ECHO:
        return Endpoint(ECHO, None)
    prefix = ROOM.split("{", 1)[0]
    name = path[len(prefix) :] if path.startswith(prefix) else ""
    if name and "/" not in name:
        return Endpoint(ROOM, name)
    return None


def wants_upgrade(headers: Iterable[tuple[str, str]]) -> bool:
    return any(k.lower() == "upgrade" and v.strip().lower() == "websocket" for k, v in headers)


class Peer:
    """One client's connection. Other clients' threads send to it (broadcasts), so every use
    of its wsproto state goes through `lock`."""

    def __init__(self, sock: socket.socket, conn: WSConnection):
        self.sock = sock
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, event: Event) -> bool:
        with self.lock:
            if self.conn.state is not ConnectionState.OPEN and not isinstance(
                event, (AcceptConnection, RejectConnection)
            ):
                return False
            data = self.conn.send(event)
            try:
                self.sock.sendall(data)
            except OSError:
                return False
        return True

    def feed(self, data: bytes | None) -> list[Event]:
        with self.lock:
            self.conn.receive_data(data)
            return list(self.conn.events())


class Rooms:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: dict[str, set[Peer]] = {}

    def join(self, room: str, peer: Peer) -> None:
        with self._lock:
            self._members.setdefault(room, set()).add(peer)

    def leave(self, room: str, peer: Peer) -> None:
        with self._lock:
            members = self._members.get(room, set())
            members.discard(peer)
            if not members:
                self._members.pop(room, None)

    def members(self, room: str) -> list[Peer]:
        with self._lock:
            return list(self._members.get(room, ()))


def serve(
    sock: socket.socket,
    rfile: io.BufferedIOBase,
    request: bytes,
    ep: Endpoint,
    rooms: Rooms,
    count: Count,
) -> None:
    """Complete the handshake of `request` (the Upgrade request's bytes, as received), then
    serve the connection until either side closes it."""
    peer = Peer(sock, WSConnection(ConnectionType.SERVER))
    try:
        events = peer.feed(request)
    except RemoteProtocolError as err:  # not a valid WebSocket handshake: wsproto's 400
        if err.event_hint is not None:
            peer.send(err.event_hint)
        return
    if not any(isinstance(e, Request) for e in events):
        return
    sock.settimeout(IDLE_TIMEOUT)
    if ep.room is not None:
        rooms.join(ep.room, peer)
    try:
        count(f"{WS_PREFIX}open {ep.template}")
        if peer.send(AcceptConnection()):
            _receive(peer, rfile, ep, rooms, count)
    finally:
        if ep.room is not None:
            rooms.leave(ep.room, peer)


def _receive(
    peer: Peer, rfile: io.BufferedIOBase, ep: Endpoint, rooms: Rooms, count: Count
) -> None:
    texts: list[str] = []  # a message's fragments so far
    blobs: list[bytes] = []
    size = 0
    while True:
        try:
            data = rfile.read1(65536)
        except OSError:  # the idle timeout, a reset, or stop() shutting the socket down
            return
        try:
            events = peer.feed(data or None)
        except RemoteProtocolError:
            return
        if not data and not events:
            return
        for event in events:
            if isinstance(event, CloseConnection):
                peer.send(event.response())
                return
            if isinstance(event, Ping):
                peer.send(event.response())
            elif isinstance(event, Message):
                if isinstance(event, TextMessage):
                    texts.append(event.data)
                else:
                    blobs.append(event.data)
                size += len(event.data)
                if size > MAX_MESSAGE:
                    peer.send(CloseConnection(CLOSE_TOO_BIG, "message too big"))
                    return
                if event.message_finished:
                    whole = "".join(texts) if isinstance(event, TextMessage) else b"".join(blobs)
                    texts, blobs, size = [], [], 0
                    _deliver(peer, whole, ep, rooms, count)
        if not data:
            return


def _deliver(peer: Peer, data: str | bytes, ep: Endpoint, rooms: Rooms, count: Count) -> None:
    count(f"{WS_PREFIX}recv {ep.template}")
    targets = [peer] if ep.room is None else rooms.members(ep.room)
    for _ in targets:  # the whole broadcast, before any member can have its copy
        count(f"{WS_PREFIX}sent {ep.template}")
    for member in targets:
        member.send(TextMessage(data) if isinstance(data, str) else BytesMessage(data))
