"""`swarm logs`: Locust's or the bootstrap's log from one node or all, printed or followed."""
from __future__ import annotations

import shlex
import sys
import threading

from swarm.errors import UsageError
from swarm.remote import fan_out


def pick(sess, node: str):
    nodes = sess.nodes()
    chosen = nodes if node == "all" else [n for n in nodes if node in (n.name, n.id)]
    if not chosen:
        names = ", ".join(n.name for n in nodes) or "none"
        raise UsageError(f"no node {node!r} in stack {sess.stack.name!r} (nodes: {names}, or all)")
    return chosen


def _prefixer(name: str | None, lock: threading.Lock):
    """A sink that writes whole lines, each prefixed with the node's name when there are many."""
    pending = bytearray()

    def sink(chunk: bytes) -> None:
        pending.extend(chunk)
        *lines, rest = pending.split(b"\n")
        pending[:] = rest
        if lines:
            text = "".join(f"{name + ' | ' if name else ''}{ln.decode(errors='replace')}\n" for ln in lines)
            with lock:
                sys.stdout.write(text)
                sys.stdout.flush()
    return sink


def show(sess, node: str, *, bootstrap: bool = False, follow: bool = False) -> None:
    chosen = pick(sess, node)
    rd = sess.stack.config.bootstrap.remote_dir
    path = shlex.quote(f"{rd}/{'bootstrap.log' if bootstrap else 'locust.log'}")
    many = len(chosen) > 1
    lock = threading.Lock()
    if not follow:
        def read(n):
            r = sess.provider.runner(sess.stack, n)
            try:
                return r.run(f"cat {path} 2>/dev/null || echo '(no log yet)'", timeout=60).stdout
            finally:
                r.close()
        results = fan_out(chosen, read, what="logs", raise_on_error=not many)
        for res in results:
            text = res.value if res.ok else f"(unreachable: {res.error})\n"
            text = text if text.endswith("\n") else text + "\n"
            _prefixer(res.node.name if many else None, lock)(text.encode())
        return
    runners = {n.id: sess.provider.runner(sess.stack, n) for n in chosen}
    cmd = f"touch {path} 2>/dev/null; tail -n 50 -F {path} 2>/dev/null"
    threads = [threading.Thread(target=runners[n.id].stream,
                                args=(cmd, _prefixer(n.name if many else None, lock)), daemon=True)
               for n in chosen]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():       # join in slices so Ctrl-C reaches the main thread
                t.join(0.5)
    finally:
        for r in runners.values():
            r.close()
