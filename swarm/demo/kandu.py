"""The Kandu-like JSON API the demo target serves: its state and its request handler.

Standard library only (its WebSocket endpoints, in `ws`, use wsproto). Every answered
request is counted by route (the server's `count`) before its response is written, so a
caller comparing totals with Locust's never races.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from swarm.demo import ws

# Enough work to make signups the expensive endpoint (a few ms each) without
# letting a handful of Locust users saturate a 2-core box.
PBKDF2_ITERATIONS = 20_000
ASSET_SIZE = 4096
SEED_KANDUS = 5
MAX_BODY = 1 << 20
ADMIN_DELAY = "/admin/delay"
# the test's own calls: never delayed, never counted with the load's
UNCOUNTED = ("GET /stats", f"POST {ADMIN_DELAY}")

Reply = tuple[int, Any]  # (status, JSON-able body or bytes)
Endpoint = Callable[[str | None, bytes], Reply]  # (path argument, raw body) -> reply


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class State:
    """Everything the handlers share; every access goes through `lock`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.secret = os.urandom(16)
        self.counts: dict[str, int] = {}
        # HTTP requests answered per client address (one per host: which worker sent what)
        self.clients: dict[str, int] = {}
        self.users: dict[str, int] = {}  # username -> user_id
        self.tokens: dict[str, int] = {}  # token -> user_id
        self.kandus: dict[int, dict] = {}
        self.next_kandu_id = 1
        # added to every response (POST /admin/delay): a target made slower on purpose, for
        # the baseline tests (`p95<+10%` must catch it)
        self.delay_ms = 0.0
        for n in range(1, SEED_KANDUS + 1):
            self.add_kandu(f"Seed kandu {n}", [{"type": "sprite", "n": n}], None)

    def add_kandu(self, title: str, blocks: list, owner: int | None) -> int:
        kandu_id = self.next_kandu_id
        self.next_kandu_id += 1
        self.kandus[kandu_id] = {
            "id": kandu_id,
            "title": title,
            "blocks": blocks,
            "owner": owner,
            "plays": 0,
            "flags": 0,
        }
        return kandu_id


@functools.lru_cache(maxsize=256)
def _asset_bytes(name: str) -> bytes:
    # Derived from the name so every fetch of an asset returns identical bytes.
    seed = name.encode()
    chunks = (hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(ASSET_SIZE // 32))
    return b"".join(chunks)


class Server(Protocol):
    """What the handler needs of the server that runs it (target._Server)."""

    state: State
    rooms: ws.Rooms

    def track(self, conn: socket.socket, alive: bool) -> None: ...
    def count(self, route: str, client: str = "") -> None: ...
    def counts_copy(self) -> dict[str, int]: ...
    def clients_copy(self) -> dict[str, int]: ...


class KanduHandler(BaseHTTPRequestHandler):
    # Keep-alive matters: Locust reuses connections and the request rate
    # would collapse if every request paid for a new TCP handshake.
    protocol_version = "HTTP/1.1"
    # The base class says BaseServer; this handler only ever runs in a target._Server.
    server: Server  # type: ignore[assignment]
    server_version = "KanduTarget/1.0"
    # Idle keep-alive connections are dropped eventually so their threads go away.
    timeout = 60
    # Headers and body go out in separate writes; with Nagle on, the body
    # waits for the client's delayed ACK and adds ~40 ms to every response.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature fixed by the base class
        pass

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        ep = ws.endpoint_of(path)
        if ep is not None and ws.wants_upgrade(self.headers.items()):
            # The connection is the WebSocket's from here on, never again HTTP.
            self.close_connection = True
            ws.serve(
                self.connection,
                self.rfile,
                self._raw_request(),
                ep,
                self.server.rooms,
                self.server.count,
            )
            return
        self._dispatch()

    def _raw_request(self) -> bytes:
        # The request as it came (http.server has parsed it already), for wsproto to check.
        head = [self.requestline, *(f"{k}: {v}" for k, v in self.headers.items())]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        route, handler, arg = self._route(path)
        try:
            # Read the body even for unknown routes so a keep-alive connection
            # never has stray bytes left over for the next request.
            raw = self._read_body()
            if handler is None:
                raise HttpError(404, f"no route for {self.command} {path}")
            status, body = handler(arg, raw)
        except HttpError as err:
            status, body = err.status, {"error": err.message}
        except Exception as err:  # a bug here must not kill the connection silently
            status, body = 500, {"error": f"internal error: {err.__class__.__name__}"}
        self._respond(route, status, body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise HttpError(411, "chunked bodies are not supported; send Content-Length")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise HttpError(400, "bad Content-Length") from None
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            raise HttpError(413 if length > 0 else 400, "bad body length")
        return self.rfile.read(length) if length else b""

    def _route(self, path: str) -> tuple[str, Endpoint | None, str | None]:
        method = self.command
        if method == "GET":
            if path == "/health":
                return "GET /health", self._health, None
            if path == "/stats":
                return "GET /stats", self._stats, None
            if path == "/stats/clients":
                return "GET /stats", self._client_stats, None
            if path.startswith("/kandus/"):
                return "GET /kandus/{id}", self._get_kandu, path[len("/kandus/") :]
            if path.startswith("/assets/"):
                return "GET /assets/{name}", self._get_asset, path[len("/assets/") :]
            if ws.endpoint_of(path) is not None:
                return "GET /ws/*", self._upgrade_required, None
        elif method == "POST":
            posts = {
                "/meta/register": self._register,
                "/kandus": self._save_kandu,
                "/plays": self._play,
                "/flags": self._flag,
                ADMIN_DELAY: self._set_delay,
            }
            if path in posts:
                return f"POST {path}", posts[path], None
        # One shared key keeps counts() small whatever junk clients send.
        return f"{method} <unknown>", None, None

    def _respond(self, route: str, status: int, body: Any) -> None:
        if isinstance(body, bytes):
            payload, ctype = body, "application/octet-stream"
        else:
            payload, ctype = json.dumps(body).encode(), "application/json"
        if route not in UNCOUNTED:
            with self.state.lock:
                delay = self.state.delay_ms
            if delay:
                time.sleep(delay / 1000)
            # Count before writing: once the client has its response the request
            # must already show up in counts(), or a caller comparing totals races.
            self.server.count(route, str(self.client_address[0]))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    # -- endpoint handlers: (arg, raw body) -> (status, body) ---------------

    @property
    def state(self) -> State:
        return self.server.state

    def _json(self, raw: bytes) -> dict[str, Any]:
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            raise HttpError(400, "body is not valid JSON") from None
        if not isinstance(data, dict):
            raise HttpError(400, "body must be a JSON object")
        return data

    @staticmethod
    def _field(data: dict[str, Any], name: str, kind: type) -> Any:
        value = data.get(name)
        # bool is an int subclass; a kandu id of `true` is still a client bug.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise HttpError(400, f"missing or invalid field {name!r}")
        return value

    def _bearer_user(self) -> int | None:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        with self.state.lock:
            return self.state.tokens.get(auth[len("Bearer ") :].strip())

    def _upgrade_required(self, _arg: str | None, _raw: bytes) -> Reply:
        raise HttpError(426, "a WebSocket endpoint: send an Upgrade: websocket request")

    def _health(self, _arg: str | None, _raw: bytes) -> Reply:
        return 200, {"ok": True}

    def _stats(self, _arg: str | None, _raw: bytes) -> Reply:
        return 200, self.server.counts_copy()

    def _client_stats(self, _arg: str | None, _raw: bytes) -> Reply:
        return 200, self.server.clients_copy()

    def _register(self, _arg: str | None, raw: bytes) -> Reply:
        data = self._json(raw)
        username = self._field(data, "username", str)
        password = self._field(data, "password", str)
        if not username or not password:
            raise HttpError(400, "username and password must be non-empty")
        # Hash outside the lock: it is the slow part and hashlib releases the GIL.
        salt = self.state.secret + username.encode()
        token = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ITERATIONS).hex()
        with self.state.lock:
            user_id = self.state.users.setdefault(username, len(self.state.users) + 1)
            self.state.tokens[token] = user_id
        return 201, {"user_id": user_id, "token": token}

    def _save_kandu(self, _arg: str | None, raw: bytes) -> Reply:
        data = self._json(raw)
        title = self._field(data, "title", str)
        blocks = data.get("blocks", [])
        if not isinstance(blocks, list):
            raise HttpError(400, "missing or invalid field 'blocks'")
        owner = self._bearer_user()
        with self.state.lock:
            kandu_id = self.state.add_kandu(title, blocks, owner)
        return 201, {"id": kandu_id}

    def _get_kandu(self, arg: str | None, _raw: bytes) -> Reply:
        if not arg or not arg.isdigit():
            raise HttpError(404, "no such kandu")
        with self.state.lock:
            kandu = self.state.kandus.get(int(arg))
            body = dict(kandu) if kandu else None
        if body is None:
            raise HttpError(404, "no such kandu")
        return 200, body

    def _play(self, _arg: str | None, raw: bytes) -> Reply:
        kandu_id = self._field(self._json(raw), "kandu_id", int)
        with self.state.lock:
            kandu = self.state.kandus.get(kandu_id)
            if kandu is None:
                raise HttpError(404, "no such kandu")
            kandu["plays"] += 1
            plays = kandu["plays"]
        return 201, {"plays": plays}

    def _flag(self, _arg: str | None, raw: bytes) -> Reply:
        data = self._json(raw)
        kandu_id = self._field(data, "kandu_id", int)
        self._field(data, "reason", str)
        with self.state.lock:
            kandu = self.state.kandus.get(kandu_id)
            if kandu is None:
                raise HttpError(404, "no such kandu")
            kandu["flags"] += 1
        return 201, {"flagged": True}

    def _set_delay(self, _arg: str | None, raw: bytes) -> Reply:
        ms = self._json(raw).get("ms")
        if not isinstance(ms, (int, float)) or isinstance(ms, bool) or not 0 <= ms <= 60_000:
            raise HttpError(400, 'send {"ms": N}, 0 to 60000')
        with self.state.lock:
            self.state.delay_ms = float(ms)
        return 200, {"delay_ms": float(ms)}

    def _get_asset(self, arg: str | None, _raw: bytes) -> Reply:
        name = unquote(arg or "")
        if not name or "/" in name or ".." in name:
            raise HttpError(404, "no such asset")
        return 200, _asset_bytes(name)
