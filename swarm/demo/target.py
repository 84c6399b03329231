"""A small Kandu-like JSON API used as the load-test target.

`swarm demo` and the test suite point Locust at this server, so it has to be
self-contained (the standard library, and wsproto for its WebSocket endpoints), cheap to
start on a random port, and able to tell afterwards exactly how many requests it answered
(and WebSocket messages it received and sent); those counts are compared with what Locust
reports.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from http.server import ThreadingHTTPServer
from typing import Any

from swarm.demo.kandu import KanduHandler, State
from swarm.demo.ws import WS_PREFIX, Rooms

__all__ = ["TargetServer", "start", "main"]


class _Server(ThreadingHTTPServer):
    # Daemon handler threads, so that an idle keep-alive client can't make
    # stop() or interpreter exit wait for it.
    daemon_threads = True
    # socketserver's default backlog of 5 makes the kernel reset connections
    # when Locust spawns dozens of users at once.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int]):
        self.state = State()
        self.rooms = Rooms()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, KanduHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-response is routine under load; anything
        # else is a real bug and keeps the default traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._conns_lock:
            (self._conns.add if alive else self._conns.discard)(conn)

    def drop_connections(self) -> None:
        # shutdown() only stops accepting; open keep-alive connections would
        # otherwise keep being served after stop().
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def count(self, route: str, client: str = "") -> None:
        with self.state.lock:
            self.state.counts[route] = self.state.counts.get(route, 0) + 1
            if client and not route.startswith(WS_PREFIX):
                self.state.clients[client] = self.state.clients.get(client, 0) + 1

    def clients_copy(self) -> dict[str, int]:
        with self.state.lock:
            return dict(self.state.clients)

    def counts_copy(self) -> dict[str, int]:
        with self.state.lock:
            return dict(self.state.counts)


class TargetServer:
    """A running target; create it with `start()`."""

    def __init__(self, httpd: _Server):
        self._httpd = httpd
        host, port = httpd.server_address[:2]
        self.host, self.port = str(host), int(port)
        self.url = f"http://{self.host}:{self.port}"
        self._stop_lock = threading.Lock()
        self._stopped = False
        # A short poll interval keeps stop() quick; idle cost is negligible.
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"target-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def counts(self) -> dict[str, int]:
        """Requests answered so far, keyed by "METHOD /route-template"; WebSocket figures
        too, as "WS open|recv|sent /ws/endpoint" (swarm.demo.ws)."""
        return self._httpd.counts_copy()

    def total(self) -> int:
        """All HTTP requests answered, whatever their status (GET /stats excluded)."""
        return sum(n for k, n in self.counts().items() if not k.startswith(WS_PREFIX))

    def clients(self) -> dict[str, int]:
        """HTTP requests answered per client address (GET /stats/clients): on the lab, one
        address per host, so what each worker sent."""
        return self._httpd.clients_copy()

    def reset(self) -> None:
        """Zero the request counters; kandus and users are kept."""
        with self._httpd.state.lock:
            self._httpd.state.counts.clear()
            self._httpd.state.clients.clear()

    def stop(self) -> None:
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.drop_connections()
        self._thread.join()

    def set_delay(self, ms: float) -> None:
        """Add `ms` to every response from now on (also: POST /admin/delay {"ms": N})."""
        with self._httpd.state.lock:
            self._httpd.state.delay_ms = float(ms)

    def __enter__(self) -> TargetServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"TargetServer({self.url})"


def start(host: str = "127.0.0.1", port: int = 0, delay_ms: float = 0) -> TargetServer:
    """Serve the API in a daemon thread; port 0 picks a free port."""
    server = TargetServer(_Server((host, port)))
    server.set_delay(delay_ms)
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m swarm.demo.target", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument(
        "--delay-ms", type=float, default=0, help="add this to every response (a slower target)"
    )
    args = parser.parse_args(argv)

    done = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        done.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            server = start(args.host, args.port, args.delay_ms)
        except OSError as err:
            print(f"cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
            return 1
        # Callers wait for this line to know the server is ready and where.
        print(server.url, flush=True)
        try:
            # A timeout keeps the wait interruptible so the signal handler runs promptly.
            while not done.wait(0.5):
                pass
        finally:
            server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
