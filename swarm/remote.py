"""Run commands and move files on nodes: one Runner interface, local and SSH implementations.

Remote paths are relative to the node's home (SSH) or the node's own directory (local), so
core can use the same strings (`swarm/locustfiles`, `swarm/locust.pid`) on every provider.
"""
from __future__ import annotations

import io
import os
import shlex
import signal
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from swarm.errors import RemoteError, SwarmError
from swarm.models import HostResult, Node


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


class Runner(Protocol):
    label: str

    def run(self, cmd: str, *, timeout: float, env: dict[str, str] | None = None,
            stdin: bytes | None = None, check: bool = True) -> Result: ...

    def run_bytes(self, cmd: str, *, timeout: float) -> bytes: ...

    def put_tree(self, local_dir: Path, remote_dir: str, *, timeout: float = 120) -> None: ...

    def get_tree(self, remote_dir: str, local_dir: Path, *, timeout: float = 120) -> None: ...

    def wait_ready(self, timeout: float) -> None: ...

    def stream(self, cmd: str, sink: Callable[[bytes], None]) -> int: ...

    def run_after_exit(self, cmd: str) -> None: ...

    def close(self) -> None: ...


# run_after_exit: the node's shell reads its input until this process has exited (the OS then
# closes our end), then runs the command, with no output to write to a channel that is gone.
DEFERRED = "exec >/dev/null 2>&1; cat; "
# Our ends of those inputs, as bare fds: nothing closes them before the OS does at our exit.
HELD_UNTIL_EXIT: list[int] = []


# ---- helpers shared by every runner: one tar stream each way ----

def _exclude(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    name = os.path.basename(info.name)
    if name in ("__pycache__", ".git", ".venv") or name.endswith(".pyc"):
        return None
    return info


def tar_bytes(local_dir: Path) -> bytes:
    """The contents of local_dir as one gzip'd tar (paths relative to it)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for child in sorted(Path(local_dir).iterdir()):
            tar.add(child, arcname=child.name, filter=_exclude)
    return buf.getvalue()


def untar_bytes(data: bytes, local_dir: Path) -> None:
    local_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        tar.extractall(local_dir, filter="data")


def replace_tree_cmd(remote_dir: str) -> str:
    """Shell that swaps remote_dir for the tar on stdin, so stale files never linger."""
    d = shlex.quote(remote_dir.rstrip("/"))
    # A subshell, so `set -e` does not leak into commands chained after it.
    return (f"(set -e; rm -rf {d}.new; mkdir -p {d}.new; tar -xzf - -C {d}.new; "
            f"rm -rf {d}; mv {d}.new {d})")


def pack_tree_cmd(remote_dir: str) -> str:
    d = shlex.quote(remote_dir.rstrip("/"))
    return f"test -d {d} && tar -czf - -C {d} ."


# ---- local: a node is a directory on this machine ----

class LocalRunner:
    """Runs `sh -c` in the node's directory, in a session of its own so that Ctrl-C in the
    user's terminal does not reach Locust (as with a remote host)."""

    def __init__(self, root: Path, label: str):
        self.root = Path(root)
        self.label = label
        self._streams: list[subprocess.Popen] = []

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        env = dict(os.environ)
        # The controller's own Locust: same version, no bootstrap needed.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.update(extra or {})
        return env

    def _exec(self, cmd: str, timeout: float, env, stdin: bytes | None) -> tuple[int, bytes, bytes]:
        self.root.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(["sh", "-c", cmd], cwd=self.root, env=self._env(env),
                                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RemoteError(f"{self.label}: command timed out after {timeout:.0f}s: {cmd[:80]}")
        return proc.returncode, out, err

    def run(self, cmd, *, timeout, env=None, stdin=None, check=True) -> Result:
        code, out, err = self._exec(cmd, timeout, env, stdin)
        res = Result(code, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and not res.ok:
            raise RemoteError(f"{self.label}: command failed (exit {code}): {res.tail(3) or cmd[:80]}")
        return res

    def run_bytes(self, cmd, *, timeout) -> bytes:
        code, out, err = self._exec(cmd, timeout, None, None)
        if code != 0:
            raise RemoteError(f"{self.label}: command failed (exit {code}): "
                              f"{err.decode(errors='replace').strip()[-200:] or cmd[:80]}")
        return out

    def put_tree(self, local_dir, remote_dir, *, timeout=120) -> None:
        self.run(replace_tree_cmd(remote_dir), timeout=timeout, stdin=tar_bytes(local_dir))

    def get_tree(self, remote_dir, local_dir, *, timeout=120) -> None:
        untar_bytes(self.run_bytes(pack_tree_cmd(remote_dir), timeout=timeout), Path(local_dir))

    def wait_ready(self, timeout: float) -> None:
        pass

    def stream(self, cmd: str, sink: Callable[[bytes], None]) -> int:
        """Run cmd, handing output to sink as it arrives (for `logs -f`); until it ends."""
        proc = subprocess.Popen(["sh", "-c", cmd], cwd=self.root, env=self._env(None),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self._streams.append(proc)
        try:
            for chunk in iter(lambda: proc.stdout.read1(65536), b""):
                sink(chunk)
            return proc.wait()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def run_after_exit(self, cmd: str) -> None:
        """Start cmd in the node's dir once this process has exited; never wait for it."""
        self.root.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(["sh", "-c", DEFERRED + cmd], cwd=self.root, env=self._env(None),
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        HELD_UNTIL_EXIT.append(os.dup(proc.stdin.fileno()))
        proc.stdin.close()

    def close(self) -> None:
        for proc in self._streams:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        self._streams.clear()


# ---- fan-out: every host in parallel, every result reported ----

def fan_out(nodes: Sequence[Node], fn: Callable[[Node], Any], *, what: str,
            raise_on_error: bool = True, max_workers: int = 64) -> list[HostResult]:
    """Run fn(node) for every node at once. Returns one HostResult per node, in order;
    raises RemoteError carrying all of them when any failed (unless raise_on_error=False)."""
    if not nodes:
        return []

    def one(node: Node) -> HostResult:
        try:
            return HostResult(node, True, value=fn(node))
        except SwarmError as e:
            return HostResult(node, False, error=str(e))
        except Exception as e:  # a library error not translated yet: keep the host's name on it
            return HostResult(node, False, error=f"{type(e).__name__}: {e}")

    pool = ThreadPoolExecutor(max_workers=min(max_workers, len(nodes)))
    try:
        results = list(pool.map(one, nodes))
    except BaseException:
        # Ctrl-C: never wait for hosts that may take minutes (a bootstrap); cli.main ends the
        # process without joining these threads.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    failed = [r for r in results if not r.ok]
    if failed and raise_on_error:
        detail = "; ".join(f"{r.node.name}: {r.error}" for r in failed[:5])
        more = f" (+{len(failed) - 5} more)" if len(failed) > 5 else ""
        raise RemoteError(f"{what} failed on {len(failed)} of {len(results)} hosts: {detail}{more}",
                          results)
    return results


def wait_until(check: Callable[[], Any], *, timeout: float, interval: float = 0.2,
               what: str = "condition") -> Any:
    """Poll check() until it returns something truthy; bounded in time and count."""
    deadline = time.monotonic() + timeout
    attempts = max(1, int(timeout / interval) + 1)
    for _ in range(attempts):
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    raise RemoteError(f"timed out after {timeout:.0f}s waiting for {what}")


def __getattr__(name: str):
    # SSHRunner lives in ssh.py (paramiko is heavy to import); keep `remote.SSHRunner` working.
    if name == "SSHRunner":
        from swarm.ssh import SSHRunner
        return SSHRunner
    raise AttributeError(name)
