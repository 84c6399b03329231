#!/usr/bin/env python3
"""Run a command inside a throw-away "lab" network namespace.

    python tests/run_in_lab.py [--timeout SECONDS] [--no-wheelhouse] -- <command...>

The namespace ``swarmlab-<pid>`` only has ``lo`` (up): no other interface and
no route, so nothing the command does can leave the machine.  Emulated hosts
(tests/emulation) create their bridge and namespaces from inside it.

* exit code of the command is propagated (128+N if killed by signal N);
* the namespace is always deleted, also on SIGINT/SIGTERM/SIGHUP;
* this process is a child subreaper: processes the command leaves behind
  (e.g. emulated hosts of a pytest that was killed) are re-parented to it and
  SIGKILLed by PID when the command ends; network namespaces and directories
  the harness registered in ``$SWARM_LAB_REGISTRY`` are removed by name;
* the command gets ``SWARM_LAB=<namespace name>`` and
  ``SWARM_LAB_REGISTRY=<dir>`` in its environment;
* without root or without ``ip netns`` it runs the command directly and says
  so in one line;
* first, outside the lab (where the package index is reachable), it fills a cache with
  swarm's offline wheelhouses for this machine's system Python (``swarm wheelhouse``, and
  ``--otel``, as a bare emulated host finds Python) and passes its dir as ``SWARM_TEST_WHEELHOUSE_CACHE``; when
  that fails it says why in one line and the tests needing it skip (fail under CI);
  ``--no-wheelhouse`` skips that (a pytest-xdist worker's lab: the controller's run made it);
  it downloads too the wheels of swarm's own dependencies (``SWARM_TEST_INSTALL_WHEELS``), with
  which tests/test_install.py installs swarm's wheel in the lab as a user would;

`make test` runs pytest inside one lab with two xdist workers, each started through this
script again (``--tx popen//python=...``), so each has a namespace, bridge and subnet of its
own, as if it were alone on the machine.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
SI_KERNEL = 0x80
GRACE = 20.0  # seconds between forwarding a signal and SIGKILL
DEFAULT_TIMEOUT = float(os.environ.get("SWARM_LAB_TIMEOUT", "3600"))
SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
WAKEUPS = SIGNALS | {signal.SIGCHLD}  # SIGCHLD: reap re-parented orphans at once
REPO = Path(__file__).resolve().parent.parent
# What a bare emulated host's sessions get (tests/emulation/host.py SYSTEM_PATH).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def log(msg: str) -> None:
    print(f"run_in_lab: {msg}", file=sys.stderr, flush=True)


def usage() -> int:
    print(__doc__.strip().splitlines()[2], file=sys.stderr)
    return 2


no_wheelhouse = [False]  # set by --no-wheelhouse (a test worker: its controller made it)


def parse(argv: list[str]) -> tuple[float, list[str]] | None:
    if "--" in argv:
        i = argv.index("--")
        opts, cmd = argv[:i], argv[i + 1:]
    else:
        opts, cmd = [], argv
    timeout = DEFAULT_TIMEOUT
    it = iter(opts)
    for opt in it:
        if opt == "--timeout":
            try:
                timeout = float(next(it))
            except (StopIteration, ValueError):
                return None
        elif opt == "--no-wheelhouse":
            no_wheelhouse[0] = True
        elif opt.startswith("--timeout="):
            try:
                timeout = float(opt.split("=", 1)[1])
            except ValueError:
                return None
        else:
            return None
    if not cmd:
        return None
    return timeout, cmd


def lab_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    if not shutil.which("ip"):
        return "`ip` (iproute2) not found"
    try:
        proc = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`ip netns` unavailable ({exc})"
    if proc.returncode != 0:
        return f"`ip netns` unavailable ({proc.stderr.decode(errors='replace').strip()})"
    return None


def prepare_wheelhouse() -> dict[str, str]:
    """The offline wheelhouse the tests install bare hosts from, made (or found cached) with
    swarm's own code before the command enters a namespace with no route out."""
    cache = os.environ.get("SWARM_TEST_WHEELHOUSE_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "swarm-tests")
    env = dict(os.environ, SWARM_CACHE_DIR=cache, PATH=SYSTEM_PATH, PYTHONPATH=str(REPO))
    made = False
    # locust's, then locust[otel]'s ([locust] otel = true): the tests needing one skip without it
    for extra in ([], ["--otel"]):
        what = " ".join(["swarm wheelhouse", *extra])
        try:
            proc = subprocess.run([sys.executable, "-m", "swarm", "wheelhouse", *extra], env=env,
                                  cwd=REPO, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.SubprocessError) as exc:
            log(f"no offline wheelhouse for the tests ({what}): {exc}")
            continue
        if proc.returncode != 0:
            why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            log(f"no offline wheelhouse for the tests ({what}): {why}")
            continue
        made = True
    found = {"SWARM_TEST_WHEELHOUSE_CACHE": cache} if made else {}
    install = prepare_install_wheels(Path(cache))
    return {**found, "SWARM_TEST_INSTALL_WHEELS": str(install)} if install else found


def prepare_install_wheels(cache: Path) -> Path | None:
    """The wheels of swarm's own dependencies (and pip, for pipx's shared venv), so that
    tests/test_install.py installs the built wheel into a clean venv with `pip --no-index`
    in the lab, as a user's machine would from the index."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    # The versions of this venv: the emulated hosts run its Locust, and a node whose Locust is
    # not the controller's would be installed from the network, which the lab does not have.
    try:
        frozen = subprocess.run([sys.executable, "-m", "pip", "list", "--format=freeze",
                                 "--exclude-editable"], capture_output=True, text=True,
                                timeout=120).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log(f"no wheels to install swarm's wheel with in the lab: {exc}")
        return None
    # (pip itself: the newest, which pipx's shared venv asks for)
    pins = "\n".join(sorted(line for line in frozen.splitlines()
                            if "==" in line and not line.startswith("pip==")))
    key = hashlib.sha256("\n".join([sys.version, *deps, pins]).encode()).hexdigest()[:12]
    out = cache / f"install-wheels-{key}"
    if (out / "complete").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "constraints.txt").write_text(pins + "\n")
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary",
                               ":all:", "-d", str(out), "-c", str(out / "constraints.txt"),
                               "pip", *deps], capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        log(f"no wheels to install swarm's wheel with in the lab: {exc}")
        return None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        log(f"no wheels to install swarm's wheel with in the lab: {why}")
        return None
    (out / "complete").write_text("")
    return out


def run_plain(cmd: list[str], env: dict[str, str]) -> int:
    try:
        proc = subprocess.Popen(cmd, env=env)
    except OSError as exc:
        log(f"cannot run {cmd[0]}: {exc}")
        return 127
    while True:
        try:
            rc = proc.wait()
            break
        except KeyboardInterrupt:
            continue  # the child got the SIGINT from the terminal too
    return 128 - rc if rc < 0 else rc


def set_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def my_children(exclude: int | None = None) -> list[tuple[int, str]]:
    """(pid, state) of this process' children, read from /proc."""
    me = os.getpid()
    out = []
    try:
        with open(f"/proc/{me}/task/{me}/children") as fh:
            pids = [int(p) for p in fh.read().split()]
    except OSError:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                pids.append(int(entry))
    for pid in pids:
        if pid == exclude:
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        rest = stat[stat.rfind(b")") + 2:].split()
        if len(rest) > 1 and int(rest[1]) == me:
            out.append((pid, rest[0].decode()))
    return out


def reap_zombies(exclude: int | None) -> None:
    for pid, state in my_children(exclude):
        if state == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def describe(pid: int) -> str:
    """`pid (command line)`, for saying what was left behind."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        cmd = " ".join(a.decode(errors="replace") for a in argv if a)[:160]
    except OSError:
        cmd = ""
    return f"{pid} ({cmd or 'gone'})"


def kill_orphans(timeout: float = 10.0) -> int:
    """SIGKILL every process re-parented to us (by PID), bounded; each is named in the log."""
    killed = 0
    # Processes already dying (e.g. hosts killed through PDEATHSIG when the
    # command died) get half a second to go before we count them.
    for _ in range(10):
        reap_zombies(exclude=None)
        if not my_children():
            break
        time.sleep(0.05)
    deadline = time.monotonic() + timeout
    for _ in range(200):
        kids = my_children()
        if not kids:
            break
        for pid, state in kids:
            if state != "Z":
                try:
                    what = describe(pid)
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                    log(f"killing leftover process {what}")
                except ProcessLookupError:
                    pass
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        if time.monotonic() > deadline:
            log(f"processes left after {timeout}s: {[p for p, _ in my_children()]}")
            break
        time.sleep(0.05)
    return killed


def sweep_registry(registry: Path) -> None:
    """Remove what the harness registered and did not clean up itself."""
    netns_dir = registry / "netns"
    if netns_dir.is_dir():
        for entry in sorted(netns_dir.iterdir()):
            name = entry.name
            if Path("/run/netns", name).exists():
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)
                log(f"removed leftover namespace {name}")
            entry.unlink(missing_ok=True)
    dirs_dir = registry / "dirs"
    if dirs_dir.is_dir():
        for entry in sorted(dirs_dir.iterdir()):
            path = Path(entry.read_text().strip())
            if path.name.startswith("swarmlab-") and path.is_dir() and not has_mounts(path):
                shutil.rmtree(path, ignore_errors=True)
                log(f"removed leftover directory {path}")
            entry.unlink(missing_ok=True)
    shutil.rmtree(registry, ignore_errors=True)


def has_mounts(path: Path) -> bool:
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                mnt = line.split()[4]
                if mnt == real or mnt.startswith(real + "/"):
                    return True
    except OSError:
        return True
    return False


def supervise(child: subprocess.Popen, timeout: float) -> int:
    """Wait for the child, handling signals synchronously (they are blocked
    in this process and collected with sigtimedwait)."""
    started = time.monotonic()
    kill_at: float | None = None
    signals_seen = 0
    last_reap = started
    while True:
        rc = child.poll()
        if rc is not None:
            return rc
        info = signal.sigtimedwait(WAKEUPS, 0.5)
        now = time.monotonic()
        if info is not None and info.si_signo == signal.SIGCHLD:
            reap_zombies(exclude=child.pid)
            last_reap = now
        elif info is not None:
            signals_seen += 1
            from_tty = info.si_signo == signal.SIGINT and info.si_code == SI_KERNEL
            if signals_seen > 1:
                log("second signal: killing the command")
                child.kill()
            elif not from_tty:  # a terminal SIGINT already reached the child
                child.send_signal(signal.SIGTERM if info.si_signo == signal.SIGHUP
                                  else info.si_signo)
            kill_at = kill_at or now + GRACE
        if timeout > 0 and now - started > timeout and kill_at is None:
            log(f"command still running after {timeout:.0f}s: terminating it")
            child.send_signal(signal.SIGTERM)
            kill_at = now + GRACE
        if kill_at is not None and now > kill_at and child.poll() is None:
            log("command did not stop in time: SIGKILL")
            child.kill()
            kill_at = now + 3600
        if now - last_reap > 2.0:
            reap_zombies(exclude=child.pid)
            last_reap = now


def main(argv: list[str]) -> int:
    parsed = parse(argv)
    if parsed is None:
        return usage()
    timeout, cmd = parsed
    base_env = {**os.environ, **({} if no_wheelhouse[0] else prepare_wheelhouse())}

    reason = lab_unavailable_reason()
    if reason is not None:
        log(f"{reason}: running the command directly, WITHOUT a lab network namespace")
        return run_plain(cmd, base_env)

    name = f"swarmlab-{os.getpid()}"
    if Path("/run/netns", name).exists():
        log(f"namespace {name} already exists (stale from an earlier run?); "
            f"remove it with `ip netns del {name}`")
        return 2

    # Block the signals we handle before anything can go wrong; the child
    # gets them unblocked again (preexec_fn: we are single-threaded here).
    signal.pthread_sigmask(signal.SIG_BLOCK, WAKEUPS)
    created = False
    registry: Path | None = None
    rc = 1
    try:
        proc = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True,
                              timeout=20)
        if proc.returncode != 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, WAKEUPS)
            log(f"cannot create a network namespace ({proc.stderr.strip()}): running the "
                f"command directly, WITHOUT a lab network namespace")
            return run_plain(cmd, base_env)
        created = True
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True,
                       capture_output=True, timeout=20)
        registry = Path(tempfile.mkdtemp(prefix=f"{name}-registry-"))
        for sub in ("netns", "dirs"):
            (registry / sub).mkdir()
        set_subreaper()
        env = dict(base_env, SWARM_LAB=name, SWARM_LAB_REGISTRY=str(registry))
        try:
            child = subprocess.Popen(
                ["ip", "netns", "exec", name] + cmd, env=env,
                preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, WAKEUPS))
        except OSError as exc:
            log(f"cannot run {cmd[0]}: {exc}")
            return 127
        rc = supervise(child, timeout)
        rc = 128 - rc if rc < 0 else rc
    finally:
        killed = kill_orphans()
        if killed:
            log(f"killed {killed} leftover process(es)")
        if registry is not None:
            sweep_registry(registry)
        if created:
            proc = subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True,
                                  timeout=20)
            if proc.returncode != 0:
                log(f"could not delete namespace {name}: {proc.stderr.strip()}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
