"""The Runner: one interface to run commands and move files on a node, whatever reaches it.

Remote paths are relative to the node's home (SSH) or the node's own directory (local), so the
pipeline uses the same strings (`swarm/locustfiles`, `swarm/locust.pid`) on every provider.
Each transport (`local.py`, `ssh.py`) subclasses `Runner`; the tar helpers here are shared.
"""

from __future__ import annotations

import abc
import io
import os
import shlex
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from swarm.errors import RemoteError

Sink = Callable[[bytes], None]
Progress = Callable[[str], None]  # a line for the person waiting


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def tail(self, lines: int = 15) -> str:
        text = (self.stderr or self.stdout).strip()
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class Hop:
    """One SSH login on the way to a node (a bastion, a ProxyJump host)."""

    host: str
    port: int = 22
    user: str = "root"
    key_files: tuple[Path, ...] = ()  # none: the agent and ~/.ssh/id_* as OpenSSH would


@dataclass(frozen=True)
class Route:
    """How swarm reaches a node's sshd: straight, through jump hosts (the first is the one this
    machine connects to), or through a command whose stdin/stdout is the connection (SSM).
    Every hop's host key is pinned in the stack's known_hosts, as the node's is."""

    jumps: tuple[Hop, ...] = ()
    proxy_command: str | None = None  # OpenSSH's ProxyCommand: %h, %p and %r expanded

    @property
    def direct(self) -> bool:
        return not self.jumps and self.proxy_command is None


DIRECT = Route()


@dataclass(frozen=True)
class SshTarget:
    """What an OpenSSH client needs to reach the node as swarm does (`swarm ssh`)."""

    host: str
    port: int
    user: str
    key_file: Path | None
    known_hosts: Path | None
    route: Route = DIRECT
    key_files: tuple[Path, ...] = ()  # the ssh_config's, when there is no key_file


class Tunnel(Protocol):
    """A byte stream to a port on the node (an SSH direct-tcpip channel, or a socket)."""

    def recv(self, n: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


class Runner(abc.ABC):
    """Runs shell commands on one node. Every call is bounded by a timeout; failures to reach
    the node are RemoteError (with `code` from swarm.errors' SSH_* codes where one applies)."""

    label: str  # the node's name in messages

    @abc.abstractmethod
    def _exec(
        self, cmd: str, timeout: float, env: dict[str, str] | None, stdin: bytes | None
    ) -> tuple[int, bytes, bytes]:
        """Run cmd with `sh` semantics -> (exit code, stdout, stderr)."""

    def run(
        self,
        cmd: str,
        *,
        timeout: float,
        env: dict[str, str] | None = None,
        stdin: bytes | None = None,
        check: bool = True,
    ) -> Result:
        code, out, err = self._exec(cmd, timeout, env, stdin)
        res = Result(code, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and not res.ok:
            raise RemoteError(
                f"{self.label}: command failed (exit {code}): {res.tail(3) or cmd[:80]}"
            )
        return res

    def run_bytes(self, cmd: str, *, timeout: float) -> bytes:
        """stdout as bytes (a tar stream, a log); a non-zero exit is a RemoteError."""
        code, out, err = self._exec(cmd, timeout, None, None)
        if code != 0:
            raise RemoteError(
                f"{self.label}: command failed (exit {code}): "
                f"{err.decode(errors='replace').strip()[-200:] or cmd[:80]}"
            )
        return out

    def wait_ready(self, timeout: float, progress: Progress | None = None) -> None:
        """Block (bounded) until the node accepts commands, telling `progress` of a long
        wait. Default: it always does."""

    def connect(self) -> None:
        """Open the connection now (once, bounded), so that a command sent later starts at
        once: a run connects to every worker while the master stops its Locust. Failing to
        reach the node is a RemoteError. Default: nothing to open."""

    @abc.abstractmethod
    def stream(self, cmd: str, sink: Sink) -> int:
        """Run cmd, handing its output to sink as it arrives, until it ends or close() is
        called from another thread (for `logs -f`) -> its exit code (-1 if cut off)."""

    @abc.abstractmethod
    def run_after_exit(self, cmd: str) -> None:
        """Start cmd on the node once this swarm process has exited; never wait for it."""

    def close(self) -> None:
        """Release the connection. Default: nothing to release."""

    def ssh_target(self) -> SshTarget | None:
        """How an OpenSSH client reaches this node; None where there is no SSH (local)."""
        return None

    def open_tunnel(self, remote_port: int, origin: tuple[str, int]) -> Tunnel:
        """A stream to the node's loopback `remote_port` (the web UI). Default: none; the
        local and SSH runners have one."""
        raise RemoteError(f"{self.label}: no tunnel to this node (it is on this machine)")


# run_after_exit: the node's shell reads its input until this process has exited (the OS then
# closes our end), then runs the command, with no output to write to a channel that is gone.
DEFERRED = "exec >/dev/null 2>&1; cat; "
# Our ends of those inputs, as bare fds: nothing closes them before the OS does at our exit.
HELD_UNTIL_EXIT: list[int] = []


# ---- one tar stream each way ----


def _exclude(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    name = os.path.basename(info.name)
    if name in ("__pycache__", ".git", ".venv") or name.endswith(".pyc"):
        return None
    return info


def tar_bytes(
    local_dir: Path | None, *, level: int = 1, extra: dict[str, bytes] | None = None
) -> bytes:
    """The contents of local_dir (plus `extra` files: name -> bytes; None: those only) as one
    gzip'd tar (paths relative to it). level 0 for what is compressed already (wheels):
    stored, still gzip."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=level) as tar:
        for child in sorted(Path(local_dir).iterdir()) if local_dir is not None else []:
            tar.add(child, arcname=child.name, filter=_exclude)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def untar_bytes(data: bytes, local_dir: Path) -> None:
    local_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        tar.extractall(local_dir, filter="data")


def replace_tree_cmd(remote_dir: str) -> str:
    """Shell that swaps remote_dir for the tar on stdin, so stale files never linger."""
    d = shlex.quote(remote_dir.rstrip("/"))
    # Each step only after the one before: `set -e` would do nothing here, where the caller
    # tests the exit status (`|| exit N`), and a failed untar would still replace the tree.
    return (
        f"(rm -rf {d}.new && mkdir -p {d}.new && tar -xzf - -C {d}.new && "
        f"rm -rf {d} && mv {d}.new {d})"
    )


def pack_tree_cmd(remote_dir: str) -> str:
    d = shlex.quote(remote_dir.rstrip("/"))
    return f"test -d {d} && tar -czf - -C {d} ."
