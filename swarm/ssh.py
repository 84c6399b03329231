"""The SSH Runner (paramiko): one connection per host, reused; host keys pinned per stack.

Host keys are recorded in the stack's known_hosts on first contact; a later mismatch is
refused, never silently accepted.
"""
from __future__ import annotations

import logging
import os
import select
import shlex
import threading
import time
from pathlib import Path

import paramiko

from swarm.errors import RemoteError
from swarm.remote import (DEFERRED, HELD_UNTIL_EXIT, Result, pack_tree_cmd, replace_tree_cmd,
                          tar_bytes, untar_bytes)

_known_hosts_lock = threading.Lock()   # many hosts are first contacted at once

# paramiko logs its transport thread's failures at ERROR, a traceback line by line (a banner
# that never came from a host still booting, a socket closed as swarm exits). With no handler,
# Python's last-resort handler would print them on stderr among swarm's own lines; swarm
# reports these failures itself.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class HostKeyChanged(RemoteError):
    pass


class _PinOnFirstContact(paramiko.MissingHostKeyPolicy):
    """Unknown host: record its key. (A known host with another key never gets here:
    paramiko raises BadHostKeyException.)"""

    def __init__(self, path: Path):
        self.path = path

    def missing_host_key(self, client, hostname, key):
        with _known_hosts_lock:
            keys = paramiko.HostKeys()
            if self.path.exists():
                keys.load(str(self.path))
            known = keys.lookup(hostname)
            if known is not None and len(known) and key.get_name() not in known:
                # Known host offering a key of another type: treat it as a changed key.
                raise paramiko.BadHostKeyException(hostname, key, next(iter(known.values())))
            # One line appended, not the file rewritten: N new hosts cost N lines, not N^2.
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(self.path, "a", encoding="ascii") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class _NotAnswering(RemoteError):
    """No SSH session could be set up (refused, timed out, no banner, dropped): maybe not yet."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class SSHRunner:
    def __init__(self, host: str, port: int = 22, user: str = "root", key_file: Path | None = None,
                 known_hosts: Path | None = None, label: str | None = None,
                 connect_timeout: float = 10.0):
        self.host, self.port, self.user = host, port, user
        self.key_file = Path(key_file).expanduser() if key_file else None
        self.known_hosts = Path(known_hosts) if known_hosts else None
        self.label = label or host
        self.connect_timeout = connect_timeout
        self._client: paramiko.SSHClient | None = None
        self._deferred: list[paramiko.Channel] = []
        self._held: paramiko.Transport | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SSHRunner({self.user}@{self.host}:{self.port} {self.label})"

    # ---- connection ----

    def wait_ready(self, timeout: float) -> None:
        """Connect, retrying (bounded) while the host does not answer SSH yet. No separate
        probe first: that was one more TCP connection, and one more sshd process, per host."""
        deadline = time.monotonic() + timeout
        last = ""
        for _ in range(int(timeout / 0.5) + 2):
            try:
                self._connect(max(0.5, deadline - time.monotonic()))
                return
            except _NotAnswering as e:
                last = e.reason
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        raise RemoteError(f"{self.label} ({self.host}:{self.port}): SSH did not answer within "
                          f"{timeout:.0f}s ({last}): check the security group / ssh_cidr and "
                          "that the machine is up")

    def _connect(self, wait: float | None = None) -> paramiko.SSHClient:
        with self._lock:
            if self._client is not None and self._client.get_transport() is not None \
                    and self._client.get_transport().is_active():
                return self._client
            client = paramiko.SSHClient()
            if self.known_hosts is not None:
                if self.known_hosts.exists():
                    client.load_host_keys(str(self.known_hosts))
                client.set_missing_host_key_policy(_PinOnFirstContact(self.known_hosts))
            else:
                client.load_system_host_keys()
                client.set_missing_host_key_policy(paramiko.RejectPolicy())
            # While waiting (`wait` s left): short TCP attempts, as packets to a machine still
            # booting may go unanswered, and never past the deadline.
            t = self.connect_timeout if wait is None else min(self.connect_timeout, wait)
            kw = dict(hostname=self.host, port=self.port, username=self.user,
                      timeout=t if wait is None else min(3.0, t), banner_timeout=t,
                      auth_timeout=self.connect_timeout)
            if self.key_file is not None:
                kw.update(key_filename=str(self.key_file), look_for_keys=False, allow_agent=False)
            try:
                client.connect(**kw)
            except paramiko.BadHostKeyException:
                client.close()
                raise HostKeyChanged(
                    f"{self.label} ({self.host}): host key changed since first contact; refusing "
                    f"to connect. If the machine was really replaced, delete its line in "
                    f"{self.known_hosts}") from None
            except paramiko.AuthenticationException as e:
                client.close()
                raise RemoteError(f"{self.label} ({self.user}@{self.host}): SSH authentication "
                                  f"failed ({e}): check the key and ssh_user") from None
            except (OSError, paramiko.SSHException, EOFError) as e:
                client.close()
                reason = str(e) or type(e).__name__
                raise _NotAnswering(f"{self.label} ({self.host}:{self.port}): SSH connection "
                                    f"failed: {reason}", reason) from None
            transport = client.get_transport()
            transport.set_keepalive(15)
            self._client = client
            return client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            self._deferred.clear()

    # ---- commands ----

    def _exec(self, cmd: str, timeout: float, stdin: bytes | None) -> tuple[int, bytes, bytes]:
        client = self._connect()
        try:
            chan = client.get_transport().open_session(timeout=self.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.close()
            raise RemoteError(f"{self.label}: SSH session failed: {e or type(e).__name__}") from None
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            chan.exec_command(cmd)
            if stdin is not None:
                # A view: paramiko's sendall re-slices what is left after every packet, which
                # copies a bytes object each time (quadratic for a multi-MB tar).
                chan.sendall(memoryview(stdin))
            chan.shutdown_write()
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RemoteError(f"{self.label}: command timed out after {timeout:.0f}s: {cmd[:80]}")
                select.select([chan], [], [], min(left, 1.0))
            while chan.recv_ready():
                out += chan.recv(65536)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            return chan.recv_exit_status(), bytes(out), bytes(err)
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.close()
            raise RemoteError(f"{self.label}: SSH command failed: {e or type(e).__name__}") from None
        finally:
            chan.close()

    def run(self, cmd: str, *, timeout: float, env: dict[str, str] | None = None,
            stdin: bytes | None = None, check: bool = True) -> Result:
        if env:
            # Inline: sshd's AcceptEnv usually drops client-sent variables.
            cmd = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + cmd
        code, out, err = self._exec(cmd, timeout, stdin)
        res = Result(code, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and not res.ok:
            raise RemoteError(f"{self.label}: command failed (exit {code}): {res.tail(3) or cmd[:80]}")
        return res

    def run_bytes(self, cmd: str, *, timeout: float) -> bytes:
        code, out, err = self._exec(cmd, timeout, None)
        if code != 0:
            raise RemoteError(f"{self.label}: command failed (exit {code}): "
                              f"{err.decode(errors='replace').strip()[-200:] or cmd[:80]}")
        return out

    def put_tree(self, local_dir: Path, remote_dir: str, *, timeout: float = 120) -> None:
        self.run(replace_tree_cmd(remote_dir), timeout=timeout, stdin=tar_bytes(local_dir))

    def get_tree(self, remote_dir: str, local_dir: Path, *, timeout: float = 120) -> None:
        untar_bytes(self.run_bytes(pack_tree_cmd(remote_dir), timeout=timeout), Path(local_dir))

    def stream(self, cmd: str, sink) -> int:
        """Run cmd, handing output (stdout and stderr) to sink as it arrives, until it ends or
        the connection closes (close() from another thread stops it)."""
        chan = self._connect().get_transport().open_session(timeout=self.connect_timeout)
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
            raise RemoteError(f"{self.label}: SSH stream ended: {e or type(e).__name__}") from None
        finally:
            chan.close()

    def run_after_exit(self, cmd: str) -> None:
        """Start cmd on the host once this process has exited, without waiting for it.

        The host's shell starts now and reads the channel until the connection ends; a
        duplicate of the socket keeps the connection open past close() until the OS closes it
        as this process exits (a process killed by a signal included). Hosts that share CPUs
        (VMs on one machine, the lab) would otherwise slow by seconds the work still to come.
        """
        try:
            transport = self._connect().get_transport()
            chan = transport.open_session(timeout=self.connect_timeout)
            chan.exec_command(DEFERRED + cmd)
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.close()
            raise RemoteError(f"{self.label}: SSH session failed: {e or type(e).__name__}") from None
        self._deferred.append(chan)   # the transport keeps its channels by weak reference only
        if self._held is not transport:
            HELD_UNTIL_EXIT.append(os.dup(transport.sock.fileno()))
            self._held = transport

    def transport(self) -> paramiko.Transport:
        return self._connect().get_transport()
