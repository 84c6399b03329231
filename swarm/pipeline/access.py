"""Reaching a node by hand: the master's web UI through a tunnel (`swarm ui`), a shell on a
node through OpenSSH (`swarm ssh`). The CLI holds the tunnel and execs ssh."""

from __future__ import annotations

import shlex
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from swarm.errors import RemoteError, UsageError
from swarm.models import Role
from swarm.pipeline.session import Session
from swarm.remote.base import Route, Runner, SshTarget


@dataclass
class UiTunnel:
    runner: Runner  # to the master
    listener: socket.socket  # on this machine's loopback
    local_port: int
    web_port: int  # the UI's port on the master's loopback

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    def close(self) -> None:
        self.listener.close()
        self.runner.close()


def ui_url_here(sess: Session, port: int | None) -> str | None:
    """The UI's URL when the master listens on this machine at the port asked for (no
    tunnel needed), else None."""
    if not sess.nodes(Role.MASTER):
        raise UsageError(f"stack {sess.stack.name!r} has no master: run `swarm up master` first")
    web_port = sess.ports.web
    if sess.provider.can_ssh or port not in (None, web_port):
        return None
    return f"http://127.0.0.1:{web_port}"


def open_ui(sess: Session, port: int | None) -> UiTunnel:
    """Connect to the master and listen on localhost:port (default 8089)."""
    local_port = port or 8089
    runner = sess.provider.runner(sess.stack, sess.nodes(Role.MASTER)[0])
    runner.wait_ready(30)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", local_port))
    except OSError as e:
        listener.close()
        runner.close()
        raise UsageError(
            f"cannot listen on localhost:{local_port} ({e.strerror}): choose another with --port"
        ) from e
    listener.listen(16)
    return UiTunnel(runner, listener, local_port, sess.ports.web)


def ssh_argv(sess: Session, name: str, command: list[str]) -> list[str]:
    """The OpenSSH command line that reaches the node as swarm does (its key, its pinned
    host key, strictly checked)."""
    if not sess.provider.can_ssh:
        raise UsageError(
            f"`swarm ssh` is not available with the {sess.stack.provider} provider: "
            "its nodes are processes on this machine"
        )
    node = sess.find(name)
    runner = sess.provider.runner(sess.stack, node)
    if shutil.which("ssh") is None:
        raise RemoteError("the `ssh` command is not installed on this machine")
    runner.wait_ready(30)  # pins the host key on first contact, so ssh can check it strictly
    runner.close()
    t = runner.ssh_target()
    if t is None:  # pragma: no cover - every provider that can_ssh has SSH runners
        raise RemoteError(f"{name}: not reachable over SSH")
    keys = (t.key_file,) if t.key_file else t.key_files
    return ["ssh", *_login_options(t, t.port, keys, t.route), f"{t.user}@{t.host}", *command]


def _login_options(t: SshTarget, port: int, keys: tuple[Path, ...], route: Route) -> list[str]:
    """OpenSSH options for one login on the way: the stack's pinned keys strictly checked.
    Jump hosts become nested `ssh -W` proxy commands, not -J: options on ssh's command line
    do not reach -J's hops, and every hop must be checked against the same pins."""
    argv = [
        "-p",
        str(port),
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={t.known_hosts}" if t.known_hosts else "BatchMode=no",
    ]
    for key in keys:
        argv += ["-i", str(key)]
    if keys == (t.key_file,):  # the stack's own key: only it, as swarm does
        argv += ["-o", "IdentitiesOnly=yes"]
    proxy = _proxy_command(t, route)
    if proxy is not None:
        argv += ["-o", f"ProxyCommand={proxy}"]
    return argv


def _proxy_command(t: SshTarget, route: Route) -> str | None:
    if route.proxy_command is not None:
        return route.proxy_command
    if not route.jumps:
        return None
    *before, last = route.jumps
    inner = _login_options(t, last.port, last.key_files, Route(jumps=tuple(before)))
    # ssh expands %h and %p in its ProxyCommand, a nested one's too: those must reach the
    # ssh that runs it, so they are written %%h and %%p at each level out.
    inner = [w.replace("%", "%%") for w in inner]
    return shlex.join(["ssh", *inner, "-W", "%h:%p", f"{last.user}@{last.host}"])
