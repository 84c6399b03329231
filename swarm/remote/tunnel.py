"""A local port forwarded to a port on a node's loopback (`swarm ui`), through its Runner."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable

from swarm.errors import RemoteError
from swarm.remote.base import Runner, Tunnel


def _pump(chan: Tunnel, sock: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    try:
        while True:
            r, _, _ = select.select([chan, sock], [], [], 60)
            if sock in r:
                data = sock.recv(65536)
                if not data:
                    break
                chan.sendall(data)
            if chan in r:
                data = chan.recv(65536)
                if not data:
                    break
                sock.sendall(data)
    except OSError:
        pass
    finally:
        chan.close()
        sock.close()


def forward(
    runner: Runner,
    listener: socket.socket,
    remote_port: int,
    stop: threading.Event,
    on_error: Callable[[str], None],
) -> None:
    """Serve `listener` by opening one tunnel per local connection, until `stop` is set.
    A connection the node refuses is closed and reported through `on_error`; serving goes on."""
    listener.settimeout(0.5)
    while not stop.is_set():
        try:
            sock, peer = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        try:
            chan = runner.open_tunnel(remote_port, peer)
        except RemoteError as e:  # the master went away: tell this client, keep serving
            on_error(f"tunnel: cannot reach the master's UI: {e}")
            sock.close()
            continue
        threading.Thread(target=_pump, args=(chan, sock), daemon=True).start()
