"""swarm's warm Locust: runs ON A HOST, not in the controller.

Importing Locust (gevent, zmq, flask, requests...) costs about 0.5 CPU-s, more than everything
else in starting a worker. This process imports it once, after `swarm up`, then waits on a FIFO;
each line it reads is a Locust argv, which it runs in a forked child, as Locust's own
--processes does. `swarm run` then starts Locust on every host in milliseconds.

The child is what a cold start would be: its own session (pid = pgid, in locust.pid, which
killall signals), stdout/stderr in locust.log, its exit code in locust.exit, cwd the remote dir.
The locustfile is imported by the child, after the fork, so every run sees the current files.

Standard library and Locust only: this file is copied to the host and run with the Python of
the host's locust (`python swarm-warm.py LOCUST_BIN`), in the remote dir, by swarm.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

FIFO, PID, READY = "warm.fifo", "warm.pid", "warm.ready"
# "<request id> <pid>" for each start that sent an id (shell.start_cmd waits for it there)
REPLY = "warm.reply"
ENV_FILE = "locust.env"  # shell.ENV_FILE: `export NAME='value'` lines, read before locust.pid


def _load_env() -> None:
    """[locust] env of this run, as a cold start's shell would source it."""
    import shlex

    try:
        with open(ENV_FILE) as f:
            words = shlex.split(f.read())
    except FileNotFoundError:
        return
    for word in words:
        name, eq, value = word.partition("=")
        if eq:  # skip the `export` words
            os.environ[name] = value


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)  # readers poll for a non-empty file: never show them half of it


def _name(title: str) -> None:
    try:  # what `ps -e`, `pgrep` and `top` show; the command line stays the zygote's
        with open("/proc/self/comm", "w") as f:
            f.write(title[:15])
    except OSError:
        pass


def _reply(fd: int | None, request_id: str, pid: int) -> None:
    """Tell the start command waiting for request_id that its Locust runs. Non-blocking: a
    reply nobody reads (its start was cut off) must never hold up a Locust."""
    if fd is None:
        return
    try:
        if request_id:
            os.write(fd, f"{request_id} {pid}\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def _parse_request(line: bytes) -> tuple[str, list[str]] | None:
    """`<id> <json argv>` (a start waiting on warm.reply) or `<json argv>` -> (id, argv)."""
    head, _, rest = line.partition(b" ")
    request_id = ""
    if head.isdigit() and rest.lstrip().startswith(b"["):
        request_id, line = head.decode(), rest
    try:
        return request_id, [str(a) for a in json.loads(line)]
    except ValueError:
        return None


def _run_locust(locust_bin: str, argv: list[str], reply: int | None, request_id: str) -> None:
    """In the grandchild: become the Locust process, never return."""
    import atexit

    import locust.main

    code = 1
    try:
        os.setsid()
        log = os.open("locust.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        _name("locust")
        os.environ["SWARM_WARM_FORK"] = "1"  # final_stats.WARM_FORK: this code ends the process
        _load_env()  # before locust.pid: once that is there, the start command removes it
        _write("locust.pid", f"{os.getpid()}\n")
        _reply(reply, request_id, os.getpid())
        reply = None
        sys.argv = [locust_bin, *argv]
        sys.path[0] = os.path.dirname(os.path.abspath(locust_bin))  # as if run as a script
        try:
            locust.main.main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        atexit._run_exitfuncs()  # logging's flush, Locust's own handlers
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            _write("locust.exit", f"{code}\n")
        finally:
            os._exit(code)


def main() -> None:
    locust_bin = sys.argv[1]
    # O_RDWR: a FIFO opened read-write never sees EOF, and a writer never blocks while we live.
    # Opened before the import, so a `swarm run` arriving meanwhile waits in the pipe, not in
    # a second import.
    fifo = os.open(FIFO, os.O_RDWR)
    try:  # held open, so a start waiting there blocks until its reply (never sees EOF)
        reply: int | None = os.open(REPLY, os.O_RDWR | os.O_NONBLOCK)
    except OSError:
        reply = None
    _write(PID, f"{os.getpid()}\n")
    _name("swarm-warm")
    import gc

    import gevent
    import locust.main  # noqa: F401  (the point of this process; patches the stdlib for gevent)

    try:  # what every child imported on its first connect: 4 of its 20 ms of CPU
        import gevent.resolver.thread  # noqa: F401
        import gevent.threadpool  # noqa: F401
    except ImportError:  # another gevent: the child imports its own
        pass

    gc.collect()
    if hasattr(gc, "freeze"):
        gc.freeze()  # as Locust's --processes: fewer copy-on-write pages in the children
    _write(READY, f"{os.getpid()}\n")
    buf = b""
    while True:
        chunk = os.read(fifo, 65536)
        if not chunk:  # cannot happen on a FIFO we also hold for writing; never spin
            time.sleep(0.1)
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            request = _parse_request(line)
            if request is None:
                continue
            child = gevent.fork()
            if child == 0:
                os.close(fifo)
                # A second fork: the Locust process is nobody's child here, so it never lingers
                # as a zombie of this one (init reaps it, as it does a cold start's shell).
                if gevent.fork() == 0:
                    _run_locust(locust_bin, request[1], reply, request[0])
                os._exit(0)
            os.waitpid(child, 0)


if __name__ == "__main__":
    main()
