"""The local Runner: a node is a directory on this machine, commands run with `sh -c` in it."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from swarm.errors import SSH_TIMEOUT, RemoteError
from swarm.remote.base import DEFERRED, HELD_UNTIL_EXIT, Runner, Sink, Tunnel


class LocalRunner(Runner):
    """Each command gets a session of its own, so that Ctrl-C in the user's terminal does not
    reach Locust (as with a remote host)."""

    def __init__(self, root: Path, label: str):
        self.root = Path(root)
        self.label = label
        self._streams: list[subprocess.Popen[bytes]] = []

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        env = dict(os.environ)
        # The controller's own Locust: same version, no bootstrap needed.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.update(extra or {})
        return env

    def _sh(
        self, cmd: str, stdin: int, stdout: int, stderr: int, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """`sh -c cmd` in the node's directory, in a session of its own."""
        self.root.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(
            ["sh", "-c", cmd],
            cwd=self.root,
            env=self._env(env),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )

    def _exec(
        self, cmd: str, timeout: float, env: dict[str, str] | None, stdin: bytes | None
    ) -> tuple[int, bytes, bytes]:
        proc = self._sh(
            cmd,
            subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            subprocess.PIPE,
            subprocess.PIPE,
            env,
        )
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RemoteError(
                f"{self.label}: command timed out after {timeout:.0f}s: {cmd[:80]}",
                code=SSH_TIMEOUT,
            ) from e
        return proc.returncode, out, err

    def stream(self, cmd: str, sink: Sink) -> int:
        proc = self._sh(cmd, subprocess.DEVNULL, subprocess.PIPE, subprocess.STDOUT)
        self._streams.append(proc)
        out = proc.stdout
        assert isinstance(out, io.BufferedReader)  # stdout=PIPE, unbuffered=False
        try:
            for chunk in iter(lambda: out.read1(65536), b""):
                sink(chunk)
            return proc.wait()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def run_after_exit(self, cmd: str) -> None:
        proc = self._sh(DEFERRED + cmd, subprocess.PIPE, subprocess.DEVNULL, subprocess.DEVNULL)
        assert proc.stdin is not None
        HELD_UNTIL_EXIT.append(os.dup(proc.stdin.fileno()))
        proc.stdin.close()

    def close(self) -> None:
        for proc in self._streams:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        self._streams.clear()

    def open_tunnel(self, remote_port: int, origin: tuple[str, int]) -> Tunnel:
        """The node is this machine: its loopback port, directly (`swarm ui --port N`)."""
        try:
            return socket.create_connection(("127.0.0.1", remote_port), timeout=10)
        except OSError as e:
            raise RemoteError(
                f"{self.label}: nothing answers on 127.0.0.1:{remote_port} ({e.strerror or e})"
            ) from e
