"""A WebSocket user for Locust: connect, send, receive and close, each reported as its own
Locust stats name (request type "WS"):

- `WS connect`: the handshake, from opening the TCP connection to the server's 101.
- `WS rtt`: `rtt()` sends {"id": ..., "t0": ...} and times until the message with that id
  comes back (an echo, or a room's broadcast of it). Timed on this client's clock only: the
  t0 in the message is for the reader of a capture, never subtracted from another clock.
  No echo within `ws_timeout` is a failure ("no echo within 5 s").
- `WS recv`: a server push (any message that is not one of ours), counted with its length;
  its response time is 0, since a push answers no request of this client.
- `WS close`: only as a failure, when the server closes with an abnormal code (not 1000 or
  1001) or the connection drops without a close frame.

Built on websocket-client, which Locust's own dependencies install on every node (locust ->
python-socketio[client] -> websocket-client): nothing to add to bootstrap, no framing here.
Locust monkey-patches sockets for gevent, so every blocking call yields to the other users;
the receive loop is a greenlet of its own.

Imported as a plain neighbour module (`from ws_user import WebSocketUser`), like common.py.
"""

import itertools
import json
import time
import uuid

import gevent
import websocket
from gevent.event import AsyncResult
from locust import User

CONNECT = "WS connect"
RTT = "WS rtt"
RECV = "WS recv"
CLOSE = "WS close"
NORMAL_CLOSES = (1000, 1001)  # a normal closure, and "going away" (a server stopping)


class WebSocketClosed(Exception):
    """The connection ended abnormally: a close code other than 1000/1001, or none."""


class EchoTimeout(Exception):
    pass


class WebSocketUser(User):
    """Subclass it, and call `connect(path)` and `rtt()` from tasks. `on_push(message)` is
    called for every server push (a parsed JSON value, or the raw text/bytes)."""

    abstract = True
    ws_timeout = 5.0  # seconds for a handshake, and for an echo to come back

    def __init__(self, environment):
        super().__init__(environment)
        self.ws = None
        self._reader = None
        self._pending = {}  # message id -> AsyncResult of the echo's length
        # Ids unique across every client of every worker: ours are recognised by the tag.
        self._tag = uuid.uuid4().hex[:12]
        self._seq = itertools.count(1)

    @property
    def connected(self):
        return self.ws is not None and self.ws.connected

    def ws_url(self, path):
        base = (self.host or "").rstrip("/")
        if base.startswith(("http://", "https://")):
            base = "ws" + base[len("http") :]
        return base + path

    def connect(self, path):
        """Open a WebSocket to the host's `path`; True when the handshake succeeded."""
        self.close()
        t0 = time.perf_counter()
        try:
            ws = websocket.create_connection(self.ws_url(path), timeout=self.ws_timeout)
        except Exception as exc:  # refused, reset, timed out, a non-101 answer
            self._fire(CONNECT, t0, 0, exc)
            return False
        self._fire(CONNECT, t0, 0, None)
        ws.settimeout(None)  # the reader waits for as long as the server is quiet
        self.ws = ws
        self._reader = gevent.spawn(self._read_loop, ws)
        return True

    def rtt(self, **extra):
        """Send {"id", "t0", **extra} and wait for it to come back; True if it did in time."""
        if not self.connected:
            return False
        msg_id = f"{self._tag}-{next(self._seq)}"
        body = json.dumps({"id": msg_id, "t0": time.time(), **extra})
        waiter = AsyncResult()
        self._pending[msg_id] = waiter
        t0 = time.perf_counter()
        length, exc = 0, None
        try:
            self.ws.send(body)
            length = waiter.get(timeout=self.ws_timeout)
        except gevent.Timeout:
            exc = EchoTimeout(f"no echo within {self.ws_timeout:g} s")
        except Exception as err:  # the connection broke under the send or the wait
            exc = err
        finally:
            self._pending.pop(msg_id, None)
        self._fire(RTT, t0, length, exc)
        return exc is None

    def send(self, data):
        """Send text or bytes without waiting for anything (not reported)."""
        if isinstance(data, bytes):
            self.ws.send_binary(data)
        else:
            self.ws.send(data)

    def on_push(self, message):
        pass

    def close(self):
        ws, reader = self.ws, self._reader
        self.ws = self._reader = None
        if reader is not None:
            # websocket-client's close() reads the server's close reply itself: no second
            # reader may be on the socket then.
            reader.kill(block=True, timeout=self.ws_timeout)
        if ws is not None:
            try:
                ws.close(timeout=self.ws_timeout)
            except Exception:
                pass
        self._fail_pending(WebSocketClosed("closed by the client"))

    def on_stop(self):
        self.close()

    # -- the receive loop: one greenlet per connection ---------------------------------

    def _read_loop(self, ws):
        try:
            while True:
                opcode, data = ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    self._closed_by_server(ws, data)
                    ws.shutdown()
                    return
                self._received(data)
        except Exception as exc:  # dropped without a close frame, reset, a protocol error
            if self.ws is ws:  # not a close of our own
                self._fire(CLOSE, None, 0, WebSocketClosed(f"connection lost: {exc!r}"))
                self._fail_pending(WebSocketClosed("connection lost"))
                self.ws = None
                ws.shutdown()

    def _closed_by_server(self, ws, data):
        code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
        if self.ws is not ws:
            return
        if code not in NORMAL_CLOSES:
            reason = data[2:].decode("utf-8", "replace")
            self._fire(CLOSE, None, 0, WebSocketClosed(f"closed by the server: {code} {reason}"))
        self._fail_pending(WebSocketClosed(f"closed by the server ({code})"))
        self.ws = None

    def _received(self, data):
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        try:
            message = json.loads(text)
        except ValueError:
            message = data
        msg_id = message.get("id") if isinstance(message, dict) else None
        if isinstance(msg_id, str) and msg_id.startswith(self._tag + "-"):
            waiter = self._pending.get(msg_id)
            if waiter is not None:  # else an echo that came after its timeout: counted then
                waiter.set(len(data))
            return
        self._fire(RECV, None, len(data), None)
        self.on_push(message)

    def _fail_pending(self, exc):
        for waiter in list(self._pending.values()):
            waiter.set_exception(exc)

    def _fire(self, name, t0, length, exc):
        elapsed = (time.perf_counter() - t0) * 1000.0 if t0 is not None else 0.0
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=elapsed,
            response_length=length,
            exception=exc,
            context={},
        )
