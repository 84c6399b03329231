"""The demo target's WebSocket endpoints, driven with a real client (websocket-client, the one
Locust installs): /ws/echo and /ws/room/NAME on the HTTP port, and what the target counts."""

import json
import socket
import time
import urllib.error
import urllib.request

import pytest
import websocket

from swarm.demo import target

TIMEOUT = 5


@pytest.fixture
def server():
    srv = target.start("127.0.0.1", 0)
    yield srv
    srv.stop()


def connect(srv, path):
    return websocket.create_connection(srv.url.replace("http://", "ws://") + path,
                                       timeout=TIMEOUT)


def stats(srv):
    with urllib.request.urlopen(srv.url + "/stats", timeout=TIMEOUT) as resp:
        return json.loads(resp.read())


def test_echo_sends_each_message_back_and_counts_it(server):
    ws = connect(server, "/ws/echo")
    try:
        for n in range(3):
            ws.send(json.dumps({"id": n}))
            assert json.loads(ws.recv()) == {"id": n}
        ws.send_binary(b"\x00\xffraw")
        assert ws.recv() == b"\x00\xffraw"
        big = "x" * 200_000  # several frames and reads on the server's side
        ws.send(big)
        assert ws.recv() == big
    finally:
        ws.close()
    counts = stats(server)
    assert counts["WS open /ws/echo"] == 1
    assert counts["WS recv /ws/echo"] == counts["WS sent /ws/echo"] == 5
    # WebSocket figures are not HTTP requests: the HTTP total still counts only those
    assert server.total() == 0


def test_a_room_broadcasts_to_everyone_in_it_and_no_one_else(server):
    alice, bob = connect(server, "/ws/room/kitchen"), connect(server, "/ws/room/kitchen")
    other = connect(server, "/ws/room/garden")
    try:
        alice.send("hello")
        assert alice.recv() == "hello" and bob.recv() == "hello"  # the sender too
        bob.send("hi")
        assert alice.recv() == "hi" and bob.recv() == "hi"
        other.send("alone")
        assert other.recv() == "alone"
        other.settimeout(0.3)
        with pytest.raises(websocket.WebSocketTimeoutException):
            other.recv()  # nothing of the kitchen's
    finally:
        for ws in (alice, bob, other):
            ws.close()
    counts = server.counts()
    assert counts["WS open /ws/room/{name}"] == 3
    assert counts["WS recv /ws/room/{name}"] == 3
    assert counts["WS sent /ws/room/{name}"] == 2 + 2 + 1


def test_a_member_who_left_gets_nothing_more(server):
    stay, leave = connect(server, "/ws/room/r"), connect(server, "/ws/room/r")
    sent = lambda: server.counts().get("WS sent /ws/room/{name}", 0)  # noqa: E731
    try:
        leave.close()
        deadline, delivered = time.monotonic() + TIMEOUT, None
        while delivered != 1 and time.monotonic() < deadline:
            # the server's side of the close runs in that client's thread: poll, bounded
            before = sent()
            stay.send("ping")
            assert stay.recv() == "ping"
            delivered = sent() - before
        assert delivered == 1, delivered   # to the one who stayed, no more
    finally:
        stay.close()


def test_a_plain_get_of_a_websocket_endpoint_is_426_and_a_bad_handshake_400(server):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server.url + "/ws/echo", timeout=TIMEOUT)
    assert err.value.code == 426
    with pytest.raises(websocket.WebSocketBadStatusException) as bad:
        connect(server, "/ws/nowhere")
    assert bad.value.status_code == 404
    # Upgrade: websocket without a Sec-WebSocket-Key: wsproto's checks refuse it
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as s:
        s.sendall(b"GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\n\r\n")
        assert s.recv(200).startswith(b"HTTP/1.1 400")
    assert "WS open /ws/echo" not in server.counts()


def test_stop_ends_open_websockets(server):
    ws = connect(server, "/ws/room/late")
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    with pytest.raises((websocket.WebSocketConnectionClosedException, OSError)):
        ws.send("anyone?")
        ws.recv()
    ws.close()


def test_too_big_a_message_closes_with_1009(server):
    ws = connect(server, "/ws/echo")
    try:
        # Fragments of one message, never finished: 1 MiB exactly (the limit), then 10 bytes
        # more. The server has read all of it when it closes, so its close frame comes back.
        chunk = b"x" * (1 << 16)
        ws.send_frame(websocket.ABNF.create_frame(chunk, websocket.ABNF.OPCODE_BINARY, fin=0))
        for part in [chunk] * 15 + [b"y" * 10]:
            ws.send_frame(websocket.ABNF.create_frame(part, websocket.ABNF.OPCODE_CONT, fin=0))
        opcode, data = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(data[:2], "big") == 1009
    finally:
        ws.close()
    assert "WS recv /ws/echo" not in server.counts()
