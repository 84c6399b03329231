"""The SSH Runner (paramiko): one connection per host, reused; host keys pinned per stack.

Host keys are recorded in the stack's known_hosts on first contact; a later mismatch is
refused, never silently accepted. The connection is opened along the node's Route (hops.py):
straight, through jump hosts, or through a proxy command.
"""

from __future__ import annotations

import logging
import os
import select
import shlex
import socket
import threading
import time
from pathlib import Path

import paramiko

from swarm.errors import SSH_TIMEOUT, SSH_UNREACHABLE, RemoteError
from swarm.remote import hops
from swarm.remote.base import (
    DEFERRED,
    DIRECT,
    HELD_UNTIL_EXIT,
    Hop,
    Progress,
    Route,
    Runner,
    Sink,
    SshTarget,
    Tunnel,
)
from swarm.remote.hops import NotAnswering

# paramiko logs its transport thread's failures at ERROR, a traceback line by line (a banner
# that never came from a host still booting, a socket closed as swarm exits). With no handler,
# Python's last-resort handler would print them on stderr among swarm's own lines; swarm
# reports these failures itself.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
# After a command's exit status, how long to wait for the EOF that follows its last output
EOF_GRACE_S = 2.0
# Connections that must outlive close() until this process exits (run_after_exit through a
# jump host or a proxy command: closing them would end the path, and run the command, now).
_HELD: list[paramiko.SSHClient] = []


class SSHRunner(Runner):
    def __init__(
        self,
        host: str,
        port: int = 22,
        user: str = "root",
        key_file: Path | None = None,
        known_hosts: Path | None = None,
        label: str | None = None,
        connect_timeout: float = 10.0,
        route: Route = DIRECT,
        key_files: tuple[Path, ...] = (),
    ):
        """`key_file`: the stack's own key, offered alone; `key_files`: keys from the
        user's ssh_config, offered with the agent's and ~/.ssh's, as OpenSSH does."""
        self.host, self.port, self.user = host, port, user
        self.route = route
        self.key_file = Path(key_file).expanduser() if key_file else None
        self.key_files = key_files
        self.known_hosts = Path(known_hosts) if known_hosts else None
        self.label = label or host
        self.connect_timeout = connect_timeout
        self._client: paramiko.SSHClient | None = None
        self._deferred: list[paramiko.Channel] = []
        self._held: paramiko.Transport | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        via = f" via {len(self.route.jumps)} jump(s)" if self.route.jumps else ""
        via += " via a proxy command" if self.route.proxy_command else ""
        return f"SSHRunner({self.user}@{self.host}:{self.port}{via} {self.label})"

    # ---- connection ----

    def wait_ready(self, timeout: float, progress: Progress | None = None) -> None:
        """Connect, retrying (bounded) while the host does not answer SSH yet. No separate
        probe first: that was one more TCP connection, and one more sshd process, per host.
        A booting instance refuses connections for a while: `progress` hears when the wait
        starts, every 30 s of it, and when SSH answers."""
        start = time.monotonic()
        deadline = start + timeout
        last: NotAnswering | None = None
        noted = -1.0
        for _ in range(int(timeout / 0.5) + 2):
            try:
                self._connect(max(0.5, deadline - time.monotonic()))
                if last is not None and progress is not None:
                    progress(f"{self.label}: SSH answered after {time.monotonic() - start:.0f}s")
                return
            except NotAnswering as e:
                last = e
            waited = time.monotonic() - start
            if progress is not None and (noted < 0 or waited - noted >= 30):
                state = (
                    "not answering yet" if noted < 0 else f"still not answering after {waited:.0f}s"
                )
                progress(
                    f"{self.label} ({self.host}:{self.port}): SSH {state} ({last.reason}); "
                    f"waiting up to {timeout:.0f}s"
                )
                noted = waited
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        action = "check the security group / ssh_cidr and that the machine is up"
        raise RemoteError(
            f"{self.label} ({self.host}:{self.port}): SSH did not answer within "
            f"{timeout:.0f}s ({last.reason if last else ''}): {action}",
            code=SSH_UNREACHABLE,
            action=action,
        ) from last

    def _connect(self, wait: float | None = None) -> paramiko.SSHClient:
        with self._lock:
            if self._client is not None:
                live = self._client.get_transport()
                if live is not None and live.is_active():
                    return self._client
            # While waiting (`wait` s left): short TCP attempts, as packets to a machine still
            # booting may go unanswered, and never past the deadline.
            t = self.connect_timeout if wait is None else min(self.connect_timeout, wait)
            timeouts = hops.Timeouts(
                connect=t if wait is None else min(3.0, t), banner=t, auth=self.connect_timeout
            )
            keys = (self.key_file,) if self.key_file is not None else self.key_files
            hop = Hop(self.host, self.port, self.user, keys)
            self._client = hops.connect(
                hop,
                self.route,
                self.known_hosts,
                timeouts,
                self.label,
                own_keys=self.key_file is not None,
            )
            return self._client

    def connect(self) -> None:
        self._connect()

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            self._deferred.clear()

    # ---- commands ----

    def _transport(self) -> paramiko.Transport:
        transport = self._connect().get_transport()
        if transport is None:  # closed by another thread since
            raise RemoteError(f"{self.label}: SSH connection closed", code=SSH_UNREACHABLE)
        return transport

    def _session(self) -> paramiko.Channel:
        try:
            return self._transport().open_session(timeout=self.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.close()
            raise RemoteError(
                f"{self.label}: SSH session failed: {e or type(e).__name__}", code=SSH_UNREACHABLE
            ) from e

    def _exec(
        self, cmd: str, timeout: float, env: dict[str, str] | None, stdin: bytes | None
    ) -> tuple[int, bytes, bytes]:
        if env:
            # Inline: sshd's AcceptEnv usually drops client-sent variables.
            cmd = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + cmd
        chan = self._session()
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            chan.exec_command(cmd)
            if stdin is not None:
                # A view: paramiko's sendall re-slices what is left after every packet, which
                # copies a bytes object each time (quadratic for a multi-MB tar).
                chan.sendall(memoryview(stdin))
            chan.shutdown_write()
            exited_at = None
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if chan.exit_status_ready() and exited_at is None:
                    exited_at = time.monotonic()
                # sshd may send the exit status before the last of the output (it still
                # drains the command's pipe): read on to EOF, which follows the output. A
                # child still holding the pipe would delay EOF forever: a short grace.
                if (
                    exited_at is not None
                    and (chan.eof_received or time.monotonic() - exited_at > EOF_GRACE_S)
                    and not chan.recv_ready()
                    and not chan.recv_stderr_ready()
                ):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RemoteError(
                        f"{self.label}: command timed out after {timeout:.0f}s: {cmd[:80]}",
                        code=SSH_TIMEOUT,
                    )
                select.select([chan], [], [], min(left, 0.1 if exited_at else 1.0))
            while chan.recv_ready():
                out += chan.recv(65536)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            code = chan.recv_exit_status()
            transport = chan.get_transport()
            if code == -1 and (transport is None or not transport.is_active()):
                # closed under the command, no exit status: the host went away
                raise EOFError("connection lost during the command")
            return code, bytes(out), bytes(err)
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.close()
            raise RemoteError(
                f"{self.label}: SSH command failed: {e or type(e).__name__}", code=SSH_UNREACHABLE
            ) from e
        finally:
            chan.close()

    def stream(self, cmd: str, sink: Sink) -> int:
        """stdout and stderr both go to sink; close() from another thread stops it."""
        chan = self._session()
        try:
            chan.set_combine_stderr(True)
            chan.exec_command(cmd)
            chan.shutdown_write()
            while True:
                select.select([chan], [], [], 1.0)
                while chan.recv_ready():
                    sink(chan.recv(65536))
                if chan.exit_status_ready() and not chan.recv_ready():
                    return chan.recv_exit_status()
                if chan.closed:
                    return -1
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise RemoteError(
                f"{self.label}: SSH stream ended: {e or type(e).__name__}", code=SSH_UNREACHABLE
            ) from e
        finally:
            chan.close()

    def run_after_exit(self, cmd: str) -> None:
        """Start cmd on the host once this process has exited, without waiting for it.

        The host's shell starts now and reads the channel until the connection ends; a
        duplicate of the socket keeps the connection open past close() until the OS closes it
        as this process exits (a process killed by a signal included). Hosts that share CPUs
        (VMs on one machine, the lab) would otherwise slow by seconds the work still to come.
        """
        chan = self._session()
        transport = chan.get_transport()
        try:
            chan.exec_command(DEFERRED + cmd)
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.close()
            raise RemoteError(
                f"{self.label}: SSH session failed: {e or type(e).__name__}", code=SSH_UNREACHABLE
            ) from e
        self._deferred.append(chan)  # the transport keeps its channels by weak reference only
        if self._held is not transport:
            if isinstance(transport.sock, socket.socket):
                HELD_UNTIL_EXIT.append(os.dup(transport.sock.fileno()))
            elif self._client is not None:
                _HELD.append(self._client)
                self._client = None  # close() must not end it
            self._held = transport

    def ssh_target(self) -> SshTarget:
        return SshTarget(
            self.host,
            self.port,
            self.user,
            self.key_file,
            self.known_hosts,
            self.route,
            self.key_files,
        )

    def open_tunnel(self, remote_port: int, origin: tuple[str, int]) -> Tunnel:
        try:
            return self._transport().open_channel(
                "direct-tcpip", ("127.0.0.1", remote_port), origin
            )
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise RemoteError(
                f"{self.label}: cannot open a tunnel to port {remote_port}: "
                f"{e or type(e).__name__}",
                code=SSH_UNREACHABLE,
            ) from e
