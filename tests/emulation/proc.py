"""Small process and namespace helpers of the emulated hosts: running ``ip`` and
other commands, reading /proc, and forking host processes from one long-lived
thread (see ``_Spawner``)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from queue import Queue
from typing import Callable, Iterable


class LabError(RuntimeError):
    pass


def _run(args: list[str], *, input: str | None = None, timeout: float = 20.0,
         check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, input=input, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{shlex.join(args)} failed ({proc.returncode}): "
                       f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _ip_batch(lines: Iterable[str], *, netns: str | None = None,
              force: bool = False, check: bool = True) -> subprocess.CompletedProcess:
    args = ["ip"]
    if netns:
        args += ["-n", netns]
    if force:
        args.append("-force")
    args += ["-batch", "-"]
    return _run(args, input="\n".join(lines) + "\n", check=check)


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2:][:1]
    return state not in (b"Z", b"X")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return int(stat[stat.rfind(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _ns_id(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _controller_mounts() -> list[str]:
    try:
        with open("/proc/self/mountinfo") as fh:
            return [line.split()[4] for line in fh]
    except OSError:
        return []


def _mount_ns_users(ns: str) -> list[int]:
    """PIDs of the processes whose mount namespace is ``ns`` (``mnt:[...]``)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _ns_id(int(entry), "mnt") == ns:
            out.append(int(entry))
    return out


def wait_mount_ns_gone(ns: str | None, what: str, timeout: float = 20.0) -> None:
    """Bounded wait until no process is left in mount namespace ``ns`` (a host's): its
    overlay and binds go with the last one. Only then is the host's layer deleted, so nothing
    writes into it meanwhile (rmtree would leave those files behind). A SIGKILLed process
    still has to be scheduled to exit: on a loaded machine that took over 5 s."""
    if ns is None:
        return
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.01) + 1):
        users = _mount_ns_users(ns)
        if not users or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    if users:
        who = "; ".join(f"{pid} {_state(pid)} {_cmdline(pid)[:80]!r}" for pid in users[:5])
        raise LabError(f"refusing to delete {what}: {len(users)} process(es) still in its "
                       f"mount namespace after {timeout:.0f}s: {who}")


def _state(pid: int) -> str:
    """The one-letter state of ``pid`` (R, S, D, Z...), '?' if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return "?"
    return stat[stat.rfind(b")") + 2:][:1].decode() or "?"


def _safe_rmtree(path: Path) -> None:
    """Remove a directory we created, refusing if anything is mounted in it (in this mount
    namespace: a host's own are checked by ``wait_mount_ns_gone`` first)."""
    if not path.exists():
        return
    real = os.path.realpath(path)
    for mnt in _controller_mounts():
        if mnt == real or mnt.startswith(real + "/"):
            raise LabError(f"refusing to delete {path}: {mnt} is mounted inside")
    shutil.rmtree(path, ignore_errors=True)


def _pdeathsig_prefix() -> list[str]:
    """``setpriv --pdeathsig KILL --`` when available (util-linux >= 2.33)."""
    global _PDEATH
    if _PDEATH is None:
        path = shutil.which("setpriv")
        ok = False
        if path:
            try:
                out = subprocess.run([path, "--help"], capture_output=True,
                                     text=True, timeout=5).stdout
                ok = "--pdeathsig" in out
            except (OSError, subprocess.SubprocessError):
                ok = False
        _PDEATH = [path, "--pdeathsig", "KILL", "--"] if ok else []
    return list(_PDEATH)


_PDEATH: list[str] | None = None


class _Spawner:
    """Starts host processes from one long-lived thread.

    The ``unshare`` processes get PR_SET_PDEATHSIG=SIGKILL (via ``setpriv``),
    which fires when the *thread* that forked them exits.  Requests arrive on
    short-lived moto server threads, so forking is funnelled through this
    daemon thread, which lives as long as the test process: if pytest dies
    hard, every emulated host dies with it.
    """

    def __init__(self) -> None:
        self._queue: Queue = Queue()
        self._thread = threading.Thread(target=self._loop, name="swarm-lab-spawner",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            fn, fut = self._queue.get()
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to caller
                fut.set_exception(exc)

    def call(self, fn: Callable, timeout: float = 30.0):
        fut: Future = Future()
        self._queue.put((fn, fut))
        return fut.result(timeout)


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def _spawn(fn: Callable):
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = _Spawner()
    return _spawner.call(fn)


def python_paths(venv: Path) -> set[Path]:
    """Paths that must stay visible on a host for ``venv`` to work."""
    paths = {Path(os.path.abspath(venv))}
    cfg = venv / "pyvenv.cfg"
    if cfg.exists():
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() in ("home", "executable", "base-executable") and value.strip():
                home = Path(value.strip())
                paths.add(home)
                paths.add(home.parent)
    for exe in ("python", "python3"):
        candidate = venv / "bin" / exe
        if candidate.exists():
            real = Path(os.path.realpath(candidate))
            paths.add(real.parent.parent)
    paths.add(Path(sys.base_prefix))
    paths.add(Path(os.path.realpath(sys.executable)).parent.parent)
    return {Path(os.path.abspath(p)) for p in paths}
