"""Tests for the demo target API and the bundled locustfiles run against it."""

import http.client
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from swarm.demo import target

REPO = Path(__file__).resolve().parent.parent
LOCUST = Path(sys.executable).parent / "locust"


@pytest.fixture
def server():
    srv = target.start("127.0.0.1", 0)
    yield srv
    srv.stop()


def call(srv, method, path, body=None, *, data=None, headers=None):
    """One request; returns (status, content type, parsed JSON or raw bytes)."""
    if body is not None:
        data = json.dumps(body).encode()
    req = urllib.request.Request(srv.url + path, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, ctype, raw = resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as err:
        status, ctype, raw = err.code, err.headers["Content-Type"], err.read()
    return status, ctype, (json.loads(raw) if ctype == "application/json" else raw)


def test_start_binds_loopback_random_port(server):
    assert server.host == "127.0.0.1"
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"


def test_health(server):
    assert call(server, "GET", "/health") == (200, "application/json", {"ok": True})


def test_register(server):
    status, _, body = call(server, "POST", "/meta/register", {"username": "ada", "password": "pw"})
    assert status == 201
    assert isinstance(body["user_id"], int)
    assert isinstance(body["token"], str) and len(body["token"]) >= 32

    status, _, other = call(server, "POST", "/meta/register", {"username": "bob", "password": "pw"})
    assert status == 201 and other["token"] != body["token"]

    assert call(server, "POST", "/meta/register", {"username": "ada"})[0] == 400
    assert call(server, "POST", "/meta/register", data=b"{not json")[0] == 400


def test_kandus(server):
    for kandu_id in range(1, 6):
        status, _, body = call(server, "GET", f"/kandus/{kandu_id}")
        assert status == 200 and body["id"] == kandu_id

    token = call(server, "POST", "/meta/register", {"username": "k", "password": "pw"})[2]["token"]
    kandu = {"title": "Cat jump", "blocks": [{"type": "move", "arg": 3}]}
    status, _, saved = call(server, "POST", "/kandus", kandu, headers={"Authorization": f"Bearer {token}"})
    assert status == 201 and saved["id"] > 5
    # The token is optional.
    assert call(server, "POST", "/kandus", {"title": "anon", "blocks": []})[0] == 201

    status, _, body = call(server, "GET", f"/kandus/{saved['id']}")
    assert status == 200
    assert body["title"] == "Cat jump" and body["blocks"] == kandu["blocks"]

    assert call(server, "GET", "/kandus/9999")[0] == 404
    assert call(server, "GET", "/kandus/abc")[0] == 404
    assert call(server, "POST", "/kandus", {"blocks": []})[0] == 400


def test_plays_and_flags(server):
    assert call(server, "POST", "/plays", {"kandu_id": 2}) == (201, "application/json", {"plays": 1})
    assert call(server, "POST", "/plays", {"kandu_id": 2})[2] == {"plays": 2}
    assert call(server, "POST", "/plays", {"kandu_id": 999})[0] == 404
    assert call(server, "POST", "/plays", {})[0] == 400

    assert call(server, "POST", "/flags", {"kandu_id": 3, "reason": "spam"}) == (
        201,
        "application/json",
        {"flagged": True},
    )
    assert call(server, "POST", "/flags", {"kandu_id": 3})[0] == 400


def test_assets(server):
    status, ctype, body = call(server, "GET", "/assets/cat.png")
    assert status == 200 and ctype == "application/octet-stream"
    assert 3000 <= len(body) <= 5000
    assert call(server, "GET", "/assets/cat.png")[2] == body
    assert call(server, "GET", "/assets/dog.png")[2] != body

    for bad in ("/assets/..", "/assets/a..b", "/assets/a%2Fb", "/assets/sub/dir.png", "/assets/"):
        assert call(server, "GET", bad)[0] == 404, bad


def test_unknown_routes_are_json_404(server):
    for method, path in (("GET", "/nope"), ("POST", "/health"), ("DELETE", "/kandus/1")):
        status, ctype, body = call(server, method, path, data=b"" if method != "GET" else None)
        assert status == 404 and ctype == "application/json" and "error" in body


def test_counts_total_stats_and_reset(server):
    call(server, "GET", "/health")
    call(server, "GET", "/kandus/1")
    call(server, "GET", "/kandus/2")
    call(server, "GET", "/kandus/77")  # 404s count too
    call(server, "POST", "/plays", {"kandu_id": 1})

    expected = {"GET /health": 1, "GET /kandus/{id}": 3, "POST /plays": 1}
    assert server.counts() == expected
    assert server.total() == 5

    # /stats reports the counts but never counts itself.
    assert call(server, "GET", "/stats") == (200, "application/json", expected)
    assert call(server, "GET", "/stats")[2] == expected
    assert server.total() == 5

    server.reset()
    assert server.counts() == {} and server.total() == 0
    # reset() only clears counters; data survives.
    assert call(server, "POST", "/plays", {"kandu_id": 1})[2] == {"plays": 2}


def _timed(srv, path):
    t = time.monotonic()
    status = call(srv, "GET", path)[0]
    return status, (time.monotonic() - t) * 1000


def test_the_delay_switch_slows_every_response_but_its_own(server):
    """A slower target for the baseline tests: POST /admin/delay, or set_delay in-process."""
    assert call(server, "POST", "/admin/delay", {"ms": 200}) == (200, "application/json",
                                                                {"delay_ms": 200.0})
    for path in ("/health", "/kandus/1", "/nope"):
        status, ms = _timed(server, path)
        assert ms >= 200, (path, status, ms)
    assert call(server, "POST", "/admin/delay", {"ms": "fast"})[0] == 400
    assert call(server, "POST", "/admin/delay", {"ms": -1})[0] == 400
    server.set_delay(0)
    assert _timed(server, "/health")[1] < 200
    # the switch is the test's, not the load's: never counted
    assert server.counts() == {"GET /health": 2, "GET /kandus/{id}": 1, "GET <unknown>": 1}


def test_keep_alive(server):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        for i in range(5):
            conn.request("POST", "/plays", body=json.dumps({"kandu_id": 1}), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 201 and resp.version == 11
            assert resp.headers["Content-Length"] == str(len(resp.read()))
            conn.request("GET", "/missing")
            resp = conn.getresponse()
            assert resp.status == 404
            resp.read()
        # Same socket the whole time: it was never closed by the server.
        assert conn.sock is not None
    finally:
        conn.close()
    assert server.total() == 10


def test_stop_is_idempotent_and_context_manager():
    with target.start() as srv:
        assert call(srv, "GET", "/health")[0] == 200
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=5)
        conn.request("GET", "/health")
        conn.getresponse().read()
    srv.stop()
    # Both new connections and an existing keep-alive one are gone.
    with pytest.raises(OSError):
        call(srv, "GET", "/health")
    with pytest.raises((OSError, http.client.HTTPException)):
        conn.request("GET", "/health")
        conn.getresponse()
    conn.close()


def test_main_serves_until_sigterm():
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm.demo.target", "--host", "127.0.0.1", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "/health", timeout=10) as resp:
            assert json.loads(resp.read()) == {"ok": True}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


USERS = 5


@pytest.mark.parametrize("locustfile", ["signups.py", "viral_load.py", "typical_load.py"])
def test_locustfile_runs_clean(server, locustfile):
    cmd = [
        str(LOCUST),
        "-f",
        str(REPO / "locustfiles" / locustfile),
        "--headless",
        "-u", str(USERS),
        "-r", str(USERS),
        "-t", "4s",
        "-H", server.url,
        "--json",
        # Let users finish the request in flight at the deadline; a killed
        # user would leave a request the server counted but Locust didn't.
        "--stop-timeout", "5",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]

    stats = json.loads(proc.stdout)
    requests = sum(entry["num_requests"] for entry in stats)
    failures = sum(entry["num_failures"] for entry in stats)
    assert requests > 0, proc.stderr[-3000:]
    assert failures == 0, json.dumps(stats)[:3000]
    # Usually exactly equal. Locust kills a waiting user outright at the end,
    # and if that user's wait ends in the same event-loop turn it can send one
    # request the server answers but Locust never records. So each user may
    # add at most one uncounted request; more than that means lost counts.
    total = server.total()
    assert requests <= total <= requests + USERS, (total, requests, server.counts(), stats)
