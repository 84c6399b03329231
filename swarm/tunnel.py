"""`swarm ui` (a local port forwarded to the master's loopback-only web UI) and `swarm ssh`."""
from __future__ import annotations

import os
import select
import shutil
import socket
import threading

from swarm import render
from swarm.errors import RemoteError, UsageError
from swarm.models import MASTER, Node


def _find(sess, name: str) -> Node:
    nodes = sess.nodes()
    for n in nodes:
        if name in (n.name, n.id):
            return n
    names = ", ".join(n.name for n in nodes) or "none"
    raise UsageError(f"no node {name!r} in stack {sess.stack.name!r} (nodes: {names})")


def _pump(chan, sock: socket.socket) -> None:
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


def forward(runner, listener: socket.socket, remote_port: int, stop: threading.Event) -> None:
    """Serve `listener` by opening one SSH direct-tcpip channel per local connection."""
    listener.settimeout(0.5)
    while not stop.is_set():
        try:
            sock, peer = listener.accept()
        except socket.timeout:
            continue
        except OSError:
            return
        try:
            chan = runner.transport().open_channel("direct-tcpip", ("127.0.0.1", remote_port), peer)
        except Exception as e:  # the master went away: tell this client, keep serving
            render.err.print(f"tunnel: cannot reach the master's UI: {e}")
            sock.close()
            continue
        threading.Thread(target=_pump, args=(chan, sock), daemon=True).start()


def hold(sess, port: int | None) -> None:
    cfg = sess.stack.config
    masters = sess.nodes(MASTER)
    if not masters:
        raise UsageError(f"stack {sess.stack.name!r} has no master: run `swarm up master` first")
    if not sess.provider.can_ssh:
        # Local: the master already listens on this machine's loopback.
        render.out.print(f"http://127.0.0.1:{cfg.locust.web_port}")
        render.err.print("local provider: the web UI is on this machine; no tunnel needed")
        return
    local_port = port or 8089
    runner = sess.provider.runner(sess.stack, masters[0])
    runner.wait_ready(30)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", local_port))
    except OSError as e:
        raise UsageError(f"cannot listen on localhost:{local_port} ({e.strerror}): "
                         "choose another with --port") from None
    listener.listen(16)
    stop = threading.Event()
    render.out.print(f"http://127.0.0.1:{local_port}", soft_wrap=True)
    render.err.print("tunnel to the master's web UI open; Ctrl-C to close")
    try:
        forward(runner, listener, cfg.locust.web_port, stop)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        listener.close()
        runner.close()


def exec_ssh(sess, name: str, command: list[str]) -> None:
    if not sess.provider.can_ssh:
        raise UsageError(f"`swarm ssh` is not available with the {sess.stack.provider} provider: "
                         "its nodes are processes on this machine")
    node = _find(sess, name)
    runner = sess.provider.runner(sess.stack, node)
    if shutil.which("ssh") is None:
        raise RemoteError("the `ssh` command is not installed on this machine")
    runner.wait_ready(30)    # pins the host key on first contact, so ssh can check it strictly
    runner.close()
    argv = ["ssh", "-p", str(runner.port), "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={runner.known_hosts}" if runner.known_hosts else "BatchMode=no"]
    if runner.key_file:
        argv += ["-i", str(runner.key_file), "-o", "IdentitiesOnly=yes"]
    argv += [f"{runner.user}@{runner.host}", *command]
    os.execvp("ssh", argv)
